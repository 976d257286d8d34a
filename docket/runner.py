"""``docket run PIPELINE module.function``: withdraw work, call the function, deposit.

CHIME's ``workflow run``: each pass withdraws the highest-priority queued work of the
pipeline (a lease, ``docket.work.withdraw``), calls ``function(**parameters)`` in this
process, and deposits what it returns: ``(results, products, plots)`` (a dict alone is
the results), with every product and plot checksummed, and status ``success``; an
exception (its traceback recorded), a wrong return, a missing product, or running past
the work's ``timeout`` deposits ``failure``. Several runners on one home (or on pool
nodes sharing it) never take the same work twice.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from docket.errors import Invalid, NotFound
from docket.fileio import sha256_file
from docket.home import Home
from docket.store import Store
from docket.work import Stale, finish, withdraw

__all__ = ["load_function", "perform", "run_works", "runner_name"]


def runner_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def load_function(path: str) -> Callable[..., Any]:
    """``package.module.function`` → the function (the current directory is importable)."""
    module_name, _, name = path.rpartition(".")
    if not module_name:
        raise Invalid(f"{path!r} is not module.function", "e.g. mypipeline.tasks.calibrate")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise NotFound(f"cannot import {module_name!r}: {exc}",
                       "run from the directory that holds it, or install it") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise NotFound(f"{module_name!r} has no function {name!r}", "check the name")
    return function


class _TimedOut(Exception):
    pass


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Raise _TimedOut in the function after ``seconds`` (the main thread's SIGALRM)."""

    def expire(_signum: int, _frame: object) -> None:
        raise _TimedOut(f"ran longer than its timeout of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _checksums(paths: list[str], root: Path) -> tuple[dict[str, Any], str | None]:
    sums = {}
    for item in paths:
        path = Path(item) if Path(item).is_absolute() else root / item
        if not path.is_file():
            return sums, f"product {item!r} does not exist (looked at {path})"
        sums[item] = {"sha256": sha256_file(path), "size_bytes": path.stat().st_size}
    return sums, None


def perform(work: dict[str, Any], function: Callable[..., Any]) -> dict[str, Any]:
    """Call the function for one work; the outcome to deposit (never raises)."""
    outcome: dict[str, Any] = {"status": "failure", "results": None, "products": None,
                               "plots": None, "checksums": {}, "error": None}
    try:
        with _time_limit(float(work["timeout"])):
            returned = function(**(work.get("parameters") or {}))
    except _TimedOut as exc:
        outcome["error"] = f"timeout: {exc}"
        return outcome
    except Exception:
        outcome["error"] = traceback.format_exc()[-20000:]
        return outcome
    if isinstance(returned, dict) or returned is None:
        returned = (returned, [], [])
    if not (isinstance(returned, tuple | list) and 1 <= len(returned) <= 3):
        outcome["error"] = (f"the function returned {type(returned).__name__}; return "
                            "(results, products, plots) or a results dict")
        return outcome
    results, products, plots = (list(returned) + [[], []])[:3]
    if results is not None and not isinstance(results, dict):
        outcome["error"] = f"results must be a dict, not {type(results).__name__}"
        return outcome
    try:
        products = [str(p) for p in products or []]
        plots = [str(p) for p in plots or []]
    except TypeError:
        outcome["error"] = "products and plots must be lists of paths"
        return outcome
    sums, problem = _checksums(products + plots, Path(work.get("path") or "."))
    outcome.update(results=results, products=products, plots=plots, checksums=sums)
    if problem:
        outcome["error"] = problem
        return outcome
    outcome["status"] = "success"
    return outcome


def _pending(store: Store, pipeline: str) -> bool:
    return store.has_open_work(pipeline)


def run_works(home: Home, pipeline: str, function_path: str, *, lives: int = -1,
              sleep_s: float = 30.0, until_empty: bool = False, site: str | None = None,
              say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Withdraw, perform and deposit works until ``lives`` works are done (-1: forever),
    or, with ``until_empty``, until no work of the pipeline is queued or running."""
    function = load_function(function_path)
    pipeline = pipeline.lower().replace("_", "-")
    runner = runner_name()
    counts = {"success": 0, "failure": 0, "stale": 0}
    store = Store(home.database)
    try:
        while lives != 0:
            work = withdraw(store, pipeline, runner, site=site)
            if work is None:
                if until_empty and not _pending(store, pipeline):
                    break
                time.sleep(sleep_s)
                continue
            lives -= 1 if lives > 0 else 0
            outcome = perform(work, function)
            try:
                finish(store, work["id"], runner, work["attempt"], outcome["status"],
                       results=outcome["results"], products=outcome["products"],
                       plots=outcome["plots"], checksums=outcome["checksums"],
                       error=outcome["error"])
                counts[outcome["status"]] += 1
            except Stale as exc:
                counts["stale"] += 1
                if say:
                    say(str(exc))
                continue
            if say:
                say(f"work {work['id']} attempt {work['attempt']}: {outcome['status']}")
    finally:
        store.close()
    return {"runner": runner, "pipeline": pipeline, **counts}
