"""What people read: no control character from a document reaches a terminal raw; what
scripts read (--json) is exact and typed; a paused workflow says it is held."""

from __future__ import annotations

import sqlite3
import time

import yaml

from cli.common import printable
from tests.conftest import drop, request_doc

ESCAPES = ["\x1b]0;owned\x07", "red\x1b[31m", "wipe\x1b[2J", "back\rover", "rtl\u202eexe"]


def _tagged(name: str, tags: list[str]) -> str:
    return yaml.safe_dump({"apiVersion": "docket/v1", "kind": "CapabilityRequest",
                           "metadata": {"name": name},
                           "spec": {"capability": "null", "parameters": {},
                                    "tags": tags}}, sort_keys=False)


def _raw_controls(text: str) -> list[str]:
    return [c for c in text if (ord(c) < 32 and c != "\n") or 0x7f <= ord(c) <= 0x9f
            or c == "\u202e"]


def test_printable_escapes_what_a_terminal_would_act_on():
    assert printable("a\x1b[31mb\n") == "a\\x1b[31mb\n"
    assert printable("cell\nrow\ttab", one_line=True) == "cell\\x0arow\\x09tab"
    assert printable("bidi \u202e and \x9b csi") == "bidi \\u202e and \\x9b csi"
    assert printable("plain ünïcode, ✓") == "plain ünïcode, ✓"


def test_results_show_and_history_escape_tags_and_json_keeps_them(home, docket):
    drop(home, "tagged.yaml", _tagged("tagged", ESCAPES + ["two\nlines"]))
    assert docket("tick", "--wait").code == 0
    for command in (["results"], ["show", "tagged"], ["status"], ["history", "tagged"],
                    ["inspect", "tagged"]):
        out = docket(*command)
        assert out.code == 0, (command, out.err)
        assert not _raw_controls(out.out), (command, out.out)
    listed = docket("results").out
    assert "\\x1b]0;owned\\x07" in listed and "red\\x1b[31m" in listed
    # a newline in a value cannot start a row of its own
    assert len(listed.strip().splitlines()) == 2 and "two\\x0alines" in listed
    exact = docket("results", "--json").json()["executions"][0]["tags"]
    assert exact == ESCAPES + ["two\nlines"]


def test_a_spool_file_name_with_escapes_is_printed_escaped(home, docket):
    drop(home, "evil\x1b[31m.yaml", "apiVersion: docket/v1\nkind: Nonsense\n")
    out = docket("tick")
    assert out.code == 0, out.err
    assert "rejected: evil\\x1b[31m.yaml" in out.out and not _raw_controls(out.out)


def test_a_newline_in_a_spool_file_name_cannot_start_a_line_of_its_own(home, docket):
    drop(home, "evil\nrejected: fake.yaml", "apiVersion: docket/v1\nkind: Nonsense\n")
    drop(home, "tab\tname.yaml", _tagged("tabbed", ["x"]))
    out = docket("tick")
    assert out.code == 0, out.err
    lines = out.out.splitlines()
    assert "rejected: evil\\x0arejected: fake.yaml" in lines
    assert not [line for line in lines if line.startswith("rejected: fake")], out.out
    assert any(line.startswith("accepted: tab\\x09name.yaml") for line in lines), out.out
    # the same file name reaches scripts exactly
    assert (home / "spool" / "rejected" / "evil\nrejected: fake.yaml").exists()


def test_validate_and_submit_print_a_file_name_with_a_newline_on_one_line(home, docket,
                                                                           tmp_path):
    bad = tmp_path / "two\nlines.yaml"
    bad.write_text("apiVersion: docket/v1\nkind: Nonsense\n")
    for command in (["validate", str(bad)], ["submit", str(bad)]):
        out = docket(*command)
        assert out.code != 0, (command, out.out)
        assert "two\\x0alines.yaml" in out.out + out.err, (command, out.out, out.err)
        assert not [line for line in (out.out + out.err).splitlines()
                    if line.startswith("lines.yaml")], (command, out.out, out.err)


def test_show_json_gives_lists_as_lists(home, docket):
    drop(home, "listed.yaml", _tagged("listed", ["epoch-1", "m31"]))
    assert docket("tick", "--wait").code == 0
    execution = docket("show", "listed", "--json").json()["executions"][0]
    assert execution["tags"] == ["epoch-1", "m31"]
    assert execution["products"] == [] and execution["plots"] == []
    assert execution["event_ids"] == [] and isinstance(execution["parameters"], dict)
    assert execution["held"] is False


def test_show_says_held_for_a_paused_workflow(home, docket):
    drop(home, "slow.yaml", request_doc("slow-one", "demo", targets=["a"], sleep_s=1.0))
    db = home / "state" / "docket.db"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        docket("tick")
        with sqlite3.connect(db) as conn:
            if conn.execute("SELECT count(*) FROM executions WHERE engine_state='running'"
                            ).fetchone()[0]:
                break
        time.sleep(0.05)
    assert docket("pause", "slow-one", "--reason", "disk nearly full").code == 0
    shown = docket("show", "slow-one")
    assert "engine local held (paused" in shown.out, shown.out
    assert docket("show", "slow-one", "--json").json()["executions"][0]["held"] is True
    assert docket("resume", "slow-one").code == 0
    assert "engine local running" in docket("show", "slow-one", "--events", "0").out
    assert docket("tick", "--wait").code == 0
    assert docket("show", "slow-one", "--json").json()["request"]["state"] == "complete"


def test_follow_prints_a_spool_file_name_with_escapes_escaped(home, docket):
    drop(home, "evil\x1b]0;owned\x07.yaml", _tagged("followed", ["x"]))
    assert docket("tick", "--wait").code == 0
    out = docket("follow", "followed")
    assert out.code == 0, out.err
    assert "evil\\x1b]0;owned\\x07.yaml" in out.out and not _raw_controls(out.out)
    # scripts get the name exactly
    lines = [line for line in docket("follow", "followed", "--json").out.splitlines()
             if "evil" in line]
    assert lines and "\\u001b]0;owned\\u0007" in lines[0]
