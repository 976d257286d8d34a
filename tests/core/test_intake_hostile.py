"""One document's problem is that document's problem: hostile input together with good
documents in one pass, through ``docket tick`` and a live ``docket watch``."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import BIN, drop, request_doc

HEADER = "apiVersion: docket/v1\nkind: CapabilityRequest\n"
LONG_NAME = "n" * 240 + ".yaml"

# file name -> (content, reason in its .error); the content of entries made by
# _make_entries is None
CASES: dict[str, tuple[str | None, str]] = {
    "deep.yaml": (HEADER + "metadata: {name: deep}\nspec:\n  capability: demo\n"
                  "  parameters: {targets: " + "[" * 1000 + "]" * 1000 + "}\n",
                  "the document nests more than 64 levels deep"),
    "block-deep.yaml": (HEADER + "metadata: {name: bdeep}\nspec:\n  capability: demo\n"
                        "  parameters:\n    targets:\n" + "    " + "- " * 3000 + "x\n",
                        "the document nests more than 64 levels deep"),
    "set.yaml": (HEADER + "metadata: {name: set}\nspec:\n  capability: demo\n"
                 "  parameters: {targets: !!set {a, b, c}}\n",
                 "line 6, column 25: the YAML type !!set is not allowed (write a list "
                 "instead)"),
    "binary-tag.yaml": (HEADER + "metadata: {name: bin}\nspec:\n  capability: \"null\"\n"
                        "  parameters: {message: !!binary aGVsbG8=}\n",
                        "the YAML type !!binary is not allowed"),
    "loop-files.yaml": (HEADER + "metadata: {name: loopf}\nspec:\n  capability: demo\n"
                        "  files: [loop1]\n",
                        "(spec.files[0]): path 'loop1' cannot be resolved (a symlink loop?)"),
    "loop-output.yaml": (None, "(spec.output_dir): output_dir '"),  # see _make_entries
    "device.yaml": (HEADER + "metadata: {name: dev}\nspec:\n  capability: demo\n"
                    "  files: [zero]\n",
                    "(spec.files[0]): zero is a character device; an attachment is a "
                    "regular file or a directory of regular files"),
    "fifo-attachment.yaml": (HEADER + "metadata: {name: fifo}\nspec:\n  capability: demo\n"
                             "  files: [pipe]\n", "(spec.files[0]): pipe is a FIFO"),
    "link-in-folder.yaml": (HEADER + "metadata: {name: linkdir}\nspec:\n  capability: demo"
                            "\n  files: [folder]\n",
                            "(spec.files[0]): folder/escape is a symlink; attachments hold "
                            "regular files only"),
    LONG_NAME: ("kind: Pod\n", "unknown kind 'Pod'"),
    "sock.yaml": (None, "spool files must be regular files; this is a socket"),
    "folder.yaml": (None, "spool files must be regular files; this is a directory"),
    "pipe.yaml": (None, "spool files must be regular files; this is a FIFO (named pipe)"),
    "unreadable.yaml": (None, "the file cannot be opened: Permission denied (for more than "
                              "1 s); fix it and drop it again"),
}
GOOD = ("a-good.yaml", "m-good.yaml", "zz-good.yaml")


def _make_entries(home: Path, keep: list[socket.socket]) -> None:
    """Attachments and spool entries that no YAML text can make."""
    attachments = home / "spool" / "attachments"
    attachments.mkdir(parents=True, exist_ok=True)
    (attachments / "loop1").symlink_to("loop2")
    (attachments / "loop2").symlink_to("loop1")
    os.mknod(attachments / "zero", stat.S_IFCHR | 0o644, os.makedev(1, 5))  # /dev/zero
    os.mkfifo(attachments / "pipe")
    (attachments / "folder").mkdir()
    (attachments / "folder" / "data.txt").write_text("fine")
    (attachments / "folder" / "escape").symlink_to("/etc/passwd")
    work = home / "work"
    work.mkdir(exist_ok=True)
    (work / "out1").symlink_to(work / "out2")
    (work / "out2").symlink_to(work / "out1")
    incoming = home / "spool" / "incoming"
    drop(home, "loop-output.yaml", HEADER + "metadata: {name: loopo}\nspec:\n  capability: "
         f"demo\n  output_dir: {work / 'out1'}\n")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(incoming / "sock.yaml"))
    keep.append(server)
    (incoming / "folder.yaml").mkdir()
    (incoming / "folder.yaml" / "inside.yaml").write_text(request_doc("inside"))
    os.mkfifo(incoming / "pipe.yaml")
    drop(home, "unreadable.yaml", request_doc("unreadable"))
    os.chmod(incoming / "unreadable.yaml", 0)


def _drop_all(home: Path, keep: list[socket.socket]) -> None:
    _make_entries(home, keep)
    for name, (text, _reason) in CASES.items():
        if text is not None:
            drop(home, name, text)
    for name in GOOD:
        drop(home, name, request_doc(name.removesuffix(".yaml")))


def _error_of(home: Path, name: str) -> str:
    rejected = home / "spool" / "rejected"
    for error in rejected.glob("*.error"):
        text = error.read_text()
        if text.startswith(f"{name}: "):
            return text
    raise AssertionError(f"no .error for {name}: {sorted(p.name for p in rejected.iterdir())}")


def _check_verdicts(home: Path) -> None:
    for name in GOOD:
        request = name.removesuffix(".yaml")
        assert (home / "spool" / "accepted" / request / "v1.yaml").exists(), name
    for name, (_text, reason) in CASES.items():
        assert reason in _error_of(home, name), name
    assert sorted(os.listdir(home / "spool" / "incoming")) == []
    # the set-aside entries are kept whole: the directory with its content
    moved = home / "spool" / "rejected" / "folder.yaml" / "inside.yaml"
    assert moved.read_text() == request_doc("inside")
    # no temporary file is left under any name
    leftovers = [p for p in (home / "spool").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def _no_dac_override() -> list[str]:
    """Run as root but without the capabilities that let root read any file: a file
    with mode 000 then really cannot be read."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to deny a read for real")
    drop = "-dac_override,-dac_read_search"
    return ["setpriv", f"--bounding-set={drop}", f"--inh-caps={drop}"]


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    keep: list[socket.socket] = []
    yield keep
    for s in keep:
        s.close()


