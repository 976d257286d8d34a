"""The docket CLI: help everywhere, one-line errors, JSON for scripts, docs that match."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import BIN, REPO, drop, request_doc, run_docket

COMMANDS = ["submit", "validate", "watch", "tick", "status", "show", "cancel",
            "rebuild-state", "queue", "queue list", "queue pause", "queue resume",
            "queue limit", "queue enable", "queue disable", "qa", "qa pass", "qa fail",
            "qa retry", "approve", "reject", "resubmit", "seal", "mediate", "results",
            "history", "metrics", "analysts", "analysts list", "analysts add",
            "analysts remove", "inspect", "pause", "resume", "init", "dag", "dag run",
            "dag check"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_and_is_documented(command):
    result = run_docket(*command.split(), "--help")
    assert result.code == 0 and "Usage: docket " + command in " ".join(result.out.split())
    readme = (REPO / "README.md").read_text()
    assert f"docket {command.split()[0]}" in readme


def test_usage_errors_exit_2_with_one_line():
    result = run_docket("status", "--no-such-flag")
    assert result.code == 2 and "No such option: --no-such-flag" in result.err
    assert "Traceback" not in result.err


def test_json_errors_for_scripts(home):
    result = run_docket("show", "nothing", "--json", "--home", str(home / "nowhere"))
    assert result.code == 3
    database = home / "nowhere" / "state" / "docket.db"
    assert result.json() == {"docket": 1, "ok": False, "error": {
        "code": "not-found", "message": f"no docket database at {database} — run 'docket "
                                        "tick' or 'docket watch' in this home first"}}


def test_the_installed_script_runs_a_request(home):
    drop(home, "a.yaml", request_doc("from-shell"))
    env = {**os.environ, "DOCKET_HOME": str(home)}
    out = subprocess.run([str(BIN / "docket"), "tick", "--wait"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "accepted: a.yaml → from-shell v1" in out.stdout
    status = subprocess.run([str(BIN / "docket"), "status"], env=env, capture_output=True,
                            text=True)
    assert "1 requests: 1 complete" in status.stdout


# What `docket status` must not pay for at start-up (issue 10's ≤ 150 ms): the document
# models, YAML, templates, the HTCondor bindings, sqlite-utils, the watcher, rich help.
HEAVY = ["pydantic", "yaml", "jinja2", "htcondor2", "htcondor", "sqlite_utils", "watchfiles",
         "rich", "docket.intake", "docket.rules", "docket.watcher", "docket.engines"]
_LOADED = """
import sys
from cli.docket import main
try:
    main()
except SystemExit as exc:
    code = exc.code
print(code, " ".join(sorted(sys.modules)), file=sys.stderr)
"""


def test_status_imports_nothing_heavy(home, docket):
    docket("tick")
    done = subprocess.run([str(BIN / "python"), "-c", _LOADED, "status", "--home", str(home)],
                          capture_output=True, text=True, timeout=60)
    code, modules = done.stderr.strip().splitlines()[-1].split(" ", 1)
    assert code == "0" and "0 requests" in done.stdout
    loaded = set(modules.split())
    assert [m for m in HEAVY if m in loaded] == []
    # and the commands' modules that status does not use stay unread
    assert not {"docket.drivers", "docket.report"} - loaded
    assert not loaded & {"docket.decisions", "docket.launch", "docket.render"}


def test_restarting_the_watcher_never_kills_or_repeats_a_workflow(home, docket):
    docket("tick")
    drop(home, "long.yaml", request_doc("long-run", sleep_s=3))
    watch = subprocess.Popen([str(BIN / "docket"), "watch", "--home", str(home)],
                             stderr=subprocess.DEVNULL)
    db = home / "state" / "docket.db"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with sqlite3.connect(db) as conn:
                running = conn.execute("SELECT count(*) FROM nodes WHERE state='running'"
                                       ).fetchone()[0]
            if running:
                break
            time.sleep(0.05)
        assert running, "the node never started"
        watch.send_signal(signal.SIGKILL)
        watch.wait()
        directory = Path(docket("show", "long-run", "--json").json()["executions"][0][
            "directory"])
        from docket.engines.localdag import lock_is_held

        assert lock_is_held(directory / "workflow.dag.lock"), "the workflow died with the watcher"
        watch = subprocess.Popen([str(BIN / "docket"), "watch", "--home", str(home)],
                                 stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if docket("show", "long-run", "--json").json()["request"]["state"] == "complete":
                break
            time.sleep(0.2)
    finally:
        watch.terminate()
        watch.wait(timeout=20)
    shown = docket("show", "long-run", "--json", "--events", "100").json()
    assert shown["request"]["state"] == "complete"
    kinds = [e["type"] for e in shown["events"]]
    assert kinds.count("node.submitted") == 1 and kinds.count("node.finished") == 1
    assert kinds.count("execution.finished") == 1
    assert (directory / "null.runs").read_text().strip() == "1"


def test_watch_with_polling_picks_up_files(home, docket):
    docket("tick")
    watch = subprocess.Popen([str(BIN / "docket"), "watch", "--poll", "--home", str(home)],
                             stderr=subprocess.DEVNULL)
    try:
        drop(home, "polled.yaml", request_doc("polled"))
        archive = home / "spool" / "accepted" / "polled" / "v1.yaml"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not archive.exists():
            time.sleep(0.05)
        assert archive.exists()
    finally:
        watch.terminate()
        assert watch.wait(timeout=20) == 0


def test_pause_holds_a_running_workflow_and_resume_releases_it(home, docket):
    drop(home, "two.yaml", request_doc("two-steps", "demo", targets=["a"], sleep_s=1.0))
    docket("tick")
    db = home / "state" / "docket.db"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        docket("tick")
        with sqlite3.connect(db) as conn:
            if conn.execute("SELECT count(*) FROM nodes WHERE node='fetch' AND "
                            "state='running'").fetchone()[0]:
                break
        time.sleep(0.05)
    result = docket("pause", "two-steps", "--reason", "disk nearly full", "--json")
    assert result.code == 0, result.err
    assert result.json()["action"] == "held"
    time.sleep(2.5)  # fetch (1 s) ends while held; nothing after it may start
    docket("tick")
    with sqlite3.connect(db) as conn:
        states = dict(conn.execute("SELECT node, state FROM nodes").fetchall())
    assert states.get("fetch") == "done" and "process_0" not in states
    assert docket("resume", "two-steps").code == 0
    assert docket("tick", "--wait").code == 0
    shown = docket("show", "two-steps", "--json", "--events", "200").json()
    assert shown["request"]["state"] == "complete"
    kinds = [e["type"] for e in shown["events"]]
    assert "execution.held" in kinds and "execution.released" in kinds
    directory = Path(shown["executions"][0]["directory"])
    out = (directory / "workflow.dag.dagman.out").read_text()
    assert "held: running jobs go on, no new job starts" in out
    not_running = docket("pause", "two-steps")
    assert not_running.code == 8 and "is not running" in not_running.err
