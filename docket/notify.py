"""Notifications: an outbox filled with the state change, and a sender that empties it.

``Planner`` listens to every event ``Store.record`` writes. When an event matches a rule
of ``<home>/notifications.yaml`` it inserts one outbox row per target, in the same
transaction as the event: the notification exists exactly when the state change does.

``Sender`` delivers due rows (webhook, email, command) outside any transaction, with a
timeout per attempt, exponential backoff between attempts and a ``dead`` state after
``retry.max_attempts``. Every row has an idempotency key that travels with each attempt
(``Idempotency-Key`` header, ``Message-ID``, ``$DOCKET_NOTIFICATION_ID``): delivery is
at least once, and a receiver drops repeats by the key. The watcher runs the sender in
its own thread, so a dead or hung endpoint never holds up intake or the engines.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import hmac
import json
import logging
import os
import queue
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from docket.errors import Invalid, Locked
from docket.locks import held
from docket.records import Execution
from docket.store import Store, now

__all__ = ["NOTIFICATIONS_FILE", "SIGNATURE_HEADER", "load_notifications", "Planner",
           "Sender", "DeliveryFailed", "run_sender", "sign", "list_notifications", "sender_lock",
           "retry_dead"]

log = logging.getLogger("docket.notify")

NOTIFICATIONS_FILE = "notifications.yaml"
SIGNATURE_HEADER = "X-Docket-Signature-256"
_FINAL_KINDS = ("complete", "failed", "cancelled")
# the most specific kind names a notification when several rules' kinds match
_KIND_ORDER = ("complete", "failed", "cancelled", "awaiting", "held", "notify", "state")


class DeliveryFailed(Exception):
    """One attempt failed. ``permanent``: no later attempt can succeed (dead at once)."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


def load_notifications(home_root: Path) -> Any:
    """``<home>/notifications.yaml`` as a ``NotificationsFile``; None when there is none."""
    path = home_root / NOTIFICATIONS_FILE
    if not path.is_file():
        return None
    from docket.documents import load_model_file
    from schemas.notifications import NotificationsFile

    return load_model_file(path, NotificationsFile, Invalid,
                           "fix the notifications file (see docs/observability.md)")


