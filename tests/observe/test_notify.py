"""Notifications against real receivers on loopback: signed webhooks, SMTP, a command."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import BIN, CURRENT_USER, drop, request_doc, run_docket
from tests.observe.receivers import SmtpRecorder, Webhook, wait_for

SECRET = "s3cret-for-tests"


def _write_rules(home: Path, targets: dict, rules: list, **extra) -> None:
    config = {"targets": targets, "rules": rules,
              "retry": {"max_attempts": 4, "backoff_s": 0.05, "max_backoff_s": 0.2}, **extra}
    (home / "notifications.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def _hook(url: str, **more) -> dict:
    return {"webhook": {"url": url, "secret_env": "DOCKET_TEST_HOOK_SECRET", **more}}


@pytest.fixture(autouse=True)
def _secret(monkeypatch):
    monkeypatch.setenv("DOCKET_TEST_HOOK_SECRET", SECRET)


def _outbox(home: Path) -> list[dict]:
    conn = sqlite3.connect(home / "state" / "docket.db")
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM notifications ORDER BY id")]
    finally:
        conn.close()


def _send_until_settled(docket, home: Path, tries: int = 40) -> None:
    """'docket notifications send' until nothing is pending (backoff is 0.05-0.2 s)."""
    for _ in range(tries):
        assert docket("notifications", "send").code == 0
        if not any(n["state"] == "pending" for n in _outbox(home)):
            return
        time.sleep(0.1)  # let the backoff pass
    raise AssertionError(f"still pending: {_outbox(home)}")


def test_a_signed_webhook_carries_the_request_state_and_links(home, docket):
    with Webhook(SECRET.encode()) as hook:
        _write_rules(home, {"ops": _hook(hook.url)},
                     [{"events": ["complete", "failed"], "notify": ["ops"]}],
                     report_url="https://docket.example.org/report/")
        drop(home, "good.yaml", request_doc("good", outputs=["result.txt"]))
        drop(home, "bad.yaml", request_doc("bad", exit_code=3))
        assert docket("tick", "--wait").code == 0
        # committed with the state change, not sent yet: tick never sends
        listed = docket("notifications", "list", "--json").json()
        assert listed["counts"] == {"pending": 2}
        assert hook.posts == []

        assert docket("notifications", "send").code == 0
        assert len(hook.posts) == 2
        assert all(p.signed for p in hook.posts)
        by_request = {p.json()["request"]: p for p in hook.posts}
        good = by_request["good"].json()
        assert good["event"] == "complete" and good["state"] == "complete"
        assert good["version"] == 1 and good["capability"] == "null"
        assert good["links"]["report"] == \
            "https://docket.example.org/report/requests/good.html"
        assert good["links"]["directory"].startswith("file:///")
        assert by_request["good"].headers["Idempotency-Key"] == good["id"]
        bad = by_request["bad"].json()
        assert bad["event"] == "failed" and bad["state"] == "failed"
        assert bad["reason"] and bad["stage"] == "run"  # the stage that failed
    listed = docket("notifications", "list", "--json").json()
    assert listed["counts"] == {"sent": 2}
    assert "sent" in docket("notifications", "list").out


def test_a_receiver_rejecting_the_signature_makes_the_notification_dead(home, docket,
                                                                       monkeypatch):
    with Webhook(b"the receiver's other secret") as hook:
        _write_rules(home, {"ops": _hook(hook.url)},
                     [{"events": ["complete"], "notify": ["ops"]}])
        drop(home, "one.yaml", request_doc("one"))
        docket("tick", "--wait")
        docket("notifications", "send")
        assert len(hook.posts) == 1 and not hook.posts[0].signed
    [row] = _outbox(home)
    # a 401 will not get better by retrying: dead after one attempt, with the reason
    assert row["state"] == "dead" and row["attempts"] == 1
    assert "HTTP 401" in row["last_error"]
    out = docket("notifications", "list", "--state", "dead").out
    assert "dead" in out and "HTTP 401" in out


def test_a_receiver_failing_the_first_tries_gets_the_same_notification_again(home, docket):
    with Webhook(SECRET.encode(), fail_first=2) as hook:
        _write_rules(home, {"ops": _hook(hook.url)},
                     [{"events": ["complete"], "notify": ["ops"]}])
        drop(home, "one.yaml", request_doc("one"))
        docket("tick", "--wait")
        _send_until_settled(docket, home)
        assert len(hook.posts) == 3
        # the same body and the same key each time: the receiver can drop repeats
        assert len({p.body for p in hook.posts}) == 1
        assert len(set(hook.keys())) == 1
    [row] = _outbox(home)
    assert row["state"] == "sent" and row["attempts"] == 3
    # the wait before a retry doubles (0.05 s, then 0.1 s) up to max_backoff_s


def test_an_endpoint_that_never_answers_right_goes_dead_and_can_be_retried(home, docket):
    with Webhook(SECRET.encode(), fail_first=1000) as hook:
        _write_rules(home, {"ops": _hook(hook.url)},
                     [{"events": ["complete"], "notify": ["ops"]}])
        drop(home, "one.yaml", request_doc("one"))
        docket("tick", "--wait")
        _send_until_settled(docket, home)
        assert len(hook.posts) == 4  # retry.max_attempts
        [row] = _outbox(home)
        assert row["state"] == "dead" and "HTTP 503" in row["last_error"]

        hook.fail_first = 0
        result = docket("notifications", "retry", "--json").json()
        assert result["retried"] == [row["id"]]
        _send_until_settled(docket, home)
        assert len(hook.posts) == 5
    assert _outbox(home)[0]["state"] == "sent"


def test_email_goes_to_the_requester_and_the_analysts_of_a_role(home, docket):
    (home / "analysts.yaml").write_text(yaml.safe_dump({"analysts": {
        CURRENT_USER: {"roles": ["da", "aod", "operator"], "emails": ["me@example.org"]},
        "carol": {"roles": ["aod"], "emails": ["carol@example.org", "c2@example.org"]},
        "dave": {"roles": ["operator"], "emails": ["dave@example.org"]}}}))
    with SmtpRecorder() as smtp:
        _write_rules(home, {"people": {"email": {"requester": True, "roles": ["aod"],
                                                 "addresses": ["list@example.org"]}}},
                     [{"events": ["failed"], "notify": ["people"]}],
                     smtp={"host": "127.0.0.1", "port": smtp.port,
                           "sender": "docket@example.org"})
        drop(home, "bad.yaml", request_doc("bad", exit_code=2))
        drop(home, "good.yaml", request_doc("good"))
        docket("tick", "--wait")
        docket("notifications", "send")
        wait_for(lambda: smtp.messages, 30, "the mail")
        [message] = smtp.messages
        [(mail_from, rcpts)] = smtp.envelopes
    assert mail_from == "docket@example.org"
    assert sorted(rcpts) == ["carol@example.org", "list@example.org", "me@example.org"]
    assert message["Subject"] == "[docket] bad v1: failed"
    [row] = _outbox(home)
    assert message["Message-ID"] == f"<{row['key']}@docket>"
    text = message.get_payload()
    assert "bad version 1" in text and "is failed" in text and "docket show bad" in text


def test_email_with_no_address_is_dead_and_says_whom_to_add(home, docket):
    with SmtpRecorder() as smtp:
        _write_rules(home, {"me": {"email": {"requester": True}}},
                     [{"events": ["complete"], "notify": ["me"]}],
                     smtp={"host": "127.0.0.1", "port": smtp.port})
        drop(home, "one.yaml", request_doc("one"))
        docket("tick", "--wait")
        docket("notifications", "send")
        assert smtp.messages == []
    [row] = _outbox(home)
    assert row["state"] == "dead"
    assert f"no emails: in analysts.yaml for {CURRENT_USER}" in row["last_error"]


def test_a_command_hook_gets_the_payload_on_stdin(home, docket, tmp_path):
    script = tmp_path / "hook.py"
    record = tmp_path / "received.jsonl"
    script.write_text("import json, os, sys\n"
                      f"with open({str(record)!r}, 'a') as f:\n"
                      "    payload = json.load(sys.stdin)\n"
                      "    payload['env_id'] = os.environ['DOCKET_NOTIFICATION_ID']\n"
                      "    f.write(json.dumps(payload) + '\\n')\n")
    _write_rules(home, {"script": {"command": {"argv": [sys.executable, str(script)]}}},
                 [{"events": ["state"], "states": ["executing"], "notify": ["script"]}])
    drop(home, "one.yaml", request_doc("one"))
    docket("tick", "--wait")
    docket("notifications", "send")
    [line] = record.read_text().splitlines()
    payload = json.loads(line)
    assert payload["state"] == "executing" and payload["from"] == "queued"
    assert payload["event"] == "state" and payload["env_id"] == payload["id"]


def test_a_failing_command_is_retried_with_its_error(home, docket, tmp_path):
    _write_rules(home, {"script": {"command": {"argv": [
        sys.executable, "-c", "import sys; sys.exit('pager is down')"]}}},
        [{"events": ["complete"], "notify": ["script"]}])
    drop(home, "one.yaml", request_doc("one"))
    docket("tick", "--wait")
    _send_until_settled(docket, home)
    [row] = _outbox(home)
    assert row["state"] == "dead" and row["attempts"] == 4
    assert "exited 1: pager is down" in row["last_error"]


def test_rules_filter_by_capability_label_and_the_notify_action(home, docket):
    # a QA capability: its machine runs {notify} on entering awaiting-qa
    shutil.copytree(home / "templates" / "null", home / "templates" / "qa-null")
    definition = home / "templates" / "qa-null" / "capability.yaml"
    definition.write_text(definition.read_text().replace('name: "null"', "name: qa-null")
                          .replace("state_machine: simple", "state_machine: single-qa"))
    with Webhook(SECRET.encode()) as hook:
        _write_rules(home, {"ops": _hook(hook.url)}, [
            {"events": ["notify"], "capabilities": ["qa-*"], "notify": ["ops"]},
            {"events": ["complete"], "labels": {"survey": "vlass"}, "notify": ["ops"]}])
        labelled = yaml.safe_load(request_doc("tagged"))
        labelled["metadata"]["labels"] = {"survey": "vlass"}
        drop(home, "tagged.yaml", yaml.safe_dump(labelled))
        drop(home, "plain.yaml", request_doc("plain"))
        drop(home, "qa.yaml", request_doc("qa", capability="qa-null"))
        docket("tick", "--wait")
        docket("notifications", "send")
        got = sorted((p.json()["request"], p.json()["event"], p.json()["state"])
                     for p in hook.posts)
    assert got == [("qa", "notify", "awaiting-qa"), ("tagged", "complete", "complete")]
    assert docket("status", "--json").json()["counts"] == {"awaiting-qa": 1, "complete": 2}


def test_a_held_node_is_notified_with_its_stage_and_reason(home, docket):
    folder = home / "templates" / "overrun"
    folder.mkdir()
    (folder / "capability.yaml").write_text(
        "name: overrun\nstages:\n  - {name: crunch, description: crunching, nodes: [work]}\n")
    (folder / "workflow.dag.j2").write_text("JOB work work.sub\n")
    (folder / "work.sub.j2").write_text("executable = /bin/sleep\narguments = 60\n"
                                        "allowed_job_duration = 1\n"
                                        "should_transfer_files = NO\nqueue\n")
    with Webhook(SECRET.encode()) as hook:
        _write_rules(home, {"ops": _hook(hook.url)},
                     [{"events": ["held"], "capabilities": ["overrun"], "notify": ["ops"]}])
        drop(home, "long.yaml", request_doc("long", capability="overrun"))
        docket("tick", "--wait")
        docket("notifications", "send")
        [post] = hook.posts
    payload = post.json()
    assert payload["event"] == "held" and payload["node"] == "work"
    assert payload["stage"] == "crunch"
    assert "allowed_job_duration of 1 seconds" in payload["reason"]


def test_the_outbox_row_commits_or_rolls_back_with_its_event(home, docket):
    from docket.home import resolve_home
    from docket.notify import Planner
    from docket.store import Store

    with Webhook(SECRET.encode()) as hook:
        _write_rules(home, {"ops": _hook(hook.url)},
                     [{"events": ["state"], "notify": ["ops"]}])
        drop(home, "one.yaml", request_doc("one"))
        docket("tick")
        before = len(_outbox(home))
        assert before >= 2  # queued, executing, ...
        store = Store(home / "state" / "docket.db")
        Planner.attach(resolve_home(home), store)
        row = store.one("SELECT * FROM executions")
        with pytest.raises(RuntimeError), store.transaction():
            store.record("execution.mediated", request="one", version=1, execution=row["id"],
                         to="failed", reason="operator fix-up", **{"from": row["state"]})
            assert len(store.all("SELECT * FROM notifications")) == before + 1
            raise RuntimeError("crash before commit")
        store.close()
        assert len(_outbox(home)) == before


def test_rules_written_while_a_watcher_runs_apply_from_its_next_transaction(home, docket):
    """The planner looks at notifications.yaml once per transaction (an intake batch is
    one): rules an operator writes are used by the next one, no restart needed."""
    from docket.home import resolve_home
    from docket.notify import Planner
    from docket.store import Store

    drop(home, "one.yaml", request_doc("one"))
    docket("tick")
    store = Store(home / "state" / "docket.db")
    Planner.attach(resolve_home(home), store)
    row = store.one("SELECT * FROM executions")
    store.record("execution.mediated", request="one", version=1, execution=row["id"],
                 to="failed", reason="before the rules", **{"from": row["state"]})
    assert _outbox(home) == []
    with Webhook(SECRET.encode()) as hook:
        _write_rules(home, {"ops": _hook(hook.url)}, [{"events": ["failed"], "notify": ["ops"]}])
        store.record("execution.mediated", request="one", version=1, execution=row["id"],
                     to="failed", reason="after the rules", **{"from": "failed"})
        store.close()
        assert [json.loads(n["payload"])["state"] for n in _outbox(home)] == ["failed"]


def test_a_broken_notifications_file_stops_nothing(home, docket):
    (home / "notifications.yaml").write_text("rules:\n  - events: [complet]\n"
                                             "    notify: [nobody]\n")
    drop(home, "one.yaml", request_doc("one"))
    result = docket("tick", "--wait")
    assert result.code == 0
    assert docket("status", "--json").json()["counts"] == {"complete": 1}
    assert docket("notifications", "list", "--json").json()["counts"] == {}
    from docket.errors import Invalid
    from docket.notify import load_notifications

    with pytest.raises(Invalid, match=r"notifications.yaml:2: rules.0.events.0"):
        load_notifications(home)


def test_a_webhook_without_a_secret_is_refused_with_the_reason(home):
    from docket.errors import Invalid
    from docket.notify import load_notifications

    (home / "notifications.yaml").write_text(
        "targets:\n  ops:\n    webhook: {url: 'http://127.0.0.1:9/x'}\n")
    with pytest.raises(Invalid, match="needs secret_env or secret_file"):
        load_notifications(home)


# the watcher in another process ----------------------------------------------------


def _watch(home: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([str(BIN / "docket"), "watch", "--home", str(home)],
                                stdout=out, stderr=out,
                                env={**os.environ, "DOCKET_TEST_HOOK_SECRET": SECRET})


def _stop(watcher: subprocess.Popen[bytes]) -> None:
    watcher.send_signal(signal.SIGTERM)
    watcher.wait(timeout=60)


def _states(home: Path) -> dict[str, int]:
    return run_docket("status", "--json", "--home", str(home)).json()["counts"]


def test_a_hung_webhook_holds_up_neither_intake_nor_the_engine_nor_other_targets(home,
                                                                                 tmp_path):
    with Webhook(SECRET.encode(), hang="always") as hung, Webhook(SECRET.encode()) as good:
        _write_rules(home, {"stuck": _hook(hung.url, timeout_s=300),
                            "fine": _hook(good.url)},
                     [{"events": ["state"], "notify": ["stuck"]},
                      {"events": ["complete"], "notify": ["fine"]}])
        watcher = _watch(home, tmp_path / "watch.log")
        try:
            drop(home, "first.yaml", request_doc("first"))
            wait_for(lambda: hung.hanging == 1, 60, "the sender to be stuck on the hook")
            for i in range(3):
                drop(home, f"next-{i}.yaml", request_doc(f"next-{i}"))
            # every request is taken in and run to the end while one endpoint hangs ...
            wait_for(lambda: _states(home).get("complete") == 4, 120, "4 complete")
            # ... and the other target hears of each of them meanwhile
            wait_for(lambda: len(good.posts) == 4, 60, "4 notifications to the other target")
            assert sorted(p.json()["request"] for p in good.posts) == [
                "first", "next-0", "next-1", "next-2"]
            # the sender marks a row sent after the reply it has just been given: wait
            # for that commit rather than racing it
            wait_for(lambda: all(n["state"] == "sent" for n in _outbox(home)
                                 if n["target"] == "fine"), 60, "the other target's rows sent")
            assert hung.hanging == 1 and len(hung.posts) == 1
            pending = [n for n in _outbox(home) if n["state"] == "pending"]
            assert len(pending) >= 4 * 3  # queued, executing, complete of each
            assert {n["target"] for n in pending} == {"stuck"}
        finally:
            _stop(watcher)


def test_sigkill_between_commit_and_send_sends_after_restart_with_the_same_key(home,
                                                                             tmp_path):
    log = tmp_path / "watch.log"
    with Webhook(SECRET.encode(), hang="first") as hook:
        _write_rules(home, {"ops": _hook(hook.url, timeout_s=300)},
                     [{"events": ["complete"], "notify": ["ops"]}])
        watcher = _watch(home, log)
        try:
            drop(home, "one.yaml", request_doc("one"))
            wait_for(lambda: hook.hanging == 1, 60, "the first POST")
            first_key = hook.keys()[0]
            watcher.send_signal(signal.SIGKILL)  # mid-send: nothing marked it sent
            watcher.wait(timeout=60)
            [row] = _outbox(home)
            assert row["state"] == "pending" and row["attempts"] == 1

            drop(home, "two.yaml", request_doc("two"))
            watcher = _watch(home, log)
            wait_for(lambda: all(n["state"] == "sent" for n in _outbox(home))
                     and len(_outbox(home)) == 2, 120, "both sent after the restart")
        finally:
            _stop(watcher)
        # at least once: the interrupted one again, under the same key; each key sent once
        keys = hook.keys()
        assert keys.count(first_key) == 2
        assert sorted(keys[1:]) == sorted(n["key"] for n in _outbox(home))
        # nothing is left to send: another sender finds nothing due
        result = run_docket("notifications", "send", "--json", "--home", str(home)).json()
        assert result["sent"] == 0 and len(hook.posts) == 3


def test_rebuilding_the_state_sends_nothing_again(home, docket):
    with Webhook(SECRET.encode()) as hook:
        _write_rules(home, {"ops": _hook(hook.url)},
                     [{"events": ["state"], "notify": ["ops"]}])
        drop(home, "one.yaml", request_doc("one"))
        docket("tick", "--wait")
        docket("notifications", "send")
        before = _outbox(home)
        assert len(hook.posts) == len(before) == 3  # queued, executing, complete
        assert docket("rebuild-state", "--json").json()["identical"] is True
        assert _outbox(home) == before
        assert docket("notifications", "send", "--json").json()["sent"] == 0
        assert len(hook.posts) == 3
