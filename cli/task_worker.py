"""``task-worker``: the worker of a task workflow's taskforces (see docket.tools.taskworker).

Plain argparse, not typer: a taskforce starts one of these per worker, so start-up time
is paid N times per workflow.
"""

from __future__ import annotations

import sys

from docket.tools.taskworker import main as _main

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    raise SystemExit(_main(argv))


if __name__ == "__main__":
    main(sys.argv[1:])
