"""``<home>/analysts.yaml``: the data analysts of a home and their roles.

```yaml
analysts:
  alice:                      # a user name on this machine (the owner of her files)
    roles: [da, aod]
    emails: [alice@example.org]   # her git author emails (GitOps mode)
  bob:
    roles: [operator]
    name: Bob Builder         # informational
```

``docket analysts add|remove`` rewrites this file (comments are not kept).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints, model_validator

from schemas.metadata import Strict

__all__ = ["USER_PATTERN", "ROLE_PATTERN", "UserName", "Role", "Analyst", "AnalystsFile"]

# POSIX-portable user names (useradd's own rule, plus upper case that some sites use),
# or a bare uid for files whose owner has no name.
USER_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$"
ROLE_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"
EMAIL_PATTERN = r"^[^\s<>@]+@[^\s<>@]+$"

UserName = Annotated[str, StringConstraints(pattern=USER_PATTERN)]
Role = Annotated[str, StringConstraints(pattern=ROLE_PATTERN)]
Email = Annotated[str, StringConstraints(pattern=EMAIL_PATTERN, max_length=254)]


class Analyst(Strict):
    roles: list[Role] = Field(
        min_length=1,
        description="What this analyst may decide: a state machine transition marked "
                    "@<role> needs it (conventional roles: da, aod, operator; queue changes "
                    "need operator).")
    emails: list[Email] = Field(
        default_factory=list,
        description="Git author emails that count as this user when documents come from a "
                    "git repository (docket tick/watch --git).")
    name: str | None = Field(default=None, max_length=200,
                             description="Full name, for people reading the list.")


class AnalystsFile(Strict):
    analysts: dict[UserName, Analyst] = Field(
        default_factory=dict, description="User name -> roles. A user not listed has no role.")

    @model_validator(mode="after")
    def _one_user_per_email(self) -> AnalystsFile:
        owner: dict[str, str] = {}
        for user, analyst in self.analysts.items():
            for email in analyst.emails:
                key = email.lower()
                if key in owner and owner[key] != user:
                    raise ValueError(f"email {email!r} is listed for both {owner[key]!r} and "
                                     f"{user!r}; a git author must map to one user")
                owner[key] = user
        return self
