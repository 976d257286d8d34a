"""Kill the watcher with SIGKILL at random moments: nothing is lost or done twice."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import BIN, request_doc

REQUESTS = 220


def _start_watcher(home: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([str(BIN / "docket"), "watch", "--home", str(home)],
                                stdout=out, stderr=out)


def _finished(home: Path) -> int:
    try:
        conn = sqlite3.connect(f"file:{home / 'state' / 'docket.db'}?mode=ro", uri=True,
                               timeout=10)
        try:
            return conn.execute("SELECT count(*) FROM executions WHERE engine_state='done'"
                                ).fetchone()[0]
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return 0


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_and_duplicates_nothing(home, docket, tmp_path):
    rng = random.Random(20261121)
    docket("tick")  # the database, so the queue limit can be raised
    docket("queue", "limit", "null", "6")
    staging = tmp_path / "staging"
    staging.mkdir()
    for i in range(REQUESTS):
        (staging / f"req-{i:03d}.yaml").write_text(request_doc(f"req-{i:03d}",
                                                               message=f"request {i}"))
    incoming = home / "spool" / "incoming"
    log = tmp_path / "watch.log"
    watcher = _start_watcher(home, log)
    kills = 0
    next_kill = time.monotonic() + rng.uniform(0.1, 0.8)
    pending = sorted(staging.iterdir())
    deadline = time.monotonic() + 420
    try:
        while time.monotonic() < deadline:
            for _ in range(rng.randint(1, 12)):
                if pending:
                    src = pending.pop(0)
                    os.rename(src, incoming / src.name)
            if time.monotonic() >= next_kill and (pending or kills < 12):
                watcher.send_signal(signal.SIGKILL)
                watcher.wait()
                kills += 1
                time.sleep(rng.uniform(0, 0.2))
                watcher = _start_watcher(home, log)
                next_kill = time.monotonic() + rng.uniform(0.1, 1.2)
            if not pending and kills >= 12 and _finished(home) >= REQUESTS:
                break
            time.sleep(rng.uniform(0.01, 0.1))
    finally:
        watcher.terminate()
        watcher.wait(timeout=30)
    assert kills >= 12

    # every request recorded exactly once
    conn = sqlite3.connect(home / "state" / "docket.db")
    names = [r[0] for r in conn.execute("SELECT request FROM versions")]
    assert sorted(names) == [f"req-{i:03d}" for i in range(REQUESTS)]
    accepted_events = conn.execute(
        "SELECT count(*) FROM events WHERE type='version.accepted'").fetchone()[0]
    assert accepted_events == REQUESTS
    executions = conn.execute("SELECT id, request, state, directory FROM executions").fetchall()
    assert len(executions) == REQUESTS
    assert {state for _id, _r, state, _d in executions} == {"complete"}, log.read_text()[-3000:]
    # no execution ran twice: the null job counts its runs in the processing directory
    for _id, request, _state, directory in executions:
        runs = (Path(directory) / "null.runs").read_text().strip()
        assert runs == "1", f"{request} ran {runs} times"
        metrics = json.loads((Path(directory) / "workflow.dag.metrics").read_text())
        assert metrics["exitcode"] == 0
    assert not list(incoming.iterdir())
    assert not (home / "spool" / "rejected").exists() or not list(
        (home / "spool" / "rejected").iterdir())
    assert len(list((home / "spool" / "accepted").glob("*/v1.yaml"))) == REQUESTS
    conn.close()
    check = docket("rebuild-state", "--check", "--json").json()
    assert check["identical"] is True
