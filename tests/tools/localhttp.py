"""A real HTTP server on 127.0.0.1 for the productfetcher and ingest tests.

Routes are set per test; each can misbehave in one of the ways a real server does
(drop the connection midway, send wrong bytes, fail with 503, wait for N concurrent
clients). Everything it receives is recorded so tests can check what was asked for
(e.g. the ``Range`` header of a resumed download). Files under ``root`` are served
as they are (with Range support), which is how an archive is put on the web.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from tests.loopback import LoopbackHTTP

__all__ = ["Route", "LocalServer"]


@dataclass
class Route:
    body: bytes
    mode: str = "ok"  # ok, drop-first, stall-first, wrong, fail-first, fail-always, barrier
    hits: int = 0


@dataclass
class Seen:
    path: str
    range: str | None


@dataclass
class LocalServer(LoopbackHTTP):
    HANDLER_TIMEOUT_S = 10

    root: Path | None = None
    routes: dict[str, Route] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    barrier: threading.Barrier | None = None
    release: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, path: str, body: bytes, mode: str = "ok") -> str:
        self.routes[path] = Route(body, mode)
        return self.url(path)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def hits(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]

    # -- serving ----------------------------------------------------------------------
    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        rng = h.headers.get("Range")
        with self._lock:
            self.seen.append(Seen(h.path, rng))
            route = self.routes.get(h.path)
            if route is not None:
                route.hits += 1
                hit = route.hits
        if route is None:
            body = self._static(h.path)
            if body is None:
                h.send_error(404, "Not Found")
                return
            self._send(h, body, rng)
            return
        if route.mode == "fail-always" or (route.mode == "fail-first" and hit == 1):
            h.send_error(503, "Service Unavailable")
            return
        if route.mode == "barrier" and self.barrier is not None:
            # Answers only once N clients are connected at the same time: a sequential
            # client never gets past this (the barrier breaks and it gets a 500).
            try:
                self.barrier.wait(timeout=10)
            except threading.BrokenBarrierError:
                h.send_error(500, "not concurrent")
                return
        if route.mode == "stall-first" and hit == 1:
            # Half the body, then silence: the client's read timeout has to notice.
            h.send_response(200)
            h.send_header("Content-Length", str(len(route.body)))
            h.end_headers()
            h.wfile.write(route.body[: len(route.body) // 2])
            h.wfile.flush()
            self.release.wait(timeout=5)
            h.close_connection = True
            return
        if route.mode == "drop-first" and hit == 1:
            h.send_response(200)
            h.send_header("Content-Length", str(len(route.body)))
            h.end_headers()
            h.wfile.write(route.body[: len(route.body) // 2])
            h.wfile.flush()
            h.close_connection = True
            return
        body = route.body
        if route.mode == "wrong":
            body = bytes(b ^ 0xFF for b in body)
        self._send(h, body, rng)

    def _static(self, url_path: str) -> bytes | None:
        if self.root is None:
            return None
        from urllib.parse import unquote

        path = (self.root / unquote(url_path).lstrip("/")).resolve()
        if not path.is_file() or not path.is_relative_to(self.root.resolve()):
            return None
        return path.read_bytes()

    def _send(self, h: BaseHTTPRequestHandler, body: bytes, rng: str | None) -> None:
        match = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if match:
            start = int(match.group(1))
            if start >= len(body):
                h.send_response(416)
                h.send_header("Content-Range", f"bytes */{len(body)}")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            h.send_response(206)
            h.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            body = body[start:]
        else:
            h.send_response(200)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
