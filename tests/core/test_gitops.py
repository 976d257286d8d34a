"""GitOps: documents committed to a git repository, read with docket tick --git."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.conftest import CURRENT_USER, request_doc


def git(cwd: Path, *args: str, who: str = "Alice Astronomer <alice@example.org>") -> str:
    name, email = who[:-1].split(" <")
    out = subprocess.run(["git", "-c", f"user.name={name}", "-c", f"user.email={email}",
                          *args], cwd=cwd, check=True, capture_output=True, text=True)
    return out.stdout.strip()


def _repos(tmp_path: Path) -> tuple[Path, Path, Path]:
    origin = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True)
    work = tmp_path / "author"  # where DAs commit
    subprocess.run(["git", "clone", "-q", str(origin), str(work)], check=True)
    git(work, "commit", "-q", "--allow-empty", "-m", "start")
    git(work, "push", "-q", "origin", "main")
    checkout = tmp_path / "checkout"  # what docket reads
    subprocess.run(["git", "clone", "-q", str(origin), str(checkout)], check=True)
    return origin, work, checkout


def _commit(work: Path, path: str, text: str, who: str = "Alice Astronomer "
            "<alice@example.org>", message: str = "update") -> str:
    target = work / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    git(work, "add", path, who=who)
    git(work, "commit", "-q", "-m", message, who=who)
    git(work, "push", "-q", "origin", "main", who=who)
    return git(work, "rev-parse", "HEAD")


def test_requests_and_decisions_from_git(home, docket, tmp_path):
    (home / "analysts.yaml").write_text(
        f"analysts:\n  {CURRENT_USER}:\n    roles: [da, operator]\n"
        f"    emails: [alice@example.org]\n")
    _origin, work, checkout = _repos(tmp_path)
    first = _commit(work, "requests/field-1.yaml", request_doc("field-1", message="one"))
    _commit(work, "README.md", "not a document")
    _commit(work, ".hidden/skip.yaml", "ignored: a dot directory")
    report = docket("tick", "--git", str(checkout), "--json").json()
    assert report["git"]["ok"] is True and report["accepted"] == 1
    history = docket("history", "field-1", "--json").json()["events"]
    accepted = [e for e in history if e["type"] == "version.accepted"][0]
    assert accepted["actor"] == CURRENT_USER  # the commit author, through analysts.yaml
    assert accepted["data"]["commit"] == first
    assert accepted["data"]["source_file"] == "requests/field-1.yaml"

    # a changed file is the next version; an unknown author is named as git shows them
    second = _commit(work, "requests/field-1.yaml", request_doc("field-1", message="two"),
                     who="Bob Builder <bob@example.org>")
    report = docket("tick", "--git", str(checkout), "--wait", "--json").json()
    assert report["accepted"] == 1
    versions = docket("show", "field-1", "--json").json()["versions"]
    assert [v["number"] for v in versions] == [1, 2]
    assert versions[1]["actor"] == "Bob Builder <bob@example.org>"
    events = docket("history", "field-1", "--json").json()["events"]
    assert [e["data"]["commit"] for e in events if e["type"] == "version.accepted"] == [
        first, second]

    # nothing new: nothing happens; docket never changed the checkout
    assert docket("tick", "--git", str(checkout), "--json").json()["documents"] == []
    assert subprocess.run(["git", "status", "--porcelain"], cwd=checkout, capture_output=True,
                          text=True).stdout == ""

    # an unauthorised decision from git is rejected, with a copy kept in the spool
    decision = {"apiVersion": "docket/v1", "kind": "QueueChange",
                "metadata": {"name": "pause-null"},
                "spec": {"capability": "null", "action": "pause", "reason": "maintenance"}}
    _commit(work, "decisions/pause.yaml", yaml.safe_dump(decision),
            who="Bob Builder <bob@example.org>")
    docket("tick", "--git", str(checkout))
    error = (home / "spool" / "rejected" / "git" / "decisions__pause.yaml.error").read_text()
    assert "queue changes need an analyst with the role 'operator'; Bob Builder" in error

    # a file that disappears changes nothing by itself, and status says so
    git(work, "rm", "-q", "requests/field-1.yaml")
    git(work, "commit", "-q", "-m", "remove")
    git(work, "push", "-q", "origin", "main")
    docket("tick", "--git", str(checkout))
    status = docket("status").out
    assert "source requests/field-1.yaml was removed from git" in status
    assert docket("show", "field-1", "--json").json()["request"]["state"] == "complete"
    assert docket("rebuild-state", "--check").code == 0


def test_a_failed_pull_leaves_the_state_untouched_and_the_next_tick_retries(home, docket,
                                                                           tmp_path):
    origin, work, checkout = _repos(tmp_path)
    _commit(work, "a.yaml", request_doc("a"))
    docket("tick", "--git", str(checkout))
    # history rewritten upstream: the checkout cannot fast-forward
    git(work, "reset", "-q", "--hard", "HEAD~1")
    (work / "b.yaml").write_text(request_doc("b"))
    git(work, "add", "b.yaml")
    git(work, "commit", "-q", "-m", "rewritten")
    git(work, "push", "-q", "--force", "origin", "main")
    result = docket("tick", "--git", str(checkout), "--json")
    assert result.code == 0
    report = result.json()
    assert report["git"]["ok"] is False and "failed" in report["git"]["message"]
    assert report["accepted"] == 0
    assert docket("status", "--json").json()["total"] == 1
    human = docket("tick", "--git", str(checkout)).out
    assert human.startswith("git pull FAILED (nothing read from the checkout this pass)")
    # an operator repairs the checkout; the next tick reads it
    subprocess.run(["git", "fetch", "-q"], cwd=checkout, check=True)
    subprocess.run(["git", "reset", "-q", "--hard", "origin/main"], cwd=checkout, check=True)
    report = docket("tick", "--git", str(checkout), "--json").json()
    assert report["git"]["ok"] is True and report["accepted"] == 1
    assert origin.exists()
