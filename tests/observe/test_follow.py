"""'docket follow' and 'docket submit --follow' against a watcher in another process."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from pathlib import Path

import yaml

from tests.conftest import BIN, drop, request_doc
from tests.observe.receivers import wait_for


def _watch(home: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([str(BIN / "docket"), "watch", "--home", str(home)],
                                stdout=out, stderr=out)


class Lines:
    """A subprocess's stdout read line by line in a thread, so a test can wait on it."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def seen(self, text: str) -> bool:
        return any(text in line for line in self.lines)


def test_submit_follow_through_a_watcher_restart_to_complete(home, tmp_path):
    log = tmp_path / "watch.log"
    doc = tmp_path / "survey-1.yaml"
    doc.write_text(yaml.safe_dump({
        "apiVersion": "docket/v1", "kind": "CapabilityRequest",
        "metadata": {"name": "survey-1"},
        "spec": {"capability": "demo", "parameters": {"targets": ["a", "b", "c"],
                                                      "sleep_s": 1.0}}}))
    # one job at a time: the process stage's later nodes are not submitted until the
    # first has finished, and the stage must not read as left before they ran
    (home / "docket.yaml").write_text("local_max_jobs: 1\n")
    watcher = _watch(home, log)
    follower = subprocess.Popen(
        [str(BIN / "docket"), "submit", "--follow", "--json", str(doc), "--home", str(home)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = Lines(follower)
    try:
        try:
            wait_for(lambda: out.seen('"stage.entered"') and out.seen("node fetch started"),
                     120, "the fetch stage to start")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the follower printed {out.lines}; the watcher "
                                 f"logged {log.read_text()}") from None
        watcher.send_signal(signal.SIGTERM)  # the watcher goes away mid-run ...
        assert watcher.wait(timeout=120) == 0
        watcher = _watch(home, log)  # ... and a new one carries on
        assert follower.wait(timeout=300) == 0, follower.stderr.read() if follower.stderr \
            else ""
    finally:
        watcher.send_signal(signal.SIGTERM)
        watcher.wait(timeout=120)
        if follower.poll() is None:
            follower.kill()
    out.thread.join(timeout=30)
    events = [json.loads(line) for line in out.lines]
    end = events[-1]
    assert end == {"type": "follow.end", "outcome": "complete", "state": "complete",
                   "reason": None, "accepts": [], "exit_code": 0, "request": "survey-1"}
    logged = [e for e in events[:-1] if not e["type"].startswith("stage.")]
    ids = [e["id"] for e in logged]
    assert ids == sorted(set(ids)), "each event once, in order"
    types = [e["type"] for e in logged]
    assert types[0] == "version.accepted"
    moves = [(e["data"]["from"], e["data"]["to"]) for e in logged
             if e["type"] == "execution.transition"]
    assert moves == [("submitted", "queued"), ("queued", "executing"),
                     ("executing", "complete")]
    nodes_done = {e["data"]["node"] for e in logged if e["type"] == "node.finished"}
    assert nodes_done == {"fetch", "process_0", "process_1", "process_2", "deliver"}
    stages = [(e["type"], e["data"]["stage"]) for e in events if e["type"].startswith("stage.")]
    assert stages == [("stage.entered", "fetch"), ("stage.left", "fetch"),
                      ("stage.entered", "process"), ("stage.left", "process"),
                      ("stage.entered", "deliver"), ("stage.left", "deliver")]
    left_process = next(i for i, e in enumerate(events) if e["type"] == "stage.left"
                        and e["data"]["stage"] == "process")
    last_process_node = max(i for i, e in enumerate(events) if e["type"] == "node.finished"
                            and e["data"]["node"].startswith("process_"))
    assert left_process > last_process_node
    # every line says in words what happened, for people reading a log of it
    assert all(e["text"] for e in events[:-1])


def test_follow_from_another_shell_prints_lines_for_people(home, tmp_path):
    log = tmp_path / "watch.log"
    watcher = _watch(home, log)
    try:
        drop(home, "slow.yaml", request_doc("slow", sleep_s=2))
        wait_for(lambda: (home / "state" / "docket.db").exists()
                 and subprocess.run([str(BIN / "docket"), "show", "slow", "--home",
                                     str(home)], capture_output=True).returncode == 0,
                 120, "the request to be taken in")
        done = subprocess.run([str(BIN / "docket"), "follow", "slow", "--home", str(home)],
                              capture_output=True, text=True, timeout=300)
    finally:
        watcher.send_signal(signal.SIGTERM)
        watcher.wait(timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "accepted: version 1 from slow.yaml" in lines[0]
    assert any("state queued → executing [start]" in line for line in lines)
    assert any("stage run entered" in line for line in lines)
    assert any("node run finished with exit code 0" in line for line in lines)
    assert lines[-1] == "slow is complete"


def test_exit_codes_say_how_the_request_ended(home, docket):
    import shutil

    shutil.copytree(home / "templates" / "null", home / "templates" / "qa-null")
    definition = home / "templates" / "qa-null" / "capability.yaml"
    definition.write_text(definition.read_text().replace('name: "null"', "name: qa-null")
                          .replace("state_machine: simple", "state_machine: single-qa"))
    drop(home, "ok.yaml", request_doc("ok"))
    drop(home, "broken.yaml", request_doc("broken", exit_code=3))
    drop(home, "qa.yaml", request_doc("qa", capability="qa-null"))
    drop(home, "stopped.yaml", request_doc("stopped", sleep_s=60))
    docket("tick")
    assert docket("cancel", "stopped").code == 0
    docket("tick", "--wait")
    assert docket("follow", "ok").code == 0
    failed = docket("follow", "broken")
    assert failed.code == 1 and failed.out.splitlines()[-1].startswith("broken is failed")
    waiting = docket("follow", "qa")
    assert waiting.code == 4
    assert waiting.out.splitlines()[-1] == ("qa is waiting for a person in awaiting-qa: it "
                                            "accepts cancel, qa-fail, qa-pass, retry")
    assert docket("follow", "stopped").code == 5
    missing = docket("follow", "nobody")
    assert missing.code == 3 and "no request named 'nobody'" in missing.err


def test_a_follow_gives_up_after_its_timeout(home, docket):
    docket("tick")
    docket("queue", "pause", "null")
    drop(home, "held-back.yaml", request_doc("held-back"))
    docket("tick")
    result = docket("follow", "held-back", "--timeout-s", "1", "--json")
    assert result.code == 9
    end = json.loads(result.out.splitlines()[-1])
    assert end["outcome"] == "timeout" and end["state"] == "queued"


def test_a_rejected_document_ends_the_follow_with_its_reasons(home, docket):
    from docket.follow import follow
    from docket.home import resolve_home

    drop(home, "typo.yaml", request_doc("typo", capability="no-such-capability"))
    docket("tick")
    seen: list[dict] = []
    end = follow(resolve_home(home), "typo", after_id=0, spooled_file="typo.yaml",
                 on_event=seen.append, poll_s=0.05, timeout_s=60)
    assert end.exit_code == 8 and "no-such-capability" in (end.reason or "")
    assert [e["type"] for e in seen] == ["document.rejected"]


def test_submit_follow_of_a_new_version_waits_for_it_not_the_old_one(home, docket, tmp_path):
    drop(home, "v1.yaml", request_doc("twice"))
    docket("tick", "--wait")
    doc = tmp_path / "twice.yaml"
    doc.write_text(request_doc("twice", exit_code=4))
    follower = subprocess.Popen([str(BIN / "docket"), "submit", "--follow", str(doc),
                                 "--home", str(home)], stdout=subprocess.PIPE, text=True)
    try:
        # version 1 is complete: the follower must not stop on it; version 2 fails
        wait_for(lambda: any((home / "spool" / "incoming").glob("twice*.yaml")), 60,
                 "the document in the spool")
        docket("tick", "--wait")
        out, _ = follower.communicate(timeout=180)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == 1, out
    lines = out.splitlines()
    assert "accepted: version 2 from twice.yaml" in lines[1]
    assert lines[-1].startswith("twice is failed")


def test_a_follower_waiting_on_intake_says_so_once(home, docket, monkeypatch):
    import docket.follow as following
    from docket.home import resolve_home
    from docket.store import Store

    docket("tick")  # the database exists; no watcher runs
    store = Store(home / "state" / "docket.db")
    after = store.one("SELECT max(id) AS n FROM events")["n"] or 0
    store.close()
    monkeypatch.setattr(following, "SLOW_INTAKE_S", 0.2)
    drop(home, "later.yaml", request_doc("later"))
    said: list[str] = []
    result: dict = {}

    def run() -> None:
        result["end"] = following.follow(
            resolve_home(home), "later", after_id=after, spooled_file="later.yaml",
            poll_s=0.05, timeout_s=120, on_event=lambda e: None,
            on_slow_intake=lambda: said.append("slow"))

    thread = threading.Thread(target=run)
    thread.start()
    wait_for(lambda: said, 60, "the slow-intake notice")
    docket("tick", "--wait")  # now intake runs: the follow goes on to the end
    thread.join(timeout=120)
    assert said == ["slow"] and result["end"].outcome == "complete"


def test_a_follower_sees_the_end_when_it_is_committed_not_a_poll_later(home, docket):
    # A follower polls the database, but it also wakes when the database changes: with a
    # two-minute poll it must still see the end as soon as the pass records it.
    from docket.follow import follow
    from docket.home import resolve_home

    docket("tick")
    docket("queue", "pause", "null")
    drop(home, "prompt.yaml", request_doc("prompt"))
    docket("tick")
    result: dict = {}

    def run() -> None:
        result["end"] = follow(resolve_home(home), "prompt", poll_s=120, timeout_s=None,
                               on_event=lambda e: None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    docket("queue", "resume", "null")
    docket("tick", "--wait")
    thread.join(timeout=60)
    assert not thread.is_alive(), "the follower slept through the commits"
    assert result["end"].outcome == "complete"
