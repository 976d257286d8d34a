"""``docket follow`` over the split fan-out: a DA following a seci_split_measurement_sets
run from another shell sees the split, then each piece's node start and finish, inside
the "running CASA" stage, to the end."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import BIN, drop
from tests.loopback import wait_for
from tests.workflows.conftest import tools_config
from tests.workflows.test_workflows_vela import request

PIECES = ["J1331+3030", "T1", "T2"]


@pytest.fixture
def watched(home: Path, fake_archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DOCKET_TOOLS_CONFIG", str(tools_config(home, fake_archive)))
    with open(tmp_path / "watch.log", "ab") as log:
        watcher = subprocess.Popen([str(BIN / "docket"), "watch", "--home", str(home)],
                                   stdout=log, stderr=log)
    try:
        yield home
    finally:
        watcher.send_signal(signal.SIGTERM)
        watcher.wait(timeout=120)


def _follow(home: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    wait_for(lambda: subprocess.run([str(BIN / "docket"), "show", "split-f", "--home",
                                     str(home)], capture_output=True).returncode == 0,
             120, "the request to be taken in")
    return subprocess.run([str(BIN / "docket"), "follow", "split-f", *extra, "--home",
                           str(home)], capture_output=True, text=True, timeout=300)


def _between(lines: list[str], first: str, last: str) -> list[str]:
    (start,) = [i for i, line in enumerate(lines) if line.endswith(first)]
    (end,) = [i for i, line in enumerate(lines) if line.endswith(last)]
    assert start < end, (first, last)
    return lines[start + 1:end]


def test_follow_prints_every_split_node_inside_running_casa_to_the_end(watched):
    drop(watched, "split.yaml", request("split-f", "seci_split_measurement_sets",
                                        pieces=PIECES))
    done = _follow(watched)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "accepted: version 1 from split.yaml" in lines[0]
    assert lines[-1] == "split-f is complete"
    # the stage is entered once and left once: not "left" when the split is done and
    # its pieces are not yet queued
    inside = _between(lines, "stage running-casa entered: running CASA",
                      "stage running-casa left (done): running CASA")
    for node in ["casa"] + [f"casa_{i}" for i in range(len(PIECES))]:
        # (the line of the event that enters a stage comes before the stage's line)
        mine = [line.split("  ", 1)[1] for line in lines if f"node {node} " in line]
        assert mine[0] == f"node {node} queued", (node, mine)
        assert mine[1].startswith(f"node {node} started"), (node, mine)
        assert mine[2] == f"node {node} finished with exit code 0", (node, mine)
        assert len(mine) == 3, (node, mine)
        assert [line for line in inside if line.endswith(mine[2])], (node, inside)
    # the split's own end does not leave the stage: its pieces are queued inside it
    assert not [line for line in _between(lines, "node casa finished with exit code 0",
                                          "node casa_0 queued") if "stage" in line]
    after = lines[lines.index(next(x for x in lines if x.endswith("left (done): running CASA"))):]
    assert any(line.endswith("stage post-casa entered: post-CASA work") for line in after)
    assert any(line.endswith("state executing → complete [succeed]") for line in after)

    # the same run as JSON: each event once, the stages in order, every piece finished
    replay = _follow(watched, "--json")
    assert replay.returncode == 0, replay.stderr
    events = [json.loads(line) for line in replay.stdout.splitlines()]
    assert events[-1]["outcome"] == "complete"
    stages = [(e["type"], e["data"]["stage"]) for e in events
              if e["type"].startswith("stage.")]
    assert stages == [(kind, stage) for stage in ("gathering-data", "running-casa",
                                                  "post-casa")
                      for kind in ("stage.entered", "stage.left")]
    finished = sorted(e["data"]["node"] for e in events if e["type"] == "node.finished")
    assert finished == sorted(["fetch", "casa", "post"]
                              + [f"casa_{i}" for i in range(len(PIECES))])
    shown = subprocess.run([str(BIN / "docket"), "show", "split-f", "--home", str(watched)],
                           capture_output=True, text=True).stdout
    assert f"stage running-casa (running CASA): done ({len(PIECES) + 1}/{len(PIECES) + 1} " \
           "nodes)" in shown