def sign(secret: bytes, body: bytes) -> str:
    """The signature header's value: ``sha256=`` and the hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def _kinds(event: dict[str, Any]) -> set[str]:
    t, d = event["type"], event["data"]
    if t in ("execution.transition", "execution.mediated"):
        kinds = {"state"}
        to = str(d.get("to"))
        if to in _FINAL_KINDS:
            kinds.add(to)
        if to.startswith("awaiting"):
            kinds.add("awaiting")
        return kinds
    if t == "node.held":
        return {"held"}
    if t == "notification":
        return {"notify"}
    return set()


class _RulesFile:
    """The home's notifications.yaml, read again only when it changes; a broken file keeps
    the rules read before (logged), so a typo stops no work."""

    def __init__(self, home_root: Path) -> None:
        self.home_root = home_root
        self.config: Any = None
        self._stamp: tuple[int, int, int] | None = None

    def current(self, *, forget_when_gone: bool) -> Any:
        """The rules now. A removed file means no rules when ``forget_when_gone`` (the
        planner: plan nothing more), else the last ones (the sender: deliver what was
        planned with them)."""
        try:
            st = (self.home_root / NOTIFICATIONS_FILE).stat()
        except FileNotFoundError:
            if forget_when_gone:
                self.config, self._stamp = None, None
            return self.config
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self.config = load_notifications(self.home_root)
            except Invalid as exc:
                log.error("%s; keeping the notification rules read before", exc)
        return self.config


class Planner:
    """Turns matching events into outbox rows; attach with ``Planner.attach(home, store)``."""

    def __init__(self, home_root: Path, templates_dir: Path) -> None:
        self.home_root = home_root
        self.templates_dir = templates_dir
        self._rules = _RulesFile(home_root)
        self._read_in: int | None = None  # the store transaction the rules were looked at in
        self._stages: dict[str, list[Any]] = {}
        self._labels: dict[tuple[str, int], dict[str, str]] = {}

    @classmethod
    def attach(cls, home: Any, store: Store) -> Planner:
        planner = cls(home.root, home.templates)
        store.listeners.append(planner)
        return planner

    def config(self, transaction: int | None = None) -> Any:
        """The rules, re-read when the file changes; a broken file keeps the last good one.

        Looked at once per store ``transaction`` when one is given: an intake batch of
        hundreds of documents plans notifications for three events each, and a change to
        the file is taken from the next transaction on."""
        if transaction is not None and transaction == self._read_in:
            return self._rules.config
        self._read_in = transaction
        return self._rules.current(forget_when_gone=True)

    def __call__(self, store: Store, event: dict[str, Any]) -> None:
        kinds = _kinds(event)
        if not kinds:
            return
        config = self.config(store.transactions)
        if config is None or not config.rules:
            return
        try:
            self._plan(store, event, kinds, config)
        except sqlite3.Error:
            raise  # the database itself is in trouble: the event must not commit either
        except Exception:  # a bug here must not refuse the state change
            log.exception("could not plan notifications for event %s", event.get("id"))

    def _plan(self, store: Store, event: dict[str, Any], kinds: set[str], config: Any) -> None:
        execution = (store.execution(event["execution"])
                     if event["execution"] is not None else None)
        if execution is None:
            return
        d = event["data"]
        capability = execution.capability
        state = str(d.get("to") or execution.state)
        labels = self._labels_of(store, execution.request, execution.version)
        targets: dict[str, set[str]] = {}
        for rule in config.rules:
            matched = kinds & set(rule.events)
            if not matched:
                continue
            if rule.capabilities and not any(fnmatch.fnmatchcase(capability, p)
                                             for p in rule.capabilities):
                continue
            if any(labels.get(k) != v for k, v in rule.labels.items()):
                continue
            if rule.states and state not in rule.states:
                continue
            for name in rule.notify:
                targets.setdefault(name, set()).update(matched)
        if not targets:
            return
        instance = store.instance_name()
        version = store.version(execution.request, execution.version)
        node = d.get("node")
        payload = {
            "event_id": event["id"], "event_type": event["type"], "time": event["time"],
            "request": execution.request, "version": execution.version,
            "execution": execution.id, "capability": capability, "state": state,
            "from": d.get("from"),
            "stage": (d.get("stage") or self._stage_of(capability, node)
                      or self._current_stage(store, capability, execution.id)),
            "node": node, "reason": d.get("reason") or d.get("message"),
            "requester": version.actor if version else None, "labels": labels,
            "links": self._links(config, execution)}
        for name, matched in sorted(targets.items()):
            kind = next(k for k in _KIND_ORDER if k in matched)
            key = f"{instance}-{event['id']}-{name}"
            body = {"id": key, "event": kind, **payload}
            store.queue_notification(key, event["id"], kind, execution.request, name,
                                     config.targets[name].kind, body, event["time"])

    def _labels_of(self, store: Store, request: str, version: int) -> dict[str, str]:
        key = (request, version)
        if key not in self._labels:
            if len(self._labels) >= 10_000:  # a long-lived watcher: keep the cache bounded
                self._labels.clear()
            from docket.launch import _labels

            record = store.version(request, version)
            self._labels[key] = {str(k): str(v) for k, v in
                                 (_labels(record.document) if record else {}).items()}
        return self._labels[key]

    def _current_stage(self, store: Store, capability: str, execution: int) -> str | None:
        """The stage that failed, else the one running, from the execution's nodes."""
        from docket.report import stages

        nodes = [{"node": n.node, "state": n.state.value} for n in store.nodes(execution)]
        if not nodes or not self._specs(capability):
            return None
        found = stages(self._specs(capability), nodes)
        failed = [s["stage"] for s in found if s["state"] == "failed"]
        running = [s["stage"] for s in found if s["state"] == "running"]
        return (failed or running or [None])[0]

    def _specs(self, capability: str) -> list[Any]:
        if capability not in self._stages:
            from docket.capabilities import CapabilityError, load_capability

            try:
                self._stages[capability] = list(load_capability(
                    self.templates_dir, capability).definition.stages)
            except CapabilityError:
                self._stages[capability] = []
        return self._stages[capability]

    def _stage_of(self, capability: str, node: str | None) -> str | None:
        if node is None:
            return None
        return next((s.name for s in self._specs(capability)
                     if any(fnmatch.fnmatchcase(node, p) for p in s.nodes)), None)

    @staticmethod
    def _links(config: Any, execution: Execution) -> dict[str, str]:
        links = {}
        if execution.directory:
            links["directory"] = Path(execution.directory).as_uri()
        if config.report_url:
            base = config.report_url.rstrip("/")
            links["report"] = f"{base}/requests/{execution.request}.html"
        return links


