"""``docket tick --wait`` between passes: it wakes when a child it started ends."""

from __future__ import annotations

import subprocess
import sys
import time

from docket.watcher import wait_for_exit


def test_wakes_when_a_child_exits_not_after_the_timeout() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.2)"])
    try:
        start = time.monotonic()
        wait_for_exit([child.pid], 60.0)
        waited = time.monotonic() - start
        assert child.poll() is not None  # it returned because the child ended
        assert waited < 30.0  # far from the 60 s timeout, even on a loaded machine
    finally:
        child.kill()
        child.wait()


def test_without_children_it_sleeps_the_timeout() -> None:
    start = time.monotonic()
    wait_for_exit([], 0.2)
    assert time.monotonic() - start >= 0.19


def test_a_reaped_child_is_not_waited_for() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: its pid names nothing any more
    start = time.monotonic()
    wait_for_exit([child.pid], 0.2)  # no error; just the timeout
    assert time.monotonic() - start >= 0.19
