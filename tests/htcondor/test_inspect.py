"""docket inspect: a failed local run shows its failing node's stderr; an HTCondor run shows
hold reasons and the exact condor_q / condor_ssh_to_job commands to run next."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

from cli.common import run
from cli.inspect import app
from docket.engines.nodelog import read_node_events
from docket.store import Store
from tests.conftest import drop, request_doc
from tests.htcondor.condorkit import DATA, TEMPLATES, render


def inspect(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run(app, [str(a) for a in args], prog="docket inspect")
    return code, out.getvalue(), err.getvalue()


def test_a_failed_local_run_shows_the_failing_nodes_output(home, docket):
    drop(home, "bad.yaml", request_doc("bad-run", "demo", targets=["m31", "m51"],
                                       fail_item="m51"))
    assert docket("tick", "--wait").code == 0
    code, out, err = inspect("bad-run", "--home", home)
    assert code == 0, err
    directory = home / "work" / "bad-run" / "v1" / "e1"
    assert f"directory: {directory}" in out
    assert "bad-run v1 e1 (execution 1): failed on site local (local, local:" in out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("NODE"))
    assert lines[header].split() == ["NODE", "STATE", "ENGINE", "SITE", "HOST", "ATTEMPTS",
                                     "EXIT", "HOLD"]
    row = next(line for line in lines if line.startswith("process_1 "))
    assert row.split()[:3] == ["process_1", "failed", "local"]
    assert row.split()[-1] == "1"
    assert f"  stdout of proc 0: {directory / 'process_1.out'}" in out
    assert "    | processed item m51" in out
    assert ("node process_1: exited with 1\n  failure policy (decided): fail (rule #4 "
            "exit_code 1,2 -> fail)") in out
    assert "next:" not in out  # nothing to ask a pool
    assert f"  {directory / 'workflow.dag.dagman.out'}" in out

    code, out, _ = inspect("bad-run", "--home", home, "--json")
    data = json.loads(out)
    assert data["ok"] and data["execution"]["engine"] == "local"
    failing = {f["node"]: f for f in data["failing"]}
    assert list(failing) == ["process_1"]
    stdout = failing["process_1"]["procs"][0]["stdout"]
    assert stdout["path"] == str(directory / "process_1.out")
    assert "processed item m51" in stdout["lines"]
    assert {n["node"]: n["state"] for n in data["nodes"]} == {
        "fetch": "done", "process_0": "done", "process_1": "failed"}


def test_unknown_request_is_a_one_line_error(home, docket):
    drop(home, "ok.yaml", request_doc("fine"))
    docket("tick", "--wait")
    code, out, err = inspect("nope", "--home", home)
    assert code == 3
    assert err == "Error: no request named 'nope' — see 'docket status' for the names\n"
    code, out, err = inspect("nope", "--home", home, "--json")
    assert json.loads(out)["error"]["code"] == "not-found"


def _htcondor_home(root: Path) -> Path:
    """A home whose one execution ran on site chtc: events as the watcher records them,
    node events from the hand-written node log."""
    (root / "state").mkdir(parents=True)
    shutil.copytree(TEMPLATES, root / "templates")
    (root / "sites.yaml").write_text(
        "sites:\n  - name: chtc\n    schedd: {collector: cm.chtc.wisc.edu, name: "
        "ap40.uw.osg-htc.org}\n")
    rendered, parameters = render("demo", root / "work" / "e1", {"targets": ["a", "b", "c"]},
                                  request="sky-1")
    directory = rendered.directory
    shutil.copy(DATA / "holds.nodes.log", directory / "workflow.dag.nodes.log")
    (directory / "deliver.err").write_text("delivering\nsummary.txt not written: disk full\n")
    events, _ = read_node_events(rendered.dag, None)
    store = Store(root / "state" / "docket.db")
    common = {"request": "sky-1", "version": 1, "execution": 1}
    store.record("version.accepted", request="sky-1", version=1, capability="demo",
                 sha256="0" * 64, spec={"capability": "demo"}, document="{}")
    store.record("execution.created", **common, number=1, capability="demo", state="running",
                 priority=0, parameters=parameters)
    store.record("execution.starting", **common, directory=str(directory), engine="htcondor",
                 site="chtc")
    store.record("execution.submitted", **common, engine="htcondor",
                 engine_id="condor:ap40.uw.osg-htc.org:2041")
    for event in events:
        kind = event.pop("type")
        store.record(kind, **common, **event)
    # the watcher records each decision it acts on: the transfer retry was already used once
    store.record("policy.decided", **common, node="deliver", action="retry", rule_index=2)
    store.record("node.submitted", **common, node="extra", cluster=105, proc=0)
    store.record("node.started", **common, node="extra", cluster=105, proc=0,
                 host="<10.0.0.9:9618?addrs=10.0.0.9-9618&alias=node9.example.org>")
    store.close()
    return directory


def test_an_htcondor_run_shows_holds_and_the_commands_to_run_next(tmp_path):
    home = tmp_path / "home"
    directory = _htcondor_home(home)
    (directory / "workflow.dag.condor.json").write_text(json.dumps(
        {"state": "submitted", "cluster": 2041, "schedd": "ap40.uw.osg-htc.org"}))
    shutil.copy(DATA / "dagman" / "held.dagman.log", directory / "workflow.dag.dagman.log")
    code, out, err = inspect("sky-1", "--home", home)
    assert code == 0, err
    assert "\nDAGMan job: held (paused by docket)\n" in out
    assert ("sky-1 v1 e1 (execution 1): running on site chtc (htcondor, "
            "condor:ap40.uw.osg-htc.org:2041, engine running)") in out
    row = next(line for line in out.splitlines() if line.startswith("deliver "))
    assert "held" in row and "htcondor" in row and "chtc" in row
    assert "12/2 Transfer output files failure" in row
    assert "    | summary.txt not written: disk full" in out
    assert ("node process_0: held, then removed (code 34/0): Error from "
            "slot1_2@node9.example.org: Job has gone over cgroup memory limit") in out
    assert ("  failure policy: retry-with-more-memory (rule #1 hold_code 34 -> "
            "retry-with-more-memory (limit 3, x2 up to 65536 MB): retry 1 of 3, "
            "request_memory 64 MB -> 128 MB)") in out
    assert "  failure policy: retry, after 120s (rule #2 hold_code 12,13 -> retry (limit 3, " \
           "backoff 60s x2): retry 2 of 3)" in out
    assert "node process_1: killed by signal 9\n  failure policy: retry (rule #3" in out
    target = "-name ap40.uw.osg-htc.org -pool cm.chtc.wisc.edu"
    for command in (f"condor_q {target} -nobatch -dag 2041",
                    f"condor_q {target} -better-analyze 104",
                    f"condor_release {target} 104",
                    f"condor_ssh_to_job {target} 105.0"):
        assert f"  {command}    # " in out, command

    code, out, _ = inspect("sky-1", "--home", home, "--json")
    data = json.loads(out)
    nodes = {n["node"]: n for n in data["nodes"]}
    assert (nodes["process_0"]["hold_code"], nodes["process_0"]["state"]) == (34, "failed")
    assert nodes["process_0"]["host"].startswith("<10.0.0.9:9618")
    assert nodes["deliver"]["hold_reason"].startswith("Transfer output files failure")
    assert nodes["deliver"]["host_name"] == "node7.example.org"
    assert nodes["fetch"]["hold_code"] is None  # held once, released, then done
    policy = {f["node"]: f["policy"]["action"] for f in data["failing"]}
    assert policy == {"process_0": "retry-with-more-memory", "process_1": "retry",
                      "process_2": "fail", "deliver": "retry"}
    assert {f["node"] for f in data["failing"]} == {"process_0", "process_1", "process_2",
                                                    "deliver"}
    commands = [c["command"] for c in data["commands"]]
    assert f"condor_ssh_to_job {target} 105.0" in commands
    assert data["execution"]["directory"] == str(directory)


def test_inspect_never_writes(tmp_path):
    home = tmp_path / "home"
    directory = _htcondor_home(home)

    def seen() -> dict[Path, object]:
        files = {p: p.stat().st_mtime_ns for p in directory.rglob("*")}
        files[home / "state" / "docket.db"] = (home / "state" / "docket.db").read_bytes()
        return files

    before = seen()
    inspect("sky-1", "--home", home, "--json")
    assert seen() == before


def test_the_command_mounts_on_another_typer_app(home, docket):
    import typer

    from cli.inspect import inspect as inspect_command

    host = typer.Typer()
    host.command("inspect")(inspect_command)
    host.command("other")(lambda: 0)
    drop(home, "ok.yaml", request_doc("fine"))
    docket("tick", "--wait")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = run(host, ["inspect", "fine", "--home", str(home), "--json"], prog="docket")
    assert code == 0
    assert json.loads(out.getvalue())["execution"]["state"] == "complete"
