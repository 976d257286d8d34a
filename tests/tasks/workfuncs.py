"""Pipeline functions that the `docket run` tests call, as a CHIME user's module would be."""

from __future__ import annotations

import os
import time
from pathlib import Path


def mean(a: float, b: float, out: str) -> tuple[dict, list[str], list[str]]:
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "mean.txt").write_text(f"{(a + b) / 2}\n")
    (Path(out) / "mean.png").write_bytes(b"\x89PNG fake plot")
    return ({"mean": (a + b) / 2}, [f"{out}/mean.txt"], [f"{out}/mean.png"])


def broken(x: int) -> dict:
    return {"ratio": 1 / x}


def sleepy(seconds: float) -> dict:
    time.sleep(seconds)
    return {"slept": seconds}


def missing_product() -> tuple[dict, list[str]]:
    return {}, ["never-written.h5"]


def record(n: int, log: str, pause_s: float = 0.0) -> dict:
    """Append this work's number to a shared log (O_APPEND: one line per call)."""
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{n} {os.getpid()}\n".encode())
    finally:
        os.close(fd)
    if pause_s:
        time.sleep(pause_s)
    return {"n": n}