def test_hostile_entries_and_good_documents_in_one_tick(home, sockets):
    (home / "docket.yaml").write_text("unreadable_s: 1\n")
    _drop_all(home, sockets)
    # --wait returns: the unreadable file is set aside after unreadable_s, not waited for
    out = subprocess.run([*_no_dac_override(), str(BIN / "docket"), "tick", "--wait",
                          "--home", str(home)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    assert f"{len(GOOD)} accepted, 0 duplicate, {len(CASES)} rejected" in out.stdout
    _check_verdicts(home)


def test_the_watcher_takes_hostile_entries_with_good_documents(home, docket, sockets):
    (home / "docket.yaml").write_text("unreadable_s: 1\n")
    docket("tick")  # the database exists, the watcher starts at once
    watch = subprocess.Popen([*_no_dac_override(), str(BIN / "docket"), "watch", "--home",
                              str(home)], stderr=subprocess.PIPE, text=True)
    try:
        _drop_all(home, sockets)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and watch.poll() is None:
            if not os.listdir(home / "spool" / "incoming") and all(
                    (home / "spool" / "accepted" / n.removesuffix(".yaml")).exists()
                    for n in GOOD):
                break
            time.sleep(0.2)
        assert watch.poll() is None, "the watcher died"
        _check_verdicts(home)
    finally:
        watch.terminate()
        _out, err = watch.communicate(timeout=30)
    assert watch.returncode == 0
    assert "Traceback" not in err


def test_an_unexpected_error_rejects_only_that_document(home, docket, monkeypatch):
    """A bug met while deciding one document (here injected: real input that triggers one
    is, by definition, not known) rejects that document, with its traceback in the
    home's log; the documents before and after it in the same batch are accepted."""
    import docket.intake as intake

    real = intake.check_document

    def buggy(raw, home_, capabilities, **options):
        if b"boom" in raw:
            raise KeyError("the bug")
        return real(raw, home_, capabilities, **options)

    monkeypatch.setattr(intake, "check_document", buggy)
    drop(home, "a.yaml", request_doc("first"))
    drop(home, "b.yaml", request_doc("boom"))
    drop(home, "c.yaml", request_doc("last"))
    result = docket("tick", "--json")
    assert result.code == 0, result.err
    report = result.json()
    assert report["accepted"] == 2 and report["rejected"] == 1
    error = (home / "spool" / "rejected" / "b.yaml.error").read_text()
    assert "internal error while reading it: KeyError: 'the bug'" in error
    log = (home / "state" / "docket.log").read_text()
    assert "b.yaml: internal error while reading it" in log
    assert 'raise KeyError("the bug")' in log  # the traceback
    shown = {r["name"] for r in docket("status", "--json").json()["requests"]}
    assert shown == {"first", "last"}
    assert docket("rebuild-state", "--check").code == 0


def test_a_move_that_fails_is_owed_and_does_not_strand_the_others(home, docket):
    """The decisions are committed; a move after the commit that fails (something in the
    way of the .error file) leaves that file in the spool, owed, and moves the others."""
    rejected = home / "spool" / "rejected"
    (rejected / "bad.yaml.error").mkdir(parents=True)  # in the way of the .error file
    drop(home, "a.yaml", request_doc("before"))
    drop(home, "bad.yaml", "kind: Pod\n")
    drop(home, "c.yaml", request_doc("after"))
    report = docket("tick", "--json").json()
    assert report["accepted"] == 2 and report["rejected"] == 1
    assert sorted(os.listdir(home / "spool" / "incoming")) == ["bad.yaml"]
    assert (home / "spool" / "accepted" / "after" / "v1.yaml").exists()
    assert "moving it failed" in (home / "state" / "docket.log").read_text()
    (rejected / "bad.yaml.error").rmdir()
    again = docket("tick", "--json").json()
    assert again["rejected"] == 1 and again["accepted"] == 0
    assert "unknown kind 'Pod'" in (rejected / "bad.yaml.error").read_text()
    assert not os.listdir(home / "spool" / "incoming")
    history = docket("history", "before", "--json").json()["events"]
    assert [e["type"] for e in history].count("version.accepted") == 1
    # decided once: the second pass finished the move, it did not reject it again
    import sqlite3

    conn = sqlite3.connect(home / "state" / "docket.db")
    rejections = conn.execute("SELECT count(*) FROM events WHERE type='document.rejected'"
                              ).fetchone()[0]
    conn.close()
    assert rejections == 1
    assert _owed_rows(home) == []  # the move is done: nothing is owed any more


def _owed_rows(home: Path) -> list[tuple[str, str]]:
    import sqlite3

    conn = sqlite3.connect(home / "state" / "docket.db")
    try:
        return conn.execute("SELECT status, request FROM intake_files ORDER BY status"
                            ).fetchall()
    finally:
        conn.close()


def test_a_pass_that_moved_everything_owes_nothing(home, docket):
    """Rejected and duplicate files are owed (intake_files) until moved, then forgotten;
    accepted ones are never noted there, and an owed move left over is kept until done."""
    rejected = home / "spool" / "rejected"
    (rejected / "stuck.yaml.error").mkdir(parents=True)  # in the way of the .error file
    drop(home, "a.yaml", request_doc("one"))
    drop(home, "bad.yaml", "kind: Pod\n")
    drop(home, "stuck.yaml", "kind: Pod\n")
    report = docket("tick", "--json").json()
    assert (report["accepted"], report["rejected"]) == (1, 2)
    assert _owed_rows(home) == [("rejected", None)]  # stuck.yaml, still in the spool
    drop(home, "again.yaml", request_doc("one"))
    report = docket("tick", "--json").json()
    assert report["duplicates"] == 1
    assert _owed_rows(home) == [("rejected", None)]
    (rejected / "stuck.yaml.error").rmdir()
    docket("tick")
    assert not os.listdir(home / "spool" / "incoming")
    assert _owed_rows(home) == []


@pytest.mark.parametrize("command", ["validate", "submit"])
def test_deep_nesting_in_validate_and_submit_is_a_reason_not_a_traceback(docket, tmp_path,
                                                                         command):
    deep = tmp_path / "deep.yaml"
    deep.write_text(CASES["deep.yaml"][0] or "")
    result = docket(command, str(deep))
    assert result.code == (1 if command == "validate" else 8)
    assert "Traceback" not in result.out + result.err
    assert "nests more than 64 levels deep" in result.out + result.err


def test_nesting_through_aliases_is_refused(docket, tmp_path):
    chain = "".join(f"a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 200))
    path = tmp_path / "chain.yaml"
    path.write_text(HEADER + "metadata: {name: chain}\nspec:\n  capability: demo\n"
                    "x0: &a0 [1]\n" + chain)
    result = docket("validate", str(path))
    assert result.code == 1
    assert "nests more than 64 levels deep (through aliases)" in result.out


def test_the_same_content_with_a_date_is_one_request(home, docket):
    text = request_doc("dated", message="x").replace("message: x", "message: 2026-12-01")
    for name in ("one.yaml", "two.yaml", "three.yaml"):
        drop(home, name, text)
        docket("tick")
    shown = docket("show", "dated", "--json").json()
    assert len(shown["versions"]) == 1
    assert shown["versions"][0]["spec"]["parameters"]["message"] == "2026-12-01"
