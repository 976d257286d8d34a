"""A DAG runner resumed after a kill always leaves its record: the watcher is SIGKILLed
right after it restarts the runner, and the resume is still recorded and counted."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, drop, request_doc
from tests.loopback import wait_for

# the watcher, with the engine's resume wrapped so the process dies the instant the new
# runner has started: the moment a resume used to be lost
KILLED_AFTER_RESUME = """
import os, signal, sys
from docket.engines.local import LocalEngine
real = LocalEngine.resume
def resume(self, dag):
    engine_id = real(self, dag)
    os.kill(os.getpid(), signal.SIGKILL)
    return engine_id
LocalEngine.resume = resume
from cli.common import run
from cli.docket import app
sys.exit(run(app, ["tick", "--home", sys.argv[1]], prog="docket"))
"""


def _db(home: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{home / 'state' / 'docket.db'}?mode=ro", uri=True,
                           timeout=10)


def _lock_pid(directory: Path) -> int | None:
    from docket.engines.localdag import lock_is_held

    lock = directory / "workflow.dag.lock"
    if not lock_is_held(lock):
        return None
    pid = lock.read_text().split()
    return int(pid[0]) if pid else None  # the launcher writes it just after the start


def _slow_request_with_its_runner_killed(home: Path, docket) -> tuple[int, Path, int]:
    """A 60 s 'slow' request started by a tick, its runner then SIGKILLed (as an early
    SIGTERM or a crash kills it: no metrics). Returns (execution, directory, runner pid)."""
    drop(home, "slow.yaml", request_doc("slow", sleep_s=60))
    assert docket("tick").code == 0
    with _db(home) as conn:
        execution, directory = conn.execute(
            "SELECT id, directory FROM executions").fetchone()
    directory = Path(directory)
    runner = wait_for(lambda: _lock_pid(directory), what="the first runner")
    os.kill(runner, signal.SIGKILL)
    wait_for(lambda: _lock_pid(directory) is None, what="the first runner to die")
    return execution, directory, runner


def _stop_slow(docket, directory: Path):
    """Leave no 60 s runner behind, whatever the test saw."""
    cancelled = docket("cancel", "slow", "--reason", "test over")
    docket("tick")
    wait_for(lambda: _lock_pid(directory) is None, what="the runner to stop")
    return cancelled


def test_a_watcher_killed_right_after_resuming_a_runner_still_recorded_it(home, docket):
    execution, directory, first = _slow_request_with_its_runner_killed(home, docket)

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    watcher = subprocess.run([sys.executable, "-c", KILLED_AFTER_RESUME, str(home)],
                             env=env, capture_output=True, text=True, timeout=120)
    assert watcher.returncode == -signal.SIGKILL, watcher.stderr
    second = wait_for(lambda: _lock_pid(directory), what="the resumed runner")
    assert second != first
    try:
        with _db(home) as conn:
            resumed = conn.execute("SELECT count(*) FROM events WHERE execution=? AND "
                                   "type='execution.resumed'", (execution,)).fetchone()[0]
        assert resumed == 1  # recorded, so it counts towards MAX_RESUMES
        # the next pass sees the resumed runner alive: no second resume
        assert docket("tick").code == 0
        with _db(home) as conn:
            again = conn.execute("SELECT count(*) FROM events WHERE execution=? AND "
                                 "type='execution.resumed'", (execution,)).fetchone()[0]
        assert again == 1
    finally:
        cancelled = _stop_slow(docket, directory)
        assert cancelled.code == 0, cancelled.err


def test_a_runner_still_starting_is_alive_to_the_next_pass(tmp_path):
    """A watcher pass right after another pass started a runner must not take the
    still-starting runner for a dead one (and "resume" it: a second runner, and one of
    the few resumes an execution is allowed spent for nothing)."""
    from docket.engines.local import _CHILDREN, LocalEngine
    from docket.engines.localdag import lock_is_held

    (tmp_path / "sleep.sub").write_text("executable = /bin/sleep\narguments = 30\n"
                                        "universe = vanilla\nqueue\n")
    dag = tmp_path / "workflow.dag"
    dag.write_text("JOB a sleep.sub\n")
    starter = LocalEngine(max_jobs=1)
    starter.submit(dag)
    try:
        # another process's engine knows nothing of the child: only the lock tells it
        assert LocalEngine().alive(dag)
        pid = wait_for(lambda: _lock_pid(tmp_path), what="the runner's PID")
        assert pid == _CHILDREN[dag].pid  # the runner this process started
    finally:
        LocalEngine().cancel(dag)
        wait_for(lambda: not lock_is_held(tmp_path / "workflow.dag.lock"),
                 what="the runner to stop")
        starter.reap()


def test_a_cancelled_execution_whose_runner_died_unrecorded_is_removed_not_resumed(
        home, docket):
    """A cancel's SIGTERM that reaches a runner still starting (before its handler is
    set) kills it without a result; the pass that reads the DAG next must record the
    removal, not resume the workflow the analyst cancelled (CI once saw the cancelled
    'slow' request start again, its 60 s job and all)."""
    from docket.home import resolve_home
    from docket.watcher import Watcher

    # the runner dies as an early SIGTERM kills it: no metrics, no dagman.out ending
    execution, directory, _ = _slow_request_with_its_runner_killed(home, docket)
    assert docket("cancel", "slow", "--reason", "not needed").code == 0
    watcher = Watcher(resolve_home(home))
    try:
        # the part of the pass that follows running DAGs, on its own: the cancel's
        # signal has gone out (stop_cancelled) and the runner is gone
        assert watcher.launcher.follow_running() == [execution]
    finally:
        watcher.close()
    try:
        assert _lock_pid(directory) is None  # nothing runs the cancelled DAG
        with _db(home) as conn:
            events = [row[0] for row in conn.execute(
                "SELECT type FROM events WHERE execution=? ORDER BY id", (execution,))]
        assert "execution.resumed" not in events
        assert events[-1] == "execution.finished"
        shown = docket("show", "slow", "--json")
        assert shown.code == 0
        run = json.loads(shown.out)["executions"][0]
        assert run["state"] == "cancelled" and run["engine_state"] == "done"
        assert json.loads((directory / "workflow.dag.metrics").read_text())["status"] \
            == "removed"
    finally:
        _stop_slow(docket, directory)  # nothing to cancel when it passes
