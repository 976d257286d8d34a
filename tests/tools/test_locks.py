"""The lock with a deadline, held by real other processes: it waits until the deadline,
then fails by name; a holder that ends or dies frees it; a directory locks in place."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from docket.errors import ExitCode, Locked
from docket.locks import LockTimeout, held

# Another process takes the lock, says so, and keeps it until its stdin closes.
HOLDER = r"""
import fcntl, os, sys
path = sys.argv[1]
flags = os.O_RDONLY | os.O_DIRECTORY if os.path.isdir(path) else os.O_RDWR | os.O_CREAT
fd = os.open(path, flags, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()
"""


Holder = Callable[[Path], "subprocess.Popen[str]"]


@pytest.fixture
def holder() -> Iterator[Holder]:
    started: list[subprocess.Popen[str]] = []

    def start(path: Path) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        started.append(proc)
        assert proc.stdout is not None and proc.stdout.readline() == "held\n"
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def release(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()


def test_a_held_lock_fails_at_the_deadline_naming_the_holder(tmp_path: Path,
                                                              holder: Holder) -> None:
    lock = tmp_path / "x.lock"
    holder(lock)
    started = time.monotonic()
    with pytest.raises(LockTimeout) as caught, held(lock, 0.3, busy="x is busy",
                                                   fix="wait for it"):
        pytest.fail("the block ran without the lock")
    assert time.monotonic() - started >= 0.3
    assert str(caught.value) == "x is busy — wait for it"
    assert isinstance(caught.value, Locked) and caught.value.exit_code == ExitCode.LOCKED


def test_zero_tries_once(tmp_path: Path, holder: Holder) -> None:
    lock = tmp_path / "x.lock"
    holder(lock)
    with pytest.raises(LockTimeout, match="is locked by another process"), held(lock, 0):
        pass


def test_a_holder_that_finishes_before_the_deadline_lets_the_waiter_in(tmp_path: Path,
                                                                        holder: Holder) -> None:
    lock = tmp_path / "x.lock"
    proc = holder(lock)
    subprocess.Popen([sys.executable, "-c", "import os, sys, time; time.sleep(0.3); "
                      f"os.kill({proc.pid}, 15)"])
    with held(lock, 30):
        assert proc.wait(timeout=5) == -signal.SIGTERM


def test_a_killed_holder_leaves_no_lock_behind(tmp_path: Path, holder: Holder) -> None:
    lock = tmp_path / "x.lock"
    proc = holder(lock)
    proc.kill()
    proc.wait()
    with held(lock, 0):
        pass


def test_no_deadline_waits_for_the_holder(tmp_path: Path, holder: Holder) -> None:
    lock = tmp_path / "x.lock"
    proc = holder(lock)
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"]).wait()
    release(proc)
    with held(lock, None) as fd:
        assert proc.wait(timeout=5) == 0
        os.write(fd, b"mine")
    assert lock.read_bytes() == b"mine"


def test_the_lock_is_taken_again_after_the_block(tmp_path: Path, holder: Holder) -> None:
    lock = tmp_path / "x.lock"
    with held(lock, 0):
        pass
    holder(lock)  # would hang (and the fixture's readline with it) if it were still held


def test_a_directory_is_locked_in_place(tmp_path: Path, holder: Holder) -> None:
    run = tmp_path / "run"
    run.mkdir()
    proc = holder(run)
    with pytest.raises(LockTimeout, match="another conveyor"), held(
            run, 0, busy="another conveyor is working on run", fix="wait"):
        pass
    release(proc)
    proc.wait(timeout=5)
    with held(run, 0):
        assert list(run.iterdir()) == []


def test_the_lock_file_and_its_folder_are_made(tmp_path: Path) -> None:
    lock = tmp_path / "state" / "deep" / "notify.lock"
    with held(lock, 0, mode=0o600):
        assert lock.is_file() and lock.stat().st_mode & 0o777 == 0o600
