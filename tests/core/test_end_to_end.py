"""A request dropped into the spool runs to a final state on the local engine."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import REPO, drop, request_doc


def _db(home: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(home / "state" / "docket.db")
    conn.row_factory = sqlite3.Row
    return conn


def test_the_shipped_example_runs_to_complete(home, docket):
    result = docket("submit", str(REPO / "templates" / "demo" / "example-request.yaml"))
    assert result.code == 0, result.err
    result = docket("tick", "--wait", "--json")
    assert result.code == 0, result.err
    assert result.json()["accepted"] == 1

    shown = docket("show", "demo-example", "--json").json()
    assert shown["request"]["state"] == "complete"
    execution = shown["executions"][0]
    assert [s["state"] for s in execution["stages"]] == ["done", "done", "done"]
    assert sorted(n["node"] for n in execution["nodes"]) == [
        "deliver", "fetch", "process_0", "process_1", "process_2"]
    directory = Path(execution["directory"])
    assert directory == home / "work" / "demo-example" / "v1" / "e1"
    # the fan-out really ran on the transferred input and delivered one summary
    assert (directory / "processed-process_2.txt").is_file()
    assert (directory / "summary.txt").is_file()
    assert "processed item m51" in (directory / "process_2.out").read_text()
    metadata = json.loads((directory / "metadata.json").read_text())
    assert metadata["request"] == "demo-example" and metadata["parameters"]["targets"] == [
        "m31", "m33", "m51"]
    assert not (directory / ".docket-active").exists()
    # the archive holds the immutable copy
    archived = home / "spool" / "accepted" / "demo-example" / "v1.yaml"
    assert archived.read_text() == (REPO / "templates/demo/example-request.yaml").read_text()
    status = docket("status").out
    assert "1 requests: 1 complete" in status


def test_a_failing_node_fails_the_execution(home, docket):
    drop(home, "bad.yaml", request_doc("bad-run", "demo", targets=["a", "b"], fail_item="b"))
    assert docket("tick", "--wait").code == 0
    shown = docket("show", "bad-run", "--json").json()
    assert shown["request"]["state"] == "failed"
    execution = shown["executions"][0]
    assert "node process_1: job exited with 1" in execution["reason"]
    nodes = {n["node"]: n for n in execution["nodes"]}
    assert nodes["process_1"]["state"] == "failed" and nodes["process_1"]["exit_code"] == 1
    assert nodes["process_0"]["state"] == "done"
    assert "deliver" not in nodes  # never submitted: its parent failed
    stages = {s["stage"]: s["state"] for s in execution["stages"]}
    assert stages == {"fetch": "done", "process": "failed", "deliver": "waiting"}


def test_retry_recovers_a_node_that_fails_once(home, docket):
    drop(home, "flaky.yaml", request_doc("flaky", fail_first=1, retries=2))
    assert docket("tick", "--wait").code == 0
    shown = docket("show", "flaky", "--json").json()
    assert shown["request"]["state"] == "complete"
    node = shown["executions"][0]["nodes"][0]
    assert node["attempts"] == 2 and node["state"] == "done"
    directory = Path(shown["executions"][0]["directory"])
    assert (directory / "null.runs").read_text().strip() == "2"
    assert "retry 1 of 2" in (directory / "workflow.dag.dagman.out").read_text()


def test_without_retry_the_same_failure_fails(home, docket):
    drop(home, "flaky.yaml", request_doc("flaky", fail_first=1, retries=0))
    docket("tick", "--wait")
    shown = docket("show", "flaky", "--json").json()
    assert shown["request"]["state"] == "failed"
    assert shown["executions"][0]["nodes"][0]["attempts"] == 1


def test_rebuild_state_reproduces_the_same_state(home, docket):
    for i in range(3):
        drop(home, f"r{i}.yaml", request_doc(f"r{i}", outputs=[f"out{i}.txt"]))
    drop(home, "r0-v2.yaml", request_doc("r0", message="second version"))
    docket("tick", "--wait")
    before = docket("status", "--json").json()
    result = docket("rebuild-state", "--check", "--json")
    assert result.code == 0 and result.json()["identical"] is True
    result = docket("rebuild-state", "--json")
    assert result.json()["events"] > 10
    assert docket("status", "--json").json()["counts"] == before["counts"]
    # and a tampered state table is put right by the replay
    with _db(home) as conn:
        conn.execute("UPDATE requests SET state='failed' WHERE name='r1'")
    check = docket("rebuild-state", "--check")
    assert check.code == 1 and "DIFFERED in: requests" in check.out
    docket("rebuild-state")
    assert docket("show", "r1", "--json").json()["request"]["state"] == "complete"


def test_the_log_leaves_a_versions_document_to_the_versions_table(home, docket):
    text = request_doc("held", message="kept once")
    drop(home, "held.yaml", text)
    docket("tick")
    with _db(home) as conn:
        [logged] = conn.execute("SELECT data FROM events WHERE type='version.accepted'"
                                ).fetchone()
        kept = tuple(conn.execute("SELECT spec, document FROM versions").fetchone())
    data = json.loads(logged)
    assert "document" not in data and "spec" not in data and data["source_file"] == "held.yaml"
    assert kept[1] == text and json.loads(kept[0])["parameters"] == {"message": "kept once"}
    # a replay gives the event its document and spec back from the versions table
    assert docket("rebuild-state", "--json").json()["identical"] is True
    with _db(home) as conn:
        assert tuple(conn.execute("SELECT spec, document FROM versions").fetchone()) == kept
        conn.execute("DELETE FROM versions")
    # with the row gone, the replay says where else to look and changes nothing
    refused = docket("rebuild-state")
    assert refused.code != 0 and "--from-archive" in refused.err
    with _db(home) as conn:
        assert conn.execute("SELECT count(*) FROM requests").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM versions").fetchone()[0] == 0


def test_a_lost_archive_copy_is_restored_from_the_database(home, docket):
    drop(home, "a.yaml", request_doc("kept"))
    docket("tick")
    archived = home / "spool" / "accepted" / "kept" / "v1.yaml"
    text = archived.read_text()
    archived.unlink()  # as a power cut could (archive copies are written without fsync)
    result = docket("rebuild-state", "--json").json()
    assert result["archive_restored"] == [str(archived)]
    assert archived.read_text() == text
    archived.unlink()
    docket("tick")  # a new watcher or tick restores recent ones by itself
    assert archived.read_text() == text


@pytest.mark.parametrize("had_intake_tables", [True, False])
def test_intake_tables_come_from_the_migrations_and_old_homes_keep_theirs(
        home, docket, had_intake_tables):
    from docket.store import MIGRATIONS, SCHEMA_VERSION

    state = home / "state"
    state.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(state / "docket.db")
    for migration in MIGRATIONS[:5]:  # a home of schema 5, before intake's tables moved
        for statement in migration.split(";"):
            if statement.strip():
                conn.execute(statement)
    conn.execute("INSERT INTO meta VALUES ('schema_version', '5')")
    if had_intake_tables:  # as that docket's intake created them, with a move still owed
        conn.execute("CREATE TABLE intake_files (identity TEXT PRIMARY KEY, status TEXT NOT "
                     "NULL, request TEXT, version INTEGER, error TEXT, time TEXT)")
        conn.execute("CREATE TABLE git_files (path TEXT PRIMARY KEY, blob TEXT NOT NULL, "
                     "commit_sha TEXT, status TEXT, request TEXT, time TEXT)")
        conn.execute("INSERT INTO intake_files VALUES ('1:2:3:4:abc', 'rejected', NULL, NULL,"
                     " '[]', '2026-01-01T00:00:00Z')")
        conn.execute("INSERT INTO git_files VALUES ('requests/a.yaml', 'b10b', 'c0ffee', "
                     "'accepted', 'a', '2026-01-01T00:00:00Z')")
    conn.commit()
    conn.close()
    drop(home, "new.yaml", request_doc("after-upgrade"))
    result = docket("tick", "--json")
    assert result.code == 0, result.err
    assert result.json()["accepted"] == 1
    conn = sqlite3.connect(state / "docket.db")
    assert conn.execute("SELECT value FROM meta WHERE key='schema_version'"
                        ).fetchone()[0] == str(SCHEMA_VERSION)
    kept = conn.execute("SELECT identity FROM intake_files").fetchall()
    gits = conn.execute("SELECT path, blob FROM git_files").fetchall()
    conn.close()
    assert kept == ([("1:2:3:4:abc",)] if had_intake_tables else [])
    assert gits == ([("requests/a.yaml", "b10b")] if had_intake_tables else [])


def test_a_database_from_an_older_docket_is_upgraded_and_read(home, docket):
    from docket.store import MIGRATIONS, SCHEMA_VERSION

    state = home / "state"
    state.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(state / "docket.db")
    for statement in MIGRATIONS[0].split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    conn.execute("INSERT INTO requests (name, capability, state, current_version, created, "
                 "updated) VALUES ('old', 'null', 'complete', 1, '2026-01-01T00:00:00Z', "
                 "'2026-01-01T00:00:00Z')")
    conn.commit()
    conn.close()
    result = docket("status", "--json")
    assert result.code == 0, result.err
    assert result.json()["counts"] == {"complete": 1}
    conn = sqlite3.connect(state / "docket.db")
    assert conn.execute("SELECT value FROM meta WHERE key='schema_version'"
                        ).fetchone()[0] == str(SCHEMA_VERSION)


def test_commands_started_together_on_a_new_home_all_upgrade_it_once(home):
    """A watcher and a 'submit --follow' started together on a new home both find its
    database unmade; the one that waited for the write lock must not make it again."""
    import contextlib
    import os
    import subprocess
    import time

    from docket.store import MIGRATIONS, SCHEMA_VERSION
    from tests.conftest import BIN

    state = home / "state"
    state.mkdir(parents=True, exist_ok=True)
    db = state / "docket.db"
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("BEGIN IMMEDIATE")  # as the first process, mid-upgrade
    readers = [subprocess.Popen([str(BIN / "docket"), "status", "--json", "--home", str(home)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(3)]

    def has_database_open(pid: int) -> bool:
        # a descriptor may close while it is looked at (each first reads the database
        # read-only, closes it, then opens it to upgrade): that one is skipped
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            return True  # it has ended: its exit code says how
        for fd in fds:
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == str(db):
                    return True
        return False

    deadline = time.monotonic() + 60
    while not all(has_database_open(p.pid) for p in readers) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # each has read the schema as unmade and now waits for the write lock
    for migration in MIGRATIONS:
        for statement in migration.split(";"):
            if statement.strip():
                holder.execute(statement)
    holder.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
    holder.execute("COMMIT")
    holder.close()
    for reader in readers:
        out, err = reader.communicate(timeout=60)
        assert reader.returncode == 0, err
        assert json.loads(out)["counts"] == {}
