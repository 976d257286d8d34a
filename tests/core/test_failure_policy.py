"""The failure policy, sites and output checks on the local engine, through spool and CLI."""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml

from tests.conftest import drop, request_doc


def _capability(home: Path, name: str, sub: str, extra: str = "", dag: str | None = None,
                files: dict[str, str] | None = None) -> None:
    folder = home / "templates" / name
    folder.mkdir()
    (folder / "capability.yaml").write_text(f"name: {name}\n{extra}")
    (folder / "workflow.dag.j2").write_text(dag or "JOB work work.sub\n")
    (folder / "work.sub.j2").write_text(sub)
    for fname, text in (files or {}).items():
        (folder / fname).write_text(text)


SH = ("executable = /bin/sh\narguments = {{ ['-c', script] | arguments }}\n"
      "should_transfer_files = NO\noutput = work.out\nerror = work.err\n"
      "request_memory = 100MB\nqueue\n")


def _sh(script: str) -> str:
    return SH.replace("script", repr(script))


def test_signal_9_is_retried_once_then_the_dag_reruns_only_what_failed(home, docket):
    # first attempt: the job is killed by SIGKILL; the rerun succeeds
    script = "n=$(cat count 2>/dev/null || echo 0); echo $((n+1)) > count; " \
             "[ $n -ge 1 ] || kill -9 0"
    _capability(home, "flaky", _sh(script),
                dag="JOB first first.sub\nJOB work work.sub\nPARENT first CHILD work\n",
                files={"first.sub.j2": "executable = /bin/sh\narguments = \"-c 'echo x >> "
                                       "first.runs'\"\nshould_transfer_files = NO\nqueue\n"})
    drop(home, "a.yaml", request_doc("killed-once", "flaky"))
    assert docket("tick", "--wait").code == 0
    shown = docket("show", "killed-once", "--json", "--events", "200").json()
    execution = shown["executions"][0]
    assert shown["request"]["state"] == "complete" and execution["retries"] == 1
    decided = [e["data"] for e in shown["events"] if e["type"] == "policy.decided"]
    assert decided == [{**decided[0], "node": "work", "action": "retry", "rule_index": 3}]
    assert "signal 9" in decided[0]["rule"]
    directory = Path(execution["directory"])
    assert (directory / "first.runs").read_text() == "x\n", "a done node ran again"
    assert (directory / "workflow.dag.metrics.attempt1").exists()
    human = docket("show", "killed-once").out
    assert "attempt 1 failed" in human and "rule #3" in human


def test_a_program_error_fails_at_once(home, docket):
    _capability(home, "broken", _sh("echo 'ERROR: no such field' >&2; exit 2"))
    drop(home, "a.yaml", request_doc("broken-1", "broken"))
    docket("tick", "--wait")
    shown = docket("show", "broken-1", "--json", "--events", "100").json()
    assert shown["request"]["state"] == "failed"
    assert shown["executions"][0]["reason"] == "node work: job exited with 2"
    decided = [e["data"] for e in shown["events"] if e["type"] == "policy.decided"]
    assert [d["action"] for d in decided] == ["fail"] and decided[0]["rule_index"] == 4
    inspected = docket("inspect", "broken-1", "--json").json()
    assert "ERROR: no such field" in str(inspected)


def test_a_log_pattern_rule_and_more_memory(home, docket):
    policy = """failure_policy:
  rules:
    - match: {log: {file: work.err, pattern: "MemoryError"}}
      action: retry-with-more-memory
      factor: 2
      cap_mb: 1000
      limit: 2
"""
    script = ("n=$(cat count 2>/dev/null || echo 0); echo $((n+1)) > count; "
              "[ $n -ge 1 ] || { echo MemoryError >&2; exit 5; }")
    _capability(home, "hungry", _sh(script), extra=policy)
    drop(home, "a.yaml", request_doc("hungry-1", "hungry"))
    docket("tick", "--wait")
    shown = docket("show", "hungry-1", "--json", "--events", "100").json()
    assert shown["request"]["state"] == "complete"
    decided = [e["data"] for e in shown["events"] if e["type"] == "policy.decided"][0]
    assert decided["action"] == "retry-with-more-memory"
    assert decided["adjustments"] == {"request_memory_mb": 200}
    directory = Path(shown["executions"][0]["directory"])
    adjusted = (directory / "work.work.adjusted.sub").read_text()
    assert "request_memory = 200" in adjusted
    assert "work.work.adjusted.sub" in (directory / "workflow.dag").read_text()
    assert docket("rebuild-state", "--check").code == 0


