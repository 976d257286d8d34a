"""``conveyor``: real moves between a processing directory and a QA area."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

CONVEYOR = Path(sys.executable).parent / "conveyor"
_EMPTY_CONFIG: list[Path] = []


@pytest.fixture(autouse=True)
def empty_config(tmp_path_factory: pytest.TempPathFactory) -> None:
    """No tools.yaml of the machine leaks into the tests; settings come from env."""
    if not _EMPTY_CONFIG:
        path = tmp_path_factory.mktemp("config") / "tools.yaml"
        path.write_text("{}\n")
        _EMPTY_CONFIG.append(path)


def conveyor(*args: str, qa: Path | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKET_")}
    env["DOCKET_TOOLS_CONFIG"] = str(_EMPTY_CONFIG[0])
    if qa is not None:
        env["DOCKET_CONVEYOR_QA_AREA"] = str(qa)
    return subprocess.run([str(CONVEYOR), *args], capture_output=True, text=True, env=env,
                          timeout=60)


def snapshot(top: Path) -> dict[str, bytes]:
    """Every file under ``top`` (links followed) and its content."""
    files = {}
    for dirpath, _dirs, names in os.walk(top, followlinks=True):
        for name in names:
            path = Path(dirpath) / name
            files[path.relative_to(top).as_posix()] = path.read_bytes()
    return files


def make_run(parent: Path, name: str = "req-7") -> Path:
    d = parent / name
    (d / "rawdata" / "obs.ms" / "ANTENNA").mkdir(parents=True)
    (d / "rawdata" / "obs.ms" / "table.f0").write_bytes(os.urandom(4096))
    (d / "rawdata" / "obs.ms" / "ANTENNA" / "table.f1").write_bytes(b"ant" * 10)
    (d / "working").mkdir()
    (d / "working" / "casa-20240101-000000.log").write_text("INFO\tdone\n")
    (d / "working" / "rel-link").symlink_to("casa-20240101-000000.log")
    (d / "products").mkdir()
    (d / "products" / "image.fits").write_bytes(os.urandom(2048))
    (d / "request.yaml").write_text("kind: Request\n")
    (d / "metadata.json").write_text(json.dumps({
        "docket": 1, "request": name, "version": 2, "execution": 3, "capability": "null",
        "parameters": {}, "directory": str(d), "output_dir": None,
        "created": "2024-01-01T00:00:00+00:00"}))
    return d


@pytest.fixture
def qa(tmp_path: Path) -> Path:
    area = tmp_path / "qa"
    area.mkdir()
    return area


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    (tmp_path / "proc").mkdir()
    return make_run(tmp_path / "proc")


@pytest.fixture
def other_fs_qa() -> Iterator[Path]:
    """A QA area on another file system (tmpfs), so moves become copies."""
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm")
    area = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="docket-qa-"))
    if area.stat().st_dev == Path(tempfile.gettempdir()).stat().st_dev:
        pytest.skip("/dev/shm is on the same file system as the temp dir")
    yield area
    subprocess.run(["rm", "-rf", str(area)], check=True)


def test_deliver_then_retrieve(run_dir: Path, qa: Path) -> None:
    before = snapshot(run_dir)
    proc = conveyor("--deliver", str(run_dir / "metadata.json"), qa=qa)
    assert proc.returncode == 0, proc.stderr
    q = qa / "req-7.v2.e3"
    assert proc.stdout == ("rawdata: moved to the QA area\nworking: moved to the QA area\n"
                           f"products: moved to the QA area\nQA folder: {q}\n")
    for part in ("rawdata", "working", "products"):
        assert (run_dir / part).is_symlink()
        assert os.readlink(run_dir / part) == str(q / part)
        assert (q / part).is_dir() and not (q / part).is_symlink()
    assert os.readlink(q / "processing") == str(run_dir)
    assert json.loads((q / "metadata.json").read_text())["request"] == "req-7"
    # The DA sees the same files through either path; relative links survive the move.
    assert snapshot(run_dir) == before
    assert (q / "working" / "rel-link").is_symlink()

    again = conveyor("--deliver", str(run_dir / "metadata.json"), qa=qa)
    assert again.returncode == 0
    assert again.stdout.startswith("rawdata: already in place\n")

    proc = conveyor("--retrieve", "--json", str(run_dir / "metadata.json"), qa=qa)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["parts"] == {"rawdata": "retrieved", "working": "retrieved",
                               "products": "retrieved"}
    assert record["qa_dir_removed"] is True
    for part in ("rawdata", "working", "products"):
        assert (run_dir / part).is_dir() and not (run_dir / part).is_symlink()
    assert snapshot(run_dir) == before
    assert os.listdir(qa) == []
    assert sorted(os.listdir(run_dir)) == ["metadata.json", "products", "rawdata",
                                           "request.yaml", "working"]


def test_image_runs_move_only_products(run_dir: Path, qa: Path) -> None:
    proc = conveyor("--deliver-img", str(run_dir / "metadata.json"), qa=qa)
    assert proc.returncode == 0, proc.stderr
    assert (run_dir / "products").is_symlink()
    assert not (run_dir / "rawdata").is_symlink() and not (run_dir / "working").is_symlink()
    assert sorted(os.listdir(qa / "req-7.v2.e3")) == ["metadata.json", "processing",
                                                      "products"]
    proc = conveyor("--retrieve-img", str(run_dir / "metadata.json"), qa=qa)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "products: back in the processing directory\n"
    assert not (run_dir / "products").is_symlink()
    assert os.listdir(qa) == []


def test_qa_fail_returns_run_and_marks_it(run_dir: Path, qa: Path) -> None:
    before = snapshot(run_dir)
    assert conveyor("--deliver", str(run_dir / "metadata.json"), qa=qa).returncode == 0
    proc = conveyor("--qa-fail", str(run_dir / "metadata.json"), qa=qa)
    assert proc.returncode == 0, proc.stderr
    marker = run_dir / ".docket-qa-failed"
    assert proc.stdout.endswith(f"marked for cleanup: {marker}\n")
    info = json.loads(marker.read_text())
    assert (info["request"], info["version"], info["execution"]) == ("req-7", 2, 3)
    assert snapshot(run_dir) == before | {".docket-qa-failed": marker.read_bytes()}
    assert os.listdir(qa) == []
    proc = conveyor("--deliver", str(run_dir / "metadata.json"), qa=qa)
    assert proc.returncode == 8
    assert proc.stderr == (f"Error: {run_dir} failed QA ({marker} exists) — a failed run "
                           "waits for the annihilator; start a new execution instead\n")


def test_retrieve_keeps_qa_folder_with_da_files(run_dir: Path, qa: Path) -> None:
    assert conveyor("--deliver", str(run_dir / "metadata.json"), qa=qa).returncode == 0
    (qa / "req-7.v2.e3" / "qa-notes.txt").write_text("looks fine")
    proc = conveyor("--retrieve", str(run_dir / "metadata.json"), qa=qa)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.endswith(f"QA folder {qa}/req-7.v2.e3 left in place: it still holds "
                                "qa-notes.txt\n")
    assert (qa / "req-7.v2.e3" / "qa-notes.txt").read_text() == "looks fine"


def test_across_file_systems(run_dir: Path, other_fs_qa: Path) -> None:
    before = snapshot(run_dir)
    proc = conveyor("--deliver", str(run_dir / "metadata.json"), qa=other_fs_qa)
    assert proc.returncode == 0, proc.stderr
    q = other_fs_qa / "req-7.v2.e3"
    assert (run_dir / "rawdata").is_symlink()
    assert snapshot(q / "rawdata") == {k.removeprefix("rawdata/"): v for k, v in before.items()
                                       if k.startswith("rawdata/")}
    assert sorted(os.listdir(run_dir)) == ["metadata.json", "products", "rawdata",
                                           "request.yaml", "working"]
    proc = conveyor("--retrieve", str(run_dir / "metadata.json"), qa=other_fs_qa)
    assert proc.returncode == 0, proc.stderr
    assert snapshot(run_dir) == before
    assert not (run_dir / "rawdata").is_symlink()
    assert os.listdir(other_fs_qa) == []


# Each interruption is recreated on disk exactly as the code leaves it at that point;
# running the command again must finish the job with every byte intact.

def _deliver_renamed_not_linked(d: Path, q: Path) -> None:
    os.rename(d / "working", q / "working")


def _deliver_copy_half_done(d: Path, q: Path) -> None:
    (q / ".products.partial").mkdir()
    (q / ".products.partial" / "image.fits").write_bytes(b"half")


def _deliver_copied_source_set_aside(d: Path, q: Path) -> None:
    subprocess.run(["cp", "-a", str(d / "rawdata"), str(q / "rawdata")], check=True)
    os.rename(d / "rawdata", d / ".rawdata.moved")


def _deliver_copied_not_swapped(d: Path, q: Path) -> None:
    subprocess.run(["cp", "-a", str(d / "rawdata"), str(q / "rawdata")], check=True)


@pytest.mark.parametrize("interrupt", [_deliver_renamed_not_linked, _deliver_copy_half_done,
                                       _deliver_copied_source_set_aside,
                                       _deliver_copied_not_swapped])
def test_deliver_finishes_after_interruption(run_dir: Path, qa: Path, interrupt) -> None:
    before = snapshot(run_dir)
    q = qa / "req-7.v2.e3"
    q.mkdir()
    interrupt(run_dir, q)
    proc = conveyor("--deliver", str(run_dir / "metadata.json"), qa=qa)
    assert proc.returncode == 0, proc.stderr
    assert all((run_dir / p).is_symlink() for p in ("rawdata", "working", "products"))
    assert snapshot(run_dir) == before
    assert sorted(os.listdir(run_dir)) == ["metadata.json", "products", "rawdata",
                                           "request.yaml", "working"]
    assert sorted(os.listdir(q)) == ["metadata.json", "processing", "products", "rawdata",
                                     "working"]


def _retrieve_moved_not_unlinked(d: Path, q: Path) -> None:
    os.rename(q / "products", d / ".products.copied")


def _retrieve_unlinked_not_renamed(d: Path, q: Path) -> None:
    os.rename(q / "products", d / ".products.copied")
    (d / "products").unlink()


def _retrieve_discard_half_done(d: Path, q: Path) -> None:
    (d / "working").unlink()
    subprocess.run(["cp", "-a", str(q / "working"), str(d / "working")], check=True)
    os.rename(q / "working", q / ".working.discard")
    next(p for p in (q / ".working.discard").iterdir() if p.is_file()).unlink()


def _retrieve_copy_half_done(d: Path, q: Path) -> None:
    (d / ".rawdata.partial").mkdir()
    (d / ".rawdata.partial" / "junk").write_bytes(b"half")


@pytest.mark.parametrize("interrupt", [_retrieve_moved_not_unlinked,
                                       _retrieve_unlinked_not_renamed,
                                       _retrieve_discard_half_done, _retrieve_copy_half_done])
def test_retrieve_finishes_after_interruption(run_dir: Path, qa: Path, interrupt) -> None:
    before = snapshot(run_dir)
    assert conveyor("--deliver", str(run_dir / "metadata.json"), qa=qa).returncode == 0
    interrupt(run_dir, qa / "req-7.v2.e3")
    proc = conveyor("--retrieve", str(run_dir / "metadata.json"), qa=qa)
    assert proc.returncode == 0, proc.stderr
    assert snapshot(run_dir) == before
    assert not any((run_dir / p).is_symlink() for p in ("rawdata", "working", "products"))
    assert sorted(os.listdir(run_dir)) == ["metadata.json", "products", "rawdata",
                                           "request.yaml", "working"]
    assert os.listdir(qa) == []


def test_lone_set_aside_copy_is_put_back(run_dir: Path, qa: Path) -> None:
    """If the QA copy vanished behind conveyor's back, the set-aside source is restored."""
    before = snapshot(run_dir)
    os.rename(run_dir / "products", run_dir / ".products.moved")
    proc = conveyor("--retrieve", str(run_dir / "metadata.json"), qa=qa)
    assert proc.returncode == 0, proc.stderr
    assert snapshot(run_dir) == before


