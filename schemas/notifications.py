"""``<home>/notifications.yaml``: who hears about which events, and how.

```yaml
targets:
  ops-hook:
    webhook: {url: "https://ops.example.org/docket", secret_env: DOCKET_HOOK_SECRET}
  qa-mail:
    email: {requester: true, roles: [da]}
  pager:
    command: {argv: [/usr/local/bin/page-ops]}
rules:
  - events: [awaiting, failed]
    capabilities: [vlass-*]
    notify: [qa-mail]
  - events: [held]
    notify: [ops-hook, pager]
smtp: {host: localhost, port: 25, sender: docket@example.org}
```
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from schemas.metadata import Strict

__all__ = ["EVENT_KINDS", "Webhook", "Email", "Command", "Target", "Rule", "Smtp", "Retry",
           "NotificationsFile"]

# what a rule may listen for; docket.notify maps event-log rows onto these
EVENT_KINDS = {
    "state": "any change of an execution's state",
    "awaiting": "an execution entered a state named awaiting-* (a person must decide)",
    "complete": "an execution reached complete",
    "failed": "an execution reached failed",
    "cancelled": "an execution reached cancelled",
    "held": "a node's job was held by the engine",
    "notify": "a capability's state machine ran its notify action",
}

Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")]
EventKind = Literal["state", "awaiting", "complete", "failed", "cancelled", "held", "notify"]


class Webhook(Strict):
    url: Annotated[str, StringConstraints(pattern=r"^https?://[^\s]+$")] = Field(
        description="Where the JSON payload is POSTed (http or https).")
    secret_env: str | None = Field(
        default=None, description="Environment variable (of the watcher) holding the HMAC "
                                  "key; the body is signed in X-Docket-Signature-256.")
    secret_file: str | None = Field(
        default=None, description="A file holding the HMAC key (relative to the home).")
    timeout_s: float = Field(default=10.0, gt=0, le=300,
                             description="Give up on one attempt after this long.")
    headers: dict[str, str] = Field(default_factory=dict,
                                    description="Extra HTTP headers sent with each POST.")


class Email(Strict):
    requester: bool = Field(default=False, description="Mail the analyst who submitted the "
                                                       "version (their first email in "
                                                       "analysts.yaml).")
    roles: list[str] = Field(default_factory=list,
                             description="Mail every analyst with one of these roles.")
    addresses: list[Annotated[str, StringConstraints(pattern=r"^[^\s<>@]+@[^\s<>@]+$")]] = \
        Field(default_factory=list, description="Fixed addresses, mailed every time.")


class Command(Strict):
    argv: list[str] = Field(min_length=1, description="The program and its arguments (no "
                                                      "shell); the payload is on stdin.")
    timeout_s: float = Field(default=30.0, gt=0, le=3600,
                             description="Kill the command after this long.")


class Target(Strict):
    """Exactly one of webhook, email, command."""

    webhook: Webhook | None = None
    email: Email | None = None
    command: Command | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Target:
        given = [k for k in ("webhook", "email", "command") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("a target is exactly one of webhook, email, command; got "
                             + (", ".join(given) or "none"))
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("webhook", "email", "command") if getattr(self, k) is not None)


class Rule(Strict):
    events: list[EventKind] = Field(min_length=1, description="Which events: "
                                    + "; ".join(f"{k}: {v}" for k, v in EVENT_KINDS.items()))
    capabilities: list[str] = Field(default_factory=list,
                                    description="Only these capabilities (shell patterns); "
                                                "empty means all.")
    labels: dict[str, str] = Field(default_factory=dict,
                                   description="Only requests whose metadata.labels have "
                                               "all of these values.")
    states: list[str] = Field(default_factory=list,
                              description="Only changes into these states; empty means any.")
    notify: list[Name] = Field(min_length=1, description="Target names.")


class Smtp(Strict):
    host: str = "localhost"
    port: int = Field(default=25, ge=1, le=65535)
    sender: str = Field(default="docket@localhost", description="The From: address.")
    starttls: bool = False
    username: str | None = None
    password_env: str | None = Field(default=None, description="Environment variable "
                                                               "holding the SMTP password.")
    timeout_s: float = Field(default=10.0, gt=0, le=300)


class Retry(Strict):
    max_attempts: int = Field(default=8, ge=1, le=100,
                              description="After this many failed tries a notification is "
                                          "dead (shown by 'docket notifications list').")
    backoff_s: float = Field(default=30.0, gt=0, description="Wait after the first failure; "
                                                              "doubled after each one.")
    max_backoff_s: float = Field(default=3600.0, gt=0, description="The longest wait.")


class NotificationsFile(Strict):
    targets: dict[Name, Target] = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list)
    smtp: Smtp = Field(default_factory=Smtp)
    retry: Retry = Field(default_factory=Retry)
    report_url: str | None = Field(default=None, description="Base URL of 'docket report' "
                                                             "output, for links in payloads.")

    @model_validator(mode="after")
    def _targets_exist(self) -> NotificationsFile:
        for i, rule in enumerate(self.rules):
            for name in rule.notify:
                if name not in self.targets:
                    raise ValueError(f"rules[{i}] notifies {name!r}, which is not a target; "
                                     f"targets: {', '.join(sorted(self.targets)) or 'none'}")
        for name, target in self.targets.items():
            hook = target.webhook
            if hook and not (hook.secret_env or hook.secret_file):
                raise ValueError(f"webhook {name!r} needs secret_env or secret_file: the "
                                 "receiver verifies the signature")
        return self
