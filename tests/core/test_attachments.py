"""Attachments are copied in bounded slices: a big copy never holds up other documents."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from docket.attachments import AttachmentError, copy_attachments
from tests.conftest import drop

HEADER = "apiVersion: docket/v1\nkind: CapabilityRequest\n"
FILES = 3_000  # the 20,000 of the issue are measured in docs/intake.md


def _engine_state(home: Path, request: str) -> str:
    conn = sqlite3.connect(home / "state" / "docket.db")
    try:
        return conn.execute("SELECT e.engine_state FROM executions e JOIN requests r ON "
                            "r.current_execution=e.id WHERE r.name=?", (request,)).fetchone()[0]
    finally:
        conn.close()


@pytest.mark.slow
def test_thousands_of_attachments_do_not_hold_up_another_request(home, docket):
    (home / "docket.yaml").write_text("copy_slice_s: 0.001\n")
    big = home / "spool" / "attachments" / "big"
    for i in range(FILES):
        sub = big / f"d{i // 1000:02d}"
        if i % 1000 == 0:
            sub.mkdir(parents=True)
        (sub / f"f{i:05d}.txt").write_text(f"file {i}\n")
    drop(home, "big.yaml", HEADER + "metadata: {name: big}\nspec:\n  capability: \"null\"\n"
                                    "  files: [big]\n")
    first = docket("tick", "--json").json()
    assert first["accepted"] == 1
    assert _engine_state(home, "big") == "starting"  # copying, one slice a pass

    drop(home, "small.yaml", HEADER + "metadata: {name: small}\nspec:\n  capability: "
                                      "\"null\"\n")
    second = docket("tick", "--json").json()
    assert second["accepted"] == 1 and second["documents"][0]["request"] == "small"
    assert _engine_state(home, "big") == "starting"
    rawdata = next((home / "work" / "big").glob("v1/e1*")) / "rawdata" / "big"
    copied = sum(len(files) for _d, _s, files in os.walk(rawdata))
    assert 0 < copied < FILES  # the small request did not wait for the whole copy

    (home / "docket.yaml").write_text("copy_slice_s: 10\n")
    docket("tick", "--wait")
    assert docket("show", "big", "--json").json()["request"]["state"] == "complete"
    names = sorted(str(p.relative_to(rawdata)) for p in rawdata.rglob("*") if p.is_file())
    assert len(names) == FILES and not [n for n in names if n.endswith(".copying")]
    assert (rawdata / "d02" / "f02999.txt").read_text() == "file 2999\n"


def test_a_copy_goes_on_where_it_stopped_and_never_shows_half_a_file(tmp_path):
    source = tmp_path / "big.bin"
    with open(source, "wb") as fh:
        fh.truncate(300 << 20)  # sparse: 300 MiB to copy, five 64 MiB chunks
    rawdata = tmp_path / "rawdata"
    assert copy_attachments([source], rawdata, budget_s=0.0) is False
    assert not (rawdata / "big.bin").exists()  # only the hidden partial copy, if anything
    rounds = 1
    while not copy_attachments([source], rawdata, budget_s=0.01):
        rounds += 1
        assert not (rawdata / "big.bin").exists()
        assert rounds < 10_000
    done = (rawdata / "big.bin").stat()
    assert done.st_size == source.stat().st_size
    assert done.st_mtime_ns == source.stat().st_mtime_ns
    assert not (rawdata / ".big.bin.copying").exists()


def test_the_copy_refuses_what_is_not_a_regular_file(tmp_path):
    folder = tmp_path / "obs"
    folder.mkdir()
    (folder / "ok.txt").write_text("x")
    os.mknod(folder / "zero", stat.S_IFCHR | 0o644, os.makedev(1, 5))
    with pytest.raises(AttachmentError, match="obs/zero is a character device"):
        copy_attachments([folder], tmp_path / "rawdata")
