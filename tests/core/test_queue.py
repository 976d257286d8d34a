"""Queues: a limit on concurrent executions, pause and resume, priority then arrival."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.conftest import CURRENT_USER, drop, request_doc


def _start_order(home) -> list[str]:
    conn = sqlite3.connect(home / "state" / "docket.db")
    rows = conn.execute("SELECT e.request FROM events ev JOIN executions e ON e.id = "
                        "ev.execution WHERE ev.type='execution.starting' ORDER BY ev.id")
    return [r[0] for r in rows]


def test_paused_queue_holds_work_and_releases_it_in_priority_order(home, docket):
    docket("tick")
    assert docket("queue", "pause", "null").code == 0
    assert docket("queue", "limit", "null", "1").code == 0
    for name, priority in (("low", 0), ("high", 10), ("mid", 5), ("high-later", 10),
                           ("low-later", 0)):
        drop(home, f"{name}.yaml", request_doc(name, priority=priority))
        docket("tick")
    queues = {q["capability"]: q for q in docket("queue", "list", "--json").json()["queues"]}
    assert queues["null"]["paused"] is True and queues["null"]["waiting"] == 5
    assert queues["null"]["running"] == 0 and queues["null"]["oldest_wait"]
    assert docket("status", "--json").json()["counts"] == {"queued": 5}
    assert docket("queue", "resume", "null").code == 0
    assert docket("tick", "--wait").code == 0
    assert _start_order(home) == ["high", "high-later", "mid", "low", "low-later"]
    assert docket("status", "--json").json()["counts"] == {"complete": 5}


def test_the_limit_bounds_concurrent_executions(home, docket):
    docket("tick")
    docket("queue", "limit", "null", "2")
    for i in range(5):
        drop(home, f"r{i}.yaml", request_doc(f"r{i}", sleep_s=0.3))
    report = docket("tick", "--json").json()
    assert len(report["started"]) == 2
    queues = {q["capability"]: q for q in docket("queue", "list", "--json").json()["queues"]}
    assert queues["null"]["running"] == 2 and queues["null"]["waiting"] == 3
    docket("tick", "--wait")
    conn = sqlite3.connect(home / "state" / "docket.db")
    # replay the execution events: never more than two running at once
    running, peak = 0, 0
    for (kind,) in conn.execute("SELECT type FROM events WHERE type IN ('execution.starting', "
                                "'execution.finished') ORDER BY id"):
        running += 1 if kind == "execution.starting" else -1
        peak = max(peak, running)
    assert peak == 2


def test_queue_changes_are_documents_applied_with_the_actor(home, docket):
    docket("tick")
    result = docket("queue", "limit", "demo", "7", "--reason", "night shift", "--json")
    assert result.code == 0, result.err
    assert result.json()["status"] == "applied"
    assert result.json()["outcome"] == "queue demo: max_jobs=7"
    archived = home / "spool" / "accepted" / "_decisions" / f"{result.json()['document']}.yaml"
    assert "kind: QueueChange" in archived.read_text()
    conn = sqlite3.connect(home / "state" / "docket.db")
    actor, data = conn.execute("SELECT actor, data FROM events WHERE type='queue.changed'"
                               ).fetchone()
    assert actor == CURRENT_USER and '"reason":"night shift"' in data
    unknown = docket("queue", "pause", "nope")
    assert unknown.code == 1
    assert "was refused: spec.capability: unknown capability 'nope'" in unknown.err
    assert unknown.err.count("\n") == 1
    spooled = docket("queue", "resume", "demo", "--no-wait", "--json").json()
    assert spooled["status"] == "spooled" and Path(spooled["spooled"]).exists()


def test_queue_changes_need_an_operator(home, docket):
    (home / "analysts.yaml").write_text(f"analysts:\n  {CURRENT_USER}:\n    roles: [da]\n")
    docket("tick")
    result = docket("queue", "pause", "null")
    assert result.code == 1
    assert (f"queue changes need an analyst with the role 'operator'; {CURRENT_USER} has da"
            in result.err)
    assert docket("queue", "list", "--json").json()["queues"][1]["paused"] is False


def test_cancel_a_queued_and_a_running_request(home, docket):
    docket("tick")
    docket("queue", "limit", "null", "1")
    drop(home, "long.yaml", request_doc("long", sleep_s=30))
    drop(home, "waiting.yaml", request_doc("waiting"))
    docket("tick")
    assert docket("cancel", "waiting", "--json").json()["cancelled"] == [2]
    result = docket("cancel", "long", "--reason", "wrong field", "--json")
    assert result.json()["cancelled"] == [1]
    assert docket("tick", "--wait").code == 0
    shown = docket("show", "long", "--json").json()
    execution = shown["executions"][0]
    assert execution["state"] == "cancelled" and execution["reason"] == "wrong field"
    assert execution["engine_state"] == "done"
    assert docket("show", "waiting", "--json").json()["executions"][0]["engine_state"] == "none"
    assert docket("cancel", "nobody").code == 3


def test_a_disabled_capability_rejects_new_requests(home, docket):
    path = home / "templates" / "null" / "capability.yaml"
    text = path.read_text().replace("  max_jobs: 4\n", "  max_jobs: 4\n  enabled: false\n")
    path.write_text(text)
    drop(home, "a.yaml", request_doc("not-now"))
    docket("tick")
    error = (home / "spool" / "rejected" / "a.yaml.error").read_text()
    assert "capability 'null' is disabled; ask an operator to enable its queue" in error


def test_analyst_edits_are_recorded_in_the_event_log(home, docket):
    docket("tick")
    result = docket("analysts", "add", "someone", "--role", "da", "--json")
    assert result.code == 0, result.err
    conn = sqlite3.connect(home / "state" / "docket.db")
    actor, data = conn.execute("SELECT actor, data FROM events WHERE type='analysts.changed'"
                               ).fetchone()
    assert actor == CURRENT_USER and '"user":"someone"' in data and '"roles_after":["da"]' in data