# sending -------------------------------------------------------------------------


def _stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@contextlib.contextmanager
def sender_lock(home: Any, block: bool = False) -> Iterator[None]:
    """One sender per home at a time (the watcher's thread or 'notifications send')."""
    with held(home.state_dir / "notify.lock", None if block else 0,
              busy="another sender is delivering this home's notifications",
              fix="a 'docket watch' sends them itself; wait for it"):
        yield


class Sender:
    """Delivers due outbox rows. Not thread-safe: one per thread (it owns its Store)."""

    def __init__(self, home: Any) -> None:
        self.home = home
        self.store = Store(home.database)
        self._rules = _RulesFile(home.root)
        # row id -> (row, attempt, max_attempts) of the attempts running in threads
        self._inflight: dict[int, tuple[Any, int, int]] = {}
        self._results: queue.Queue[tuple[int, DeliveryFailed | None]] = queue.Queue()
        self.wake = threading.Event()  # set when an attempt ends (and by the watcher)

    def close(self) -> None:
        self.store.close()

    def config(self) -> Any:
        return self._rules.current(forget_when_gone=False)

    def next_due_s(self) -> float | None:
        """Seconds until the next pending row is due (0 when one is due); None if none."""
        at = self.store.next_notification_due()
        if at is None:
            return None
        due = datetime.strptime(at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        return max(0.0, (due - datetime.now(UTC)).total_seconds())

    def pump(self, limit: int = 100) -> dict[str, int]:
        """Record finished attempts, then start the due rows of every idle target.

        Each target has at most one attempt in flight, in a thread of its own: a hung
        endpoint holds up only its own notifications, never another target's, and its
        own go out in order. Returns how many attempts ended: sent, failed, dead.
        """
        counts = self._collect(0.0)
        busy = {row["target"] for row, _, _ in self._inflight.values()}
        for row in self.store.due_notifications(now(), limit):
            if row["target"] not in busy and row["id"] not in self._inflight:
                busy.add(row["target"])
                self._start(row)
        return counts

    def send_due(self, limit: int = 100) -> dict[str, int]:
        """Try every row due now and wait for the attempts (for 'notifications send')."""
        counts = {"sent": 0, "failed": 0, "dead": 0}
        while True:
            for key, n in self.pump(limit).items():
                counts[key] += n
            if not self._inflight:
                return counts
            for key, n in self._collect(1.0).items():
                counts[key] += n

    def _start(self, row: Any) -> None:
        config = self.config()
        retry = config.retry if config is not None else None
        max_attempts = retry.max_attempts if retry else 8
        attempt = row["attempts"] + 1
        delay = min(retry.max_backoff_s if retry else 3600.0,
                    (retry.backoff_s if retry else 30.0) * 2 ** (attempt - 1))
        # count the attempt before making it: a crash mid-send still counts, and the
        # row is tried again (with the same key) once the backoff has passed
        self.store.notification_attempted(
            row["id"], attempt, _stamp(datetime.now(UTC) + timedelta(seconds=delay)))
        self._inflight[row["id"]] = (row, attempt, max_attempts)

        def attempt_delivery() -> None:
            failure: DeliveryFailed | None = None
            try:
                self._deliver(config, row)
            except DeliveryFailed as exc:
                failure = exc
            except Exception as exc:  # a bug must not leave the row in flight forever
                failure = DeliveryFailed(f"unexpected error: {exc!r}")
            self._results.put((row["id"], failure))
            self.wake.set()

        # a daemon thread: a hung endpoint must not keep a stopping watcher alive
        threading.Thread(target=attempt_delivery, name=f"docket-notify-{row['target']}",
                         daemon=True).start()

    def _collect(self, block_s: float) -> dict[str, int]:
        counts = {"sent": 0, "failed": 0, "dead": 0}
        timeout: float | None = block_s
        while self._inflight:
            try:
                nid, failure = (self._results.get(timeout=timeout) if timeout
                                else self._results.get_nowait())
            except queue.Empty:
                break
            timeout = None
            row, attempt, max_attempts = self._inflight.pop(nid)
            counts[self._finish(row, attempt, max_attempts, failure)] += 1
        return counts

    def _finish(self, row: Any, attempt: int, max_attempts: int,
                failure: DeliveryFailed | None) -> str:
        if failure is not None:
            dead = failure.permanent or attempt >= max_attempts
            self.store.notification_failed(row["id"], str(failure)[:500], dead=dead)
            log.warning("notification %s to %s: attempt %d failed: %s%s", row["key"],
                        row["target"], attempt, failure, " (dead)" if dead else "")
            return "dead" if dead else "failed"
        self.store.notification_sent(row["id"])
        return "sent"

    def _deliver(self, config: Any, row: Any) -> None:
        target = config.targets.get(row["target"]) if config is not None else None
        if target is None:
            raise DeliveryFailed(f"target {row['target']!r} is no longer in "
                                 f"{NOTIFICATIONS_FILE}", permanent=True)
        payload = json.loads(row["payload"])
        if target.webhook is not None:
            self._webhook(target.webhook, row["key"], payload)
        elif target.email is not None:
            self._email(config.smtp, target.email, row["key"], payload)
        else:
            self._command(target.command, row["key"], payload)

    def _secret(self, hook: Any) -> bytes:
        if hook.secret_env:
            value = os.environ.get(hook.secret_env)
            if not value:
                raise DeliveryFailed(f"the webhook secret ${hook.secret_env} is not set in "
                                     "the watcher's environment")
            return value.encode()
        path = Path(hook.secret_file)
        path = path if path.is_absolute() else self.home.root / path
        try:
            return path.read_bytes().strip()
        except OSError as exc:
            raise DeliveryFailed(f"cannot read the webhook secret {path}: "
                                 f"{exc.strerror}") from None

    def _webhook(self, hook: Any, key: str, payload: dict[str, Any]) -> None:
        import http.client  # here: every tick imports this module, few send (0.01 CPU-s)

        body = json.dumps(payload, sort_keys=True).encode()
        url = urlsplit(hook.url)
        headers = {**hook.headers, "Content-Type": "application/json",
                   "User-Agent": "docket-notify", "Idempotency-Key": key,
                   "X-Docket-Event": payload["event"],
                   SIGNATURE_HEADER: sign(self._secret(hook), body)}
        cls = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        conn = cls(url.hostname or "localhost", url.port, timeout=hook.timeout_s)
        try:
            conn.request("POST", (url.path or "/") + (f"?{url.query}" if url.query else ""),
                         body=body, headers=headers)
            response = conn.getresponse()
            text = response.read(2000).decode("utf-8", "replace")
        except (OSError, http.client.HTTPException) as exc:
            raise DeliveryFailed(f"POST {hook.url}: {exc or type(exc).__name__}") from None
        finally:
            conn.close()
        if not 200 <= response.status < 300:
            # 4xx other than 408/429 means the receiver refuses this payload for good
            permanent = 400 <= response.status < 500 and response.status not in (408, 429)
            raise DeliveryFailed(f"POST {hook.url}: HTTP {response.status} "
                                 f"{text.strip()[:200]}", permanent=permanent)

    def _email(self, smtp: Any, email: Any, key: str, payload: dict[str, Any]) -> None:
        import smtplib  # here, as http.client in _webhook
        from email.message import EmailMessage

        from docket.analysts import load_analysts

        try:
            analysts = load_analysts(self.home.root)
        except Invalid as exc:
            raise DeliveryFailed(str(exc)) from None
        wanted: list[str] = list(email.addresses)
        missing = []
        users = ([payload["requester"]] if email.requester and payload.get("requester")
                 else [])
        for role in email.roles:
            users += analysts.with_role(role)
        for user in dict.fromkeys(users):
            entry = analysts.entries.get(user)
            if entry is not None and entry.emails:
                wanted.append(entry.emails[0])
            else:
                missing.append(user)
        recipients = list(dict.fromkeys(wanted))
        if not recipients:
            raise DeliveryFailed("no email address to send to"
                                 + (f" (no emails: in analysts.yaml for "
                                    f"{', '.join(missing)})" if missing else ""),
                                 permanent=True)
        message = EmailMessage()
        message["From"] = smtp.sender
        message["To"] = ", ".join(recipients)
        message["Subject"] = (f"[docket] {payload['request']} v{payload['version']}: "
                              f"{payload['state']}")
        message["Message-ID"] = f"<{key}@docket>"
        message["X-Docket-Event"] = payload["event"]
        message.set_content(_email_text(payload))
        try:
            with smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout_s) as client:
                if smtp.starttls:
                    client.starttls()
                if smtp.username:
                    client.login(smtp.username, os.environ.get(smtp.password_env or "", ""))
                client.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            raise DeliveryFailed(f"SMTP {smtp.host}:{smtp.port} refused every recipient: "
                                 f"{exc.recipients}", permanent=True) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryFailed(f"SMTP {smtp.host}:{smtp.port}: {exc}") from None

    def _command(self, command: Any, key: str, payload: dict[str, Any]) -> None:
        env = {**os.environ, "DOCKET_NOTIFICATION_ID": key, "DOCKET_EVENT": payload["event"],
               "DOCKET_REQUEST": payload["request"], "DOCKET_STATE": payload["state"]}
        try:
            done = subprocess.run(command.argv, input=json.dumps(payload).encode(), env=env,
                                  capture_output=True, timeout=command.timeout_s,
                                  cwd=self.home.root, check=False)
        except subprocess.TimeoutExpired:
            raise DeliveryFailed(f"{command.argv[0]} did not finish within "
                                 f"{command.timeout_s:g} s (killed)") from None
        except OSError as exc:
            raise DeliveryFailed(f"cannot run {command.argv[0]}: {exc.strerror}") from None
        if done.returncode != 0:
            tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
            raise DeliveryFailed(f"{command.argv[0]} exited {done.returncode}: {tail[0][:200]}")

    def run(self, stop: threading.Event, idle_s: float = 1.0) -> None:
        """Send until ``stop`` is set; ``self.wake`` (set after each watcher pass and when
        an attempt ends) makes it look again at once."""
        while not stop.is_set():
            try:
                self.pump()
                due = self.next_due_s()
            except sqlite3.Error as exc:  # a busy or full disk: try again in a moment
                log.error("notifications: %s", exc)
                due = None
            if self.wake.wait(idle_s if due is None else min(idle_s, max(due, 0.01))):
                self.wake.clear()


