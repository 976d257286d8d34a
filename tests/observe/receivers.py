"""Real receivers on 127.0.0.1 for the notification tests: a webhook and an SMTP server.

The webhook checks each POST's HMAC-SHA256 signature itself (with ``hmac``, not with
docket's code) and can misbehave: fail the first N POSTs, hang on some, or always fail.
Everything it receives is recorded, with whether the signature was good.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.loopback import LoopbackHTTP, wait_for

__all__ = ["Webhook", "Post", "SmtpRecorder", "wait_for"]


@dataclass
class Post:
    path: str
    headers: dict[str, str]
    body: bytes
    signed: bool

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Webhook(LoopbackHTTP):
    METHODS = ("POST",)

    secret: bytes
    fail_first: int = 0           # answer 503 to the first N POSTs
    hang: str = "never"           # never, first, always: hold the connection unanswered
    status: int = 200             # what a good POST gets
    posts: list[Post] = field(default_factory=list)
    hanging: int = 0              # connections being held right now
    release: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def keys(self) -> list[str]:
        with self._lock:
            return [p.headers.get("Idempotency-Key", "") for p in self.posts]

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        body = h.rfile.read(int(h.headers.get("Content-Length", "0")))
        expected = "sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        signed = hmac.compare_digest(expected, h.headers.get("X-Docket-Signature-256", ""))
        with self._lock:
            self.posts.append(Post(h.path, dict(h.headers), body, signed))
            number = len(self.posts)
        if self.hang == "always" or (self.hang == "first" and number == 1):
            with self._lock:
                self.hanging += 1
            self.release.wait(600)  # until the test ends (or the client gives up)
            with self._lock:
                self.hanging -= 1
            return
        if not signed:
            h.send_error(401, "bad signature")
            return
        if number <= self.fail_first:
            h.send_error(503, "try later")
            return
        h.send_response(self.status)
        h.send_header("Content-Length", "2")
        h.end_headers()
        h.wfile.write(b"ok")


class SmtpRecorder:
    """aiosmtpd on a free loopback port; ``messages`` are the parsed messages received."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.envelopes: list[tuple[str, list[str]]] = []

    def __enter__(self) -> SmtpRecorder:
        import email
        import socket

        from aiosmtpd.controller import Controller

        owner = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any,  # noqa: N802
                                  envelope: Any) -> str:
                owner.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
                owner.messages.append(email.message_from_bytes(envelope.original_content))
                return "250 OK"

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.controller.stop()
