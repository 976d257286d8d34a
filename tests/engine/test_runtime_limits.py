"""Maximum runtime and concurrency limits on the local engine, as HTCondor honours them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import htcondor2

os.environ.setdefault("CONDOR_CONFIG", "/dev/null")


def _run(directory: Path, *extra: str) -> dict:
    subprocess.run([sys.executable, "-m", "docket.engines.localdag", "workflow.dag",
                    "--max-jobs", "4", *extra], cwd=directory, check=False, timeout=120)
    return json.loads((directory / "workflow.dag.metrics").read_text())


def test_a_job_over_its_allowed_duration_is_held_with_code_47(tmp_path):
    (tmp_path / "slow.sub").write_text("executable = /bin/sleep\narguments = 30\n"
                                       "allowed_execute_duration = 1\n"
                                       "should_transfer_files = NO\nqueue\n")
    (tmp_path / "workflow.dag").write_text("JOB slow slow.sub\n")
    metrics = _run(tmp_path)
    assert metrics["status"] == "failed"
    assert "allowed_execute_duration of 1 seconds" in metrics["failed_nodes"]["slow"]
    holds = [e for e in htcondor2.JobEventLog(str(tmp_path / "workflow.dag.nodes.log"))
             .events(0) if e.type == htcondor2.JobEventType.JOB_HELD]
    assert [(h["HoldReasonCode"], h["HoldReason"]) for h in holds] == [
        (47, "The job exceeded allowed_execute_duration of 1 seconds")]


def test_concurrency_limits_bound_jobs_sharing_a_name(tmp_path):
    # four jobs, each records when it starts and ends; the limit lets two run at once
    script = ('echo start $(date +%s.%N) >> times.$(Process); sleep 0.6; '
              'echo end $(date +%s.%N) >> times.$(Process)')
    (tmp_path / "lim.sub").write_text(
        "executable = /bin/sh\n"
        f"arguments = \"-c '{script}'\"\n"
        "concurrency_limits = archive_io:2\nshould_transfer_files = NO\nqueue 4\n")
    (tmp_path / "workflow.dag").write_text("JOB lim lim.sub\n")
    metrics = _run(tmp_path, "--limit", "archive_io=4")
    assert metrics["status"] == "complete"
    spans = []
    for i in range(4):
        lines = (tmp_path / f"times.{i}").read_text().split()
        spans.append((float(lines[1]), float(lines[3])))
    for start, _end in spans:
        running = sum(1 for s, e in spans if s <= start < e)
        assert running <= 2, spans
    out = (tmp_path / "workflow.dag.dagman.out").read_text()
    assert "not limited here" not in out


def test_an_unset_limit_is_said_and_not_enforced(tmp_path):
    (tmp_path / "a.sub").write_text("executable = /bin/true\nconcurrency_limits = tape\n"
                                    "should_transfer_files = NO\nqueue 2\n")
    (tmp_path / "workflow.dag").write_text("JOB a a.sub\n")
    assert _run(tmp_path)["status"] == "complete"
    assert "concurrency limit 'tape' has no value on this machine" in (
        tmp_path / "workflow.dag.dagman.out").read_text()