def test_errors(tmp_path: Path, run_dir: Path, qa: Path) -> None:
    meta = str(run_dir / "metadata.json")
    proc = conveyor("--deliver", meta, qa=None)
    assert (proc.returncode, proc.stderr) == (
        8, "Error: conveyor.qa_area is not set — set it in tools.yaml or "
           "DOCKET_CONVEYOR_QA_AREA\n")
    proc = conveyor("--deliver", meta, qa=tmp_path / "nope")
    assert (proc.returncode, proc.stderr) == (
        3, f"Error: QA area {tmp_path}/nope does not exist — create it or fix "
           "conveyor.qa_area\n")
    proc = conveyor("--deliver", str(tmp_path / "missing.json"), qa=qa)
    assert (proc.returncode, proc.stderr) == (
        3, f"Error: {tmp_path}/missing.json does not exist — give the metadata.json of a "
           "processing directory that docket created\n")
    proc = conveyor("--deliver", "--retrieve", meta, qa=qa)
    assert (proc.returncode, proc.stderr) == (
        2, "Error: give exactly one of --deliver, --retrieve, --deliver-img, --retrieve-img, "
           "--qa-fail (got --deliver --retrieve) — see conveyor --help\n")
    bad = tmp_path / "bad.json"
    bad.write_text('{"docket": 1, "request": ')
    proc = conveyor("--deliver", str(bad), qa=qa)
    assert (proc.returncode, proc.stderr) == (
        8, f"Error: {bad} is not valid JSON: Expecting value at line 1 column 26 — "
           "metadata.json is written by docket's core; restore it or rerun the request\n")
    bad.write_text('{"docket": 1, "request": "../x", "version": 1, "execution": 1}')
    proc = conveyor("--deliver", str(bad), qa=qa)
    assert (proc.returncode, proc.stderr) == (
        8, f"Error: {bad}: request '../x' cannot name a folder — use a name without '/', "
           "control characters or a leading dot\n")


def test_link_to_somewhere_else_is_refused(tmp_path: Path, run_dir: Path, qa: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    os.rename(run_dir / "products", elsewhere)
    (run_dir / "products").symlink_to(elsewhere)
    proc = conveyor("--deliver", str(run_dir / "metadata.json"), qa=qa)
    assert proc.returncode == 8
    assert proc.stderr == (f"Error: {run_dir}/products is a symlink to {elsewhere}, not to "
                           f"{qa}/req-7.v2.e3/products — move the folder back by hand, or "
                           "fix conveyor.qa_area\n")
    assert (elsewhere / "image.fits").is_file()


def test_second_conveyor_on_same_directory_is_locked(run_dir: Path, qa: Path) -> None:
    fd = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        proc = conveyor("--deliver", str(run_dir / "metadata.json"), qa=qa)
    finally:
        os.close(fd)
    assert (proc.returncode, proc.stderr) == (
        7, f"Error: another conveyor is working on {run_dir} — wait for it to finish, "
           "then run this again\n")
    assert not (run_dir / "products").is_symlink()
