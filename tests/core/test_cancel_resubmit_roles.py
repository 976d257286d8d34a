"""Cancel and Resubmit are for the requester and for operators: documents and CLI verbs."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import CURRENT_USER
from tests.core.test_decisions import drop_as, users  # noqa: F401 - users is a fixture


def _doc(kind: str, name: str, request: str) -> dict:
    return {"apiVersion": "docket/v1", "kind": kind, "metadata": {"name": name},
            "spec": {"request": request, "reason": "testing who may"}}


def _request(name: str) -> dict:
    return {"apiVersion": "docket/v1", "kind": "CapabilityRequest",
            "metadata": {"name": name}, "spec": {"capability": "null"}}


def _error(home: Path, filename: str) -> str:
    return (home / "spool" / "rejected" / f"{filename}.error").read_text()


def test_only_the_requester_or_an_operator_may_cancel_or_resubmit(home, docket, users):  # noqa: F811
    da, outsider = users["da"], users["nobody"]
    (home / "analysts.yaml").write_text(
        f"analysts:\n  {CURRENT_USER}:\n    roles: [operator]\n"
        f"  {da.pw_name}:\n    roles: [da]\n")
    docket("tick")
    assert docket("queue", "pause", "null").code == 0  # requests wait: there is a to cancel
    drop_as(home, outsider, "theirs.yaml", _request("theirs"))
    drop_as(home, da, "das.yaml", _request("das"))
    docket("tick")

    # a DA who did not submit it may not cancel it
    drop_as(home, da, "c1.yaml", _doc("Cancel", "cancel-by-da", "theirs"))
    assert docket("tick", "--json").json()["rejected"] == 1
    assert (f"cancelling 'theirs' is for its requester ({outsider.pw_name}) or an analyst "
            f"with the role 'operator'; {da.pw_name} is neither") in _error(home, "c1.yaml")
    # nor resubmit it
    drop_as(home, da, "r1.yaml", _doc("Resubmit", "resubmit-by-da", "theirs"))
    docket("tick")
    assert "resubmitting 'theirs' is for its requester" in _error(home, "r1.yaml")
    # the requester may, with no role at all
    drop_as(home, outsider, "c2.yaml", _doc("Cancel", "cancel-by-owner", "theirs"))
    assert docket("tick", "--json").json()["applied"] == 1
    assert docket("show", "theirs", "--json").json()["request"]["state"] == "cancelled"
    drop_as(home, outsider, "r2.yaml", _doc("Resubmit", "resubmit-by-owner", "theirs"))
    assert docket("tick", "--json").json()["applied"] == 1
    # and an operator may (the current user, through the CLI verb)
    result = docket("cancel", "das", "--json")
    assert result.code == 0 and result.json()["cancelled"]
    refused = [e for e in docket("history", "theirs", "--json").json()["events"]
               if e["type"] == "decision.refused"]
    assert len(refused) == 2


def test_the_cancel_verb_is_refused_for_someone_else(home, docket, users):  # noqa: F811
    da = users["da"]
    docket("tick")
    assert docket("queue", "pause", "null").code == 0
    drop_as(home, da, "das.yaml", _request("das"))
    docket("tick")
    # the current user is now only a DA, and did not submit 'das'
    (home / "analysts.yaml").write_text(f"analysts:\n  {CURRENT_USER}:\n    roles: [da]\n")
    result = docket("cancel", "das")
    assert result.code == 2
    assert result.err == (f"Error: cancelling 'das' is for its requester ({da.pw_name}) or an "
                          f"analyst with the role 'operator'; {CURRENT_USER} is neither — ask "
                          "the requester or an operator\n")
    assert docket("show", "das", "--json").json()["request"]["state"] == "queued"