def test_a_missing_input_is_a_transfer_hold_retried_with_backoff(home, docket):
    policy = """failure_policy:
  rules:
    - match: {hold_code: 13}
      action: retry
      limit: 1
      backoff_s: 0.5
"""
    sub = ("executable = /bin/true\nshould_transfer_files = YES\n"
           "transfer_input_files = never-there.ms\nqueue\n")
    _capability(home, "fetchy", sub, extra=policy)
    drop(home, "a.yaml", request_doc("fetchy-1", "fetchy"))
    docket("tick", "--wait")
    shown = docket("show", "fetchy-1", "--json", "--events", "100").json()
    assert shown["request"]["state"] == "failed"
    execution = shown["executions"][0]
    assert execution["retries"] == 1
    assert "never-there.ms" in execution["reason"]
    actions = [e["data"]["action"] for e in shown["events"] if e["type"] == "policy.decided"]
    assert actions == ["retry", "fail"]
    node = execution["nodes"][0]
    assert node["hold_code"] == 13 and node["attempts"] == 2


def test_declared_outputs_are_checked_and_checksummed(home, docket):
    extra = """stages:
  - name: image
    nodes: [work]
    outputs:
      - {path: "products/*.fits", min_size_bytes: 4}
"""
    _capability(home, "imager", _sh("mkdir -p products; printf 'FITS' > products/a.fits"),
                extra=extra)
    drop(home, "ok.yaml", request_doc("imaged", "imager"))
    doc = yaml.safe_load(request_doc("needs-more", "imager"))
    doc["spec"]["outputs"] = [{"path": "products/weblog.tgz"}]
    drop(home, "more.yaml", yaml.safe_dump(doc))
    docket("tick", "--wait")
    good = docket("show", "imaged", "--json").json()
    assert good["request"]["state"] == "complete"
    products = docket("results", "--json").json()["executions"]
    mine = next(e for e in products if e["request"] == "imaged")
    assert mine["products"] == [{"path": "products/a.fits", "size_bytes": 4,
                                 "sha256": hashlib.sha256(b"FITS").hexdigest()}]
    bad = docket("show", "needs-more", "--json").json()
    assert bad["request"]["state"] == "failed"
    assert "products/weblog.tgz" in bad["executions"][0]["reason"]


def test_sites_choose_where_an_execution_runs(home, docket):
    (home / "sites.yaml").write_text("""default: [local]
sites:
  - name: far-away
    enabled: false
    schedd: {collector: cm.example.org, name: schedd.example.org}
""")
    doc = yaml.safe_load(request_doc("placed"))
    doc["spec"]["cluster_locations"] = ["far-away", "local"]
    drop(home, "a.yaml", yaml.safe_dump(doc))
    doc = yaml.safe_load(request_doc("nowhere"))
    doc["spec"]["cluster_locations"] = ["far-away"]
    drop(home, "b.yaml", yaml.safe_dump(doc))
    docket("tick", "--wait")
    placed = docket("show", "placed", "--json", "--events", "100").json()
    assert placed["request"]["state"] == "complete"
    assert placed["executions"][0]["site"] == "local"
    starting = [e for e in placed["events"] if e["type"] == "execution.starting"][0]
    assert starting["data"]["site"] == "local"
    waiting = docket("show", "nowhere", "--json").json()
    assert waiting["request"]["state"] == "queued"
    unavailable = [e for e in docket("history", "nowhere", "--json").json()["events"]
                   if e["type"] == "site.unavailable"]
    assert len(unavailable) == 1 and "far-away is disabled" in unavailable[0]["data"]["reason"]
