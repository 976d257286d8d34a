"""Run one ``docket tick`` pass with faults injected by libfiu from inside the process.

Run as ``fiu-run -x python -m tests.core.faultkit HOME PROBABILITY``. The faults start
only once everything a pass imports is imported (a fault in Python's own start-up says
nothing about docket) and stop before the verdict is printed, as one JSON line:
``{"ok": true, ...}``, ``{"error": "..."}`` for a clear error, or ``{"unclean": "..."}``
with the traceback of anything else.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import sqlite3
import sys
import traceback
from pathlib import Path

import jinja2
import pydantic
import yaml

# what a pass imports lazily, imported before the first fault
import docket.analysts
import docket.decisions
import docket.engines.local
import docket.engines.localdag
import docket.outputs
import docket.policy
import docket.render
import docket.sites
import docket.watcher
from docket.errors import DocketError
from docket.home import resolve_home

# failure point -> errno it sets: a full disk for writes, an I/O error for reads
POINTS = {"posix/io/rw/write": 28, "posix/io/rw/pwrite": 28, "posix/io/sync/fsync": 28,
          "posix/io/sync/fdatasync": 5, "posix/io/rw/read": 5, "posix/io/rw/pread": 5,
          "posix/io/oc/open": 28}


def main() -> int:
    home, probability = Path(sys.argv[1]), float(sys.argv[2])
    _ = (docket.analysts, docket.decisions, docket.engines.local, docket.engines.localdag,
         docket.outputs, docket.policy, docket.render, docket.sites, jinja2, pydantic, yaml)
    watcher = docket.watcher.Watcher(resolve_home(home))
    fiu = ctypes.CDLL("libfiu.so.0")
    fiu.fiu_enable_random.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p,
                                      ctypes.c_float]
    fiu.fiu_disable.argtypes = [ctypes.c_char_p]
    for name, code in POINTS.items():
        fiu.fiu_enable_random(name.encode(), 1, code, probability)
    try:
        result: dict = {"ok": True, "report": watcher.tick()}
    except (DocketError, sqlite3.Error) as exc:
        result = {"error": f"{type(exc).__name__}: {exc}"}
    except BaseException:  # noqa: BLE001 - the test reports what it was
        result = {"unclean": traceback.format_exc()}
    finally:
        for name in POINTS:
            fiu.fiu_disable(name.encode())
    with contextlib.suppress(sqlite3.Error):
        watcher.close()
    sys.stdout.write(json.dumps(result, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
