"""The composition root (docket.app): building it, or a watcher on it, writes nothing;
the first pass does the writes a home needs (folders, schema, archive repair)."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from docket.app import open_home
from docket.home import resolve_home
from docket.watcher import Watcher
from tests.conftest import REPO, drop, request_doc


def _snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every file and folder under ``root``: mtime, size, and a file's content hash."""
    seen = {}
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = Path(folder) / name
            st = path.lstat()
            digest = (hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file()
                      else "")
            seen[str(path.relative_to(root))] = (st.st_mtime_ns, st.st_size, digest)
    st = root.stat()
    seen["."] = (st.st_mtime_ns, st.st_size, "")
    return seen


def test_building_the_root_or_a_watcher_on_a_home_that_ran_writes_nothing(home, docket):
    drop(home, "a.yaml", request_doc("a"))
    assert docket("tick", "--wait").code == 0
    assert docket("show", "a", "--json").json()["request"]["state"] == "complete"
    before = _snapshot(home)
    assert "state/docket.db" in before and "spool/accepted/a/v1.yaml" in before

    open_home(home).close()
    open_home(home, readonly=True).close()
    Watcher(resolve_home(home)).close()
    assert _snapshot(home) == before

    # the commands that only look open the home read-only: they change nothing either,
    # but for the WAL index (-shm), where every SQLite reader marks what it reads
    def looked(snapshot: dict[str, tuple[int, int, str]]) -> dict[str, tuple[int, int, str]]:
        return {k: v for k, v in snapshot.items() if not k.endswith("-shm")}

    for command in (["status"], ["show", "a"], ["history", "a"], ["queue", "list"],
                    ["results"], ["metrics"]):
        assert docket(*command).code == 0, command
        assert looked(_snapshot(home)) == looked(before), command


def test_building_a_watcher_on_an_empty_folder_creates_nothing_until_its_first_pass(
        tmp_path):
    root = tmp_path / "home"
    shutil.copytree(REPO / "templates", root / "templates")
    before = _snapshot(root)

    watcher = Watcher(resolve_home(root))
    try:
        assert _snapshot(root) == before
        assert not (root / "state").exists() and not (root / "spool").exists()
        report = watcher.step()  # the first pass makes the home's folders and database
    finally:
        watcher.close()
    assert report.as_dict()["accepted"] == 0
    assert (root / "spool" / "incoming").is_dir() and (root / "spool" / "rejected").is_dir()
    assert (root / "state" / "docket.db").is_file()


def test_the_first_pass_puts_back_an_archive_copy_a_power_cut_took(home, docket):
    drop(home, "a.yaml", request_doc("a"))
    assert docket("tick").code == 0
    archived = home / "spool" / "accepted" / "a" / "v1.yaml"
    document = archived.read_bytes()
    archived.unlink()  # as if the unsynced copy never reached the disk

    watcher = Watcher(resolve_home(home))
    try:
        assert not archived.exists()  # building the watcher repairs nothing
        watcher.step()
    finally:
        watcher.close()
    assert archived.read_bytes() == document


def test_a_read_only_root_on_a_home_that_never_ran(tmp_path):
    from docket.errors import NotFound

    root = tmp_path / "new"
    shutil.copytree(REPO / "templates", root / "templates")
    with open_home(root, readonly=True, empty_if_new=True) as app:
        assert app.store.request("anything") is None  # an empty state, in memory
    assert not (root / "state").exists()
    with pytest.raises(NotFound, match="no docket database"), open_home(
            root, readonly=True) as app:
        app.store.request("anything")
