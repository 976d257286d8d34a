"""Faults, not only kills: a full disk and I/O errors during intake, archive copies,
rendering and database commits. Each pass meets them with a clear error, loses nothing
already accepted, leaves no half-written file under a final name, and docket carries on
by itself once the disk is back."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import BIN, REPO, drop, request_doc

GOOD = [f"r{i:02d}" for i in range(10)]


def _spool_is_clean(home: Path) -> None:
    """No temporary or partial file anywhere, every archive copy whole."""
    spool = home / "spool"
    partial = [str(p) for p in spool.rglob("*") if p.name.endswith((".tmp", ".copying"))]
    assert partial == []
    for name in GOOD:
        archive = spool / "accepted" / name / "v1.yaml"
        assert archive.read_text() == request_doc(name, message=name), name


def _requests(home: Path) -> dict[str, str]:
    out = subprocess.run([str(BIN / "docket"), "status", "--json", "--limit", "1000",
                          "--home", str(home)], capture_output=True, text=True, check=True)
    return {r["name"]: r["state"] for r in json.loads(out.stdout)["requests"]}


def _versions(home: Path) -> int:
    import sqlite3

    conn = sqlite3.connect(home / "state" / "docket.db")
    try:
        return conn.execute("SELECT count(*) FROM versions").fetchone()[0]
    finally:
        conn.close()


@pytest.mark.slow
def test_random_disk_full_and_io_errors_lose_nothing(home, docket):
    if not shutil.which("fiu-run"):
        pytest.skip("fiu-run is missing (apt-get install fiu-utils)")
    docket("tick")
    for name in GOOD[:6]:
        drop(home, f"{name}.yaml", request_doc(name, message=name))
    for i in range(3):
        drop(home, f"bad{i}.yaml", "kind: Pod\n")
    verdicts = []
    for attempt in range(10):
        out = subprocess.run(["fiu-run", "-x", sys.executable, "-m", "tests.core.faultkit",
                              str(home), "0.004"], capture_output=True, text=True,
                             cwd=REPO, timeout=300)
        assert out.returncode == 0, out.stderr
        verdict = json.loads(out.stdout.splitlines()[-1])
        assert "unclean" not in verdict, verdict["unclean"]
        verdicts.append(verdict)
        if attempt < len(GOOD) - 6:  # documents keep arriving while the disk misbehaves
            name = GOOD[6 + attempt]
            drop(home, f"{name}.yaml", request_doc(name, message=name))
    errors = [v["error"] for v in verdicts if "error" in v]
    assert errors, "no fault was met: the injection did nothing"
    for error in errors:  # each a sentence an operator can act on
        assert error.startswith(("DocketError: this pass stopped: ", "OperationalError")), error

    # the disk is back: docket finishes by itself, nothing lost, nothing twice
    out = subprocess.run([str(BIN / "docket"), "tick", "--wait", "--home", str(home)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert _requests(home) == dict.fromkeys(GOOD, "complete")
    assert _versions(home) == len(GOOD)
    assert not os.listdir(home / "spool" / "incoming")
    assert sorted(p.name for p in (home / "spool" / "rejected").glob("*.error")) == [
        "bad0.yaml.error", "bad1.yaml.error", "bad2.yaml.error"]
    _spool_is_clean(home)
    assert docket("rebuild-state", "--check").code == 0


@contextlib.contextmanager
def _small_disk(where: Path, size_mb: int) -> Iterator[Path]:
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("needs root and mount for a real, small filesystem")
    where.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs",
                           str(where)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _fill(disk: Path) -> Path:
    """Fill the filesystem to the last byte."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as fh:
        for size in (1 << 20, 1 << 12, 1):
            with contextlib.suppress(OSError):
                while True:
                    fh.write(b"\0" * size)
    probe = disk / "probe"
    with pytest.raises(OSError) as full:
        probe.write_bytes(b"x" * 4096)
    assert full.value.errno == errno.ENOSPC
    probe.unlink(missing_ok=True)
    return filler


def test_a_full_disk_stops_the_pass_and_the_watcher_carries_on_when_space_returns(
        tmp_path):
    with _small_disk(tmp_path / "disk", 24) as disk:
        home = disk / "home"
        shutil.copytree(REPO / "templates", home / "templates")
        (home / "spool" / "incoming").mkdir(parents=True)
        docket = [str(BIN / "docket"), "--home", str(home)]

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([docket[0], *args, *docket[1:]], capture_output=True,
                                  text=True, timeout=300)

        for name in GOOD[:2]:
            drop(home, f"{name}.yaml", request_doc(name, message=name))
        assert run("tick", "--wait").returncode == 0
        for name in GOOD[2:]:
            drop(home, f"{name}.yaml", request_doc(name, message=name))
        drop(home, "bad.yaml", "kind: Pod\n")
        filler = _fill(disk)

        full = run("tick")
        assert full.returncode == 1
        # where the pass meets the full disk decides the words; one line says it either way
        assert full.stderr.startswith(("Error: this pass stopped: ",
                                       "Error: the docket database: ")), full.stderr
        assert any(w in full.stderr for w in ("disk", "No space left")), full.stderr
        assert full.stderr.count("\n") == 1, full.stderr  # one line, no traceback
        for name in GOOD[:2]:  # what was accepted stays (its state is checked below)
            assert (home / "spool" / "accepted" / name / "v1.yaml").exists()
        assert len(os.listdir(home / "spool" / "incoming")) == len(GOOD) - 1

        watch = subprocess.Popen([docket[0], "watch", *docket[1:]], stderr=subprocess.PIPE,
                                 text=True)
        try:
            time.sleep(3)  # passes on a full disk: the watcher must outlive them
            assert watch.poll() is None, "the watcher died on a full disk"
            filler.unlink()  # space returns
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                states = _requests(home)
                if states == dict.fromkeys(GOOD, "complete"):
                    break
                time.sleep(0.5)
            done = _requests(home) == dict.fromkeys(GOOD, "complete")
            alive = watch.poll() is None
        finally:
            watch.terminate()
            _out, err = watch.communicate(timeout=60)
        log = home / "state" / "docket.log"
        assert done and alive, err + (log.read_text() if log.exists() else "")
        assert not os.listdir(home / "spool" / "incoming")
        assert "unknown kind 'Pod'" in (home / "spool/rejected/bad.yaml.error").read_text()
        _spool_is_clean(home)
        assert _versions(home) == len(GOOD)
        rebuilt = run("rebuild-state", "--check")
        assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr


def test_status_and_show_answer_on_a_full_disk(tmp_path):
    """A full disk is when an operator most needs to look: the readers make no file."""
    with _small_disk(tmp_path / "disk", 24) as disk:
        home = disk / "home"
        shutil.copytree(REPO / "templates", home / "templates")
        (home / "spool" / "incoming").mkdir(parents=True)
        drop(home, "seen.yaml", request_doc("seen"))
        docket = [str(BIN / "docket"), "--home", str(home)]

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([docket[0], *args, *docket[1:]], capture_output=True,
                                  text=True, timeout=300)

        assert run("tick", "--wait").returncode == 0
        assert not (home / "state" / "docket.db-shm").exists()  # no writer is open
        _fill(disk)
        status = run("status")
        assert status.returncode == 0, status.stderr
        assert "seen" in status.stdout and "complete" in status.stdout
        show = run("show", "seen")
        assert show.returncode == 0, show.stderr
        assert "seen" in show.stdout
