"""Hand-offs run as their own processes, beside the watcher's passes, with a crash-safe
record: a slow one delays no other request, a restarted watcher does not start it twice,
and a killed one is started again once.

The calibration's ``conveyor --deliver`` hand-off is made slow: the home's tools folder
is the venv's, except that ``conveyor`` first notes its pid, then waits for a release
file the test creates, then runs the real conveyor."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import BIN, drop, request_doc
from tests.loopback import wait_for
from tests.workflows.conftest import tools_config
from tests.workflows.test_workflows_vela import request


@pytest.fixture
def slow(home: Path, fake_archive: Path, tmp_path: Path,
         monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    monkeypatch.setenv("DOCKET_TOOLS_CONFIG", str(tools_config(home, fake_archive)))
    tools = tmp_path / "tools"
    tools.mkdir()
    for tool in BIN.iterdir():
        if tool.is_file() and os.access(tool, os.X_OK) and tool.name != "conveyor":
            (tools / tool.name).symlink_to(tool)
    starts, release = tmp_path / "conveyor.starts", tmp_path / "release"
    (tools / "conveyor").write_text(
        f"#!/bin/sh\necho $$ >> {starts}\n"
        f"while [ ! -e {release} ]; do sleep 0.05; done\n"
        f'exec {BIN / "conveyor"} "$@"\n')
    (tools / "conveyor").chmod(0o755)
    (home / "docket.yaml").write_text(f"tools_dir: {tools}\n")
    return {"starts": starts, "release": release}


def _watch(home: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([str(BIN / "docket"), "watch", "--home", str(home)],
                                stdout=out, stderr=out)


def _stop(watcher: subprocess.Popen[bytes]) -> None:
    if watcher.poll() is None:
        watcher.send_signal(signal.SIGTERM)
        watcher.wait(timeout=120)


def _starts(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def _events(docket, name: str, kind: str) -> list[dict]:
    return [e for e in docket("history", name, "--json").json()["events"]
            if e["type"] == kind]


def _state(docket, name: str) -> str | None:
    shown = docket("show", name, "--json")
    return shown.json()["request"]["state"] if shown.code == 0 else None


def test_a_slow_hand_off_delays_no_other_request_and_survives_a_watcher_kill(
        home, docket, slow, tmp_path):
    log = tmp_path / "watch.log"
    watcher = _watch(home, log)
    try:
        drop(home, "cal.yaml", request("cal-h", "calibration"))
        wait_for(lambda: _starts(slow["starts"]), 180, "the conveyor hand-off to start")
        # the hand-off blocks; another request is taken in, run and finished meanwhile
        drop(home, "other.yaml", request_doc("other", sleep_s=0))
        wait_for(lambda: _state(docket, "other") == "complete", 120,
                 "the other request to complete while the hand-off runs")
        assert not slow["release"].exists() and len(_starts(slow["starts"])) == 1
        (handoff,) = _events(docket, "cal-h", "handoff.started")
        assert handoff["data"]["action"] == "conveyor --deliver"
        # the watcher dies mid hand-off; its successor finds it still running
        watcher.send_signal(signal.SIGKILL)
        watcher.wait(timeout=60)
        watcher = _watch(home, log)
        wait_for(lambda: docket("show", "cal-h", "--json").code == 0, 60, "the new watcher")
        slow["release"].touch()
        wait_for(lambda: _events(docket, "cal-h", "handoff.done"), 120,
                 "the hand-off to be recorded done")
    finally:
        _stop(watcher)
    assert len(_starts(slow["starts"])) == 1  # never started twice
    assert len(_events(docket, "cal-h", "handoff.started")) == 1
    assert len(_events(docket, "cal-h", "handoff.done")) == 1
    assert not _events(docket, "cal-h", "handoff.failed")
    execution = docket("show", "cal-h", "--json").json()["executions"][0]
    assert execution["state"] == "awaiting-qa"
    assert (Path(execution["directory"]) / "products").is_symlink()  # in the QA area
    assert (home / "qa" / "cal-h.v1.e1" / "products").is_dir()
    assert docket("rebuild-state", "--check").code == 0


def test_a_killed_hand_off_is_started_again_once(home, docket, slow, tmp_path):
    watcher = _watch(home, tmp_path / "watch.log")
    try:
        drop(home, "cal.yaml", request("cal-k", "calibration"))
        (first,) = wait_for(lambda: _starts(slow["starts"]), 180, "the hand-off to start")
        os.killpg(os.getpgid(first), signal.SIGKILL)  # the hand-off and its tool
        starts = wait_for(lambda: _starts(slow["starts"])[1:], 120, "a second start")
        slow["release"].touch()
        wait_for(lambda: _events(docket, "cal-k", "handoff.done"), 120, "the hand-off done")
    finally:
        _stop(watcher)
    assert len(starts) == 1 and len(_starts(slow["starts"])) == 2
    (failed,) = _events(docket, "cal-k", "handoff.failed")
    assert failed["data"]["killed"] is True and failed["data"]["final"] is False
    assert failed["data"]["reason"] == "the hand-off was killed before it finished"
    assert [e["data"]["attempt"] for e in _events(docket, "cal-k", "handoff.started")] == [
        1, 2]
    assert len(_events(docket, "cal-k", "handoff.done")) == 1
    execution = docket("show", "cal-k", "--json").json()["executions"][0]
    assert (Path(execution["directory"]) / "products").is_symlink()
    # what a DA following the request reads (it now waits for QA: exit code 4)
    followed = docket("follow", "cal-k")
    assert followed.code == 4, followed.err
    said = [line.split("  ", 1)[1] for line in followed.out.splitlines()
            if "hand-off" in line]
    assert said == ["hand-off conveyor --deliver started (attempt 1)",
                    "hand-off conveyor --deliver failed, to be tried again (the hand-off "
                    "was killed before it finished)",
                    "hand-off conveyor --deliver started (attempt 2)",
                    "hand-off conveyor --deliver done"], followed.out


def test_a_hand_off_killed_twice_fails_for_good_and_says_so(home, docket, slow, tmp_path):
    watcher = _watch(home, tmp_path / "watch.log")
    try:
        drop(home, "cal.yaml", request("cal-2k", "calibration"))
        for count in (1, 2):
            pid = wait_for(lambda count=count: _starts(slow["starts"])[count - 1:], 180,
                           f"start {count}")[0]
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        wait_for(lambda: [e for e in _events(docket, "cal-2k", "handoff.failed")
                          if e["data"]["final"]], 120, "the final failure")
    finally:
        _stop(watcher)
    assert len(_starts(slow["starts"])) == 2  # not a third time
    notes = [e["data"]["message"] for e in _events(docket, "cal-2k", "notification")]
    assert any("'conveyor --deliver' failed 2 times: the hand-off was killed" in n
               for n in notes), notes
