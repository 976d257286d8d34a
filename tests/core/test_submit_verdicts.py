"""``docket submit`` says no before spooling when the home's state will refuse a request,
and ``submit --wait`` returns intake's own verdict, with or without a watcher."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import BIN, CURRENT_USER, request_doc


def _incoming(home: Path) -> list[str]:
    return sorted(p.name for p in (home / "spool" / "incoming").iterdir())


def _write(tmp_path: Path, filename: str, text: str) -> Path:
    path = tmp_path / filename
    path.write_text(text)
    return path


def _edit_capability(home: Path, extra: str) -> None:
    path = home / "templates" / "null" / "capability.yaml"
    path.write_text(path.read_text() + extra)


def test_a_disabled_queue_is_refused_at_submit_time(home, docket, tmp_path):
    assert docket("queue", "disable", "null", "--reason", "maintenance").code == 0
    good = _write(tmp_path, "good.yaml", request_doc("fine", "demo", targets=["a"]))
    refused = _write(tmp_path, "off.yaml", request_doc("while-off"))
    result = docket("submit", str(good), str(refused))
    assert result.code == 8
    assert (f"Error: {refused} would be rejected: spec.capability: capability 'null' is "
            "disabled; ask an operator to enable its queue — nothing was submitted"
            in result.err)
    assert _incoming(home) == []  # all or none: the good one was not spooled either
    assert docket("queue", "enable", "null").code == 0
    assert docket("submit", str(refused)).code == 0
    assert _incoming(home) == ["off.yaml"]


def test_a_submitter_the_capability_does_not_allow_is_refused(home, docket, tmp_path):
    _edit_capability(home, "submitters: [somebody-else, '@no-such-group-here']\n")
    path = _write(tmp_path, "mine.yaml", request_doc("not-mine"))
    result = docket("submit", str(path))  # a home that never ran: no database yet
    assert result.code == 8
    assert (f"{CURRENT_USER} may not submit 'null' requests (allowed: somebody-else, "
            "@no-such-group-here)") in result.err
    assert _incoming(home) == [] and not (home / "state" / "docket.db").exists()


def test_a_sealed_request_is_refused_but_its_duplicate_is_not(home, docket, tmp_path):
    first = _write(tmp_path, "v1.yaml", request_doc("sealed-one", message="first"))
    assert docket("submit", "--wait", str(first)).code == 0
    assert docket("seal", "sealed-one", "--reason", "final").code == 0
    second = _write(tmp_path, "v2.yaml", request_doc("sealed-one", message="second"))
    result = docket("submit", str(second))
    assert result.code == 8 and "metadata.name: request 'sealed-one' is sealed" in result.err
    assert _incoming(home) == []
    # the same content again changes nothing, so it is not refused: intake calls it a
    # duplicate
    again = docket("submit", "--wait", str(first))
    assert again.code == 0, again.err
    assert again.out == f"{first}: duplicate of (nothing changed) sealed-one v1\n"


def test_submit_wait_without_a_watcher_returns_intakes_verdict(home, docket, tmp_path):
    _edit_capability(home, "single_version_only: true\n")
    one = _write(tmp_path, "one.yaml", request_doc("only-once", message="one"))
    two = _write(tmp_path, "two.yaml", request_doc("only-once", message="two"))
    # each is fine on its own; intake takes the first and must refuse the second
    result = docket("submit", "--wait", str(one), str(two))
    assert result.code == 8
    assert result.out.splitlines() == [
        f"{one}: accepted as only-once v1",
        f"{two}: rejected by intake",
        "  - metadata.name: capability 'null' allows one version per request and "
        "'only-once' exists; use a new name"]
    assert "Error: intake rejected 1 of 2 documents" in result.err
    payload = docket("status", "--json").json()
    assert [r["name"] for r in payload["requests"]] == ["only-once"]
    assert sorted(p.name for p in (home / "spool" / "rejected").iterdir()) == [
        "two.yaml", "two.yaml.error"]
    three = _write(tmp_path, "three.yaml", request_doc("another", message="x"))
    shown = docket("submit", "--wait", "--json", str(three))
    assert shown.code == 0
    assert shown.json()["submitted"][0] | {"spooled": None} == {
        "file": str(three), "spooled": None, "status": "accepted", "kind": "CapabilityRequest",
        "name": "another", "request": "another", "version": 1}
    assert shown.json()["ok"] is True


@pytest.mark.slow
def test_submit_wait_with_a_watcher_in_another_process(home, docket, tmp_path):
    _edit_capability(home, "single_version_only: true\n")
    docket("tick")
    log = tmp_path / "watch.log"
    with open(log, "w") as stderr:
        watch = subprocess.Popen([str(BIN / "docket"), "watch", "--home", str(home)],
                                 stderr=stderr)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "watching" not in log.read_text():
            time.sleep(0.05)
        one = _write(tmp_path, "w1.yaml", request_doc("watched", message="one"))
        two = _write(tmp_path, "w2.yaml", request_doc("watched", message="two"))
        result = docket("submit", "--wait", str(one), str(two))
        assert result.code == 8, result.err
        assert result.out.splitlines()[:2] == [f"{one}: accepted as watched v1",
                                               f"{two}: rejected by intake"]
        # the watcher decided them, not this command (it logs after its pass)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "accepted: w1.yaml" not in log.read_text():
            time.sleep(0.05)
        assert "accepted: w1.yaml → watched v1" in log.read_text()
    finally:
        watch.terminate()
        assert watch.wait(timeout=30) == 0
