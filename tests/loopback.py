"""What the tests' real servers on 127.0.0.1 share: starting and stopping a threaded HTTP
server whose requests go to the owner's ``_serve``, and waiting for a condition."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["LoopbackHTTP", "wait_for"]


def wait_for(predicate: Any, timeout_s: float = 60.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something true (generous: a loaded machine)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


class LoopbackHTTP:
    """Mixin: ``with server:`` serves ``METHODS`` on an ephemeral port until the block ends.

    The owner defines ``_serve(handler)`` and has a ``release`` event (set on exit, so a
    request held open on purpose lets go)."""

    METHODS: tuple[str, ...] = ("GET",)
    HANDLER_TIMEOUT_S: float | None = None  # a stuck client cannot hold a thread for long
    release: threading.Event

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        raise NotImplementedError

    def __enter__(self) -> Any:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            timeout = owner.HANDLER_TIMEOUT_S

            def log_message(self, *args: Any) -> None:
                pass

        for method in self.METHODS:
            setattr(Handler, f"do_{method}", lambda h: owner._serve(h))
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
