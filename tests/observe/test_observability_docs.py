"""docs/observability.md stays true: its config validates, its payload, signature check,
exit codes, colours, queries and metric names are what docket does."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.conftest import REPO, drop, request_doc, run_docket
from tests.observe.receivers import Webhook

DOC = (REPO / "docs" / "observability.md").read_text()
BLOCKS = re.findall(r"```(yaml|json|python|text)\n(.*?)```", DOC, re.DOTALL)


def _blocks(kind: str) -> list[str]:
    return [text for k, text in BLOCKS if k == kind]


def test_the_notifications_example_validates(home):
    from docket.notify import load_notifications

    [text] = _blocks("yaml")
    (home / "notifications.yaml").write_text(text)
    config = load_notifications(home)
    assert sorted(config.targets) == ["ops-hook", "pager", "qa-mail"]
    assert [r.events for r in config.rules] == [["awaiting", "failed"], ["held", "failed"],
                                                ["notify"]]
    from schemas.notifications import EVENT_KINDS

    for kind in EVENT_KINDS:
        assert f"`{kind}`" in DOC


def test_the_documented_payload_and_signature_check_are_real(home, monkeypatch):
    [payload_text] = _blocks("json")
    documented = json.loads(payload_text)
    [verify_code] = _blocks("python")
    namespace: dict = {}
    exec(compile(verify_code, "observability.md", "exec"), namespace)  # noqa: S102
    verify = namespace["verify"]
    monkeypatch.setenv("DOCKET_HOOK_SECRET", "k")
    with Webhook(b"k") as hook:
        (home / "notifications.yaml").write_text(yaml.safe_dump({
            "targets": {"ops-hook": {"webhook": {"url": hook.url,
                                                 "secret_env": "DOCKET_HOOK_SECRET"}}},
            "rules": [{"events": ["failed"], "notify": ["ops-hook"]}],
            "report_url": "https://docket.example.org/report"}))
        labelled = yaml.safe_load(request_doc("vlass-cal-t12", exit_code=1))
        labelled["metadata"]["labels"] = {"survey": "vlass"}
        drop(home, "t12.yaml", yaml.safe_dump(labelled))
        run_docket("tick", "--wait", "--home", str(home))
        run_docket("notifications", "send", "--home", str(home))
        [post] = hook.posts
    real = post.json()
    assert sorted(real) == sorted(documented)
    assert sorted(real["links"]) == sorted(documented["links"])
    assert real["event"] == "failed" and real["labels"] == {"survey": "vlass"}
    assert verify(b"k", post.body, post.headers["X-Docket-Signature-256"])
    assert not verify(b"other", post.body, post.headers["X-Docket-Signature-256"])
    assert post.headers["Idempotency-Key"] == real["id"]

    listed = run_docket("notifications", "list", "--home", str(home)).out.splitlines()
    [documented_list] = [t for t in _blocks("text") if "notifications list" in t]
    doc_header = next(line for line in documented_list.splitlines()
                      if line.startswith("ID "))
    assert doc_header.split() == listed[2].split()


def test_the_exit_code_table_is_the_follower_s():
    from docket.follow import EXIT_CODES

    table = dict(re.findall(r"^\| (\d) \| (.+?) \|$", DOC, re.MULTILINE))
    words = {"complete": "complete", "failed": "failed", "waiting": "waits for a person",
             "cancelled": "cancelled", "rejected": "rejected", "timeout": "--timeout-s"}
    for outcome, code in EXIT_CODES.items():
        assert words[outcome] in table[str(code)]
    assert "no such request" in table["3"]


def test_the_colour_table_names_every_node_state():
    from docket.htmlreport import NODE_COLOURS

    section = DOC[DOC.index("| state | colour |"):]
    states = re.findall(r"^\| (\w+)", section, re.MULTILINE)[:len(NODE_COLOURS) + 1]
    assert set(NODE_COLOURS) <= set(states)


def test_the_canned_queries_and_metric_names_are_documented(home, tmp_path):
    from docket.browse import QUERIES

    for name in QUERIES:
        assert f"`{name}`" in DOC
    pytest.importorskip("prometheus_client")
    drop(home, "a.yaml", request_doc("a"))
    run_docket("tick", "--wait", "--home", str(home))
    target = tmp_path / "docket.prom"
    assert run_docket("metrics", "--prometheus", str(target), "--home", str(home)).code == 0
    written = set(re.findall(r"^# TYPE (\w+) ", target.read_text(), re.MULTILINE))
    documented = set(re.findall(r"`(docket_\w+)", DOC))
    for family in ("queue_waiting", "queue_running", "queue_paused", "queue_max_jobs"):
        documented.add(f"docket_{family}")
    assert written <= documented and "docket_executions" in written


@pytest.mark.parametrize("command", ["follow", "notifications list", "notifications send",
                                     "notifications retry", "report", "browse", "metrics"])
def test_every_new_command_has_help_and_is_in_the_readme(command):
    result = run_docket(*command.split(), "--help")
    assert result.code == 0 and "Usage: docket " + command in " ".join(result.out.split())
    assert f"docket {command.split()[0]}" in (REPO / "README.md").read_text()
    assert f"docket {command}" in DOC