@contextlib.contextmanager
def run_sender(home: Any) -> Iterator[threading.Event]:
    """Run a ``Sender`` in a thread of this process; yields the event that wakes it."""
    stop, wake = threading.Event(), threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                with sender_lock(home):
                    sender = Sender(home)
                    sender.wake = wake
                    try:
                        sender.run(stop)
                    finally:
                        sender.close()
            except Locked:  # 'docket notifications send' is at it: try again later
                stop.wait(5.0)
            except Exception:  # never take the watcher down; say so and start again
                log.exception("the notification sender failed; restarting it")
                stop.wait(5.0)

    thread = threading.Thread(target=loop, name="docket-notify", daemon=True)
    thread.start()
    try:
        yield wake
    finally:
        stop.set()
        wake.set()
        # a hung endpoint may hold the thread for its timeout: do not wait for that
        thread.join(timeout=2.0)


def _email_text(payload: dict[str, Any]) -> str:
    lines = [f"{payload['request']} version {payload['version']} (execution "
             f"{payload['execution']}, {payload['capability']}) is {payload['state']}."]
    if payload.get("stage"):
        lines.append(f"Stage: {payload['stage']}")
    if payload.get("node"):
        lines.append(f"Node: {payload['node']}")
    if payload.get("reason"):
        lines.append(f"Reason: {payload['reason']}")
    for name, link in sorted(payload.get("links", {}).items()):
        lines.append(f"{name.capitalize()}: {link}")
    lines.append(f"\nSee: docket show {payload['request']}")
    lines.append(f"Notification {payload['id']} ({payload['event']})")
    return "\n".join(lines) + "\n"


def list_notifications(store: Store, state: str | None = None, request: str | None = None,
                       limit: int = 50) -> dict[str, Any]:
    return {"counts": store.notification_counts(),
            "notifications": store.notification_rows(state=state, request=request,
                                                     limit=limit)}


def retry_dead(store: Store, ids: list[int] | None = None) -> list[int]:
    """Make dead notifications pending again (all of them, or these ids), due now."""
    return store.revive_notifications(ids)
