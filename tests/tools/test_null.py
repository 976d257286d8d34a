"""The ``null`` test tool, run as the installed console script."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from docket.tools.null import WriteSpec, output_content, parse_signal, parse_write

NULL = Path(sys.executable).parent / "null"


def null(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(NULL), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60)


def test_writes_files_of_given_sizes_and_reports_them(tmp_path: Path) -> None:
    proc = null("--write", "out/image.fits=3000", "--write", "log.txt", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    fits = tmp_path / "out" / "image.fits"
    assert fits.read_bytes() == output_content("out/image.fits", 3000)
    assert fits.stat().st_size == 3000
    assert (tmp_path / "log.txt").read_text() == "written by null: log.txt\n"
    record = json.loads(proc.stdout)
    assert record["ok"] is True and record["exit_code"] == 0
    assert [(w["path"], w["size_bytes"]) for w in record["wrote"]] == [
        ("out/image.fits", 3000), ("log.txt", 25)]
    # No temporary files are left beside the outputs.
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["image.fits", "log.txt", "out"]


def test_same_arguments_give_same_bytes(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    for where in (a, b):
        assert null("--write", "x.bin=2500000", cwd=where).returncode == 0
    assert (a / "x.bin").read_bytes() == (b / "x.bin").read_bytes()
    assert len((a / "x.bin").read_bytes()) == 2_500_000


def test_prints_and_exits_with_code(tmp_path: Path) -> None:
    proc = null("--stdout", "hello out", "--stderr", "hello err", "--exit-code", "5",
                "--sleep-s", "0.05", cwd=tmp_path)
    assert (proc.returncode, proc.stdout, proc.stderr) == (5, "hello out\n", "hello err\n")


def test_missing_input_exits_3_before_anything_else(tmp_path: Path) -> None:
    (tmp_path / "there.ms").mkdir()
    (tmp_path / "cal.tbl").write_text("x")
    proc = null("--read", "there.ms", "--read", "cal.tbl", "--read", "missing.ms",
                "--stdout", "should not print", "--write", "out.txt", cwd=tmp_path)
    assert proc.returncode == 3
    assert proc.stdout == ""
    assert proc.stderr == ("Error: input not found: missing.ms — check that the input was "
                           "transferred to the job's directory\n")
    assert not (tmp_path / "out.txt").exists()


def test_present_inputs_pass(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("data")
    proc = null("--read", "in.txt", "--json", cwd=tmp_path)
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["read"] == ["in.txt"]


def test_fail_first_k_runs_then_succeed(tmp_path: Path) -> None:
    state = tmp_path / "state" / "count"
    args = ("--fail-first", "2", "--state-file", str(state), "--fail-exit-code", "7",
            "--write", "product.txt", "--stdout", "working")
    for run in (1, 2):
        proc = null(*args, cwd=tmp_path)
        assert proc.returncode == 7
        assert proc.stdout == "working\n"
        assert proc.stderr == (f"null: run {run} fails on purpose (--fail-first 2, "
                               f"state in {state})\n")
        assert not (tmp_path / "product.txt").exists()
    proc = null(*args, cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert (tmp_path / "product.txt").is_file()
    assert state.read_text() == "3\n"


def test_fail_first_json_record(tmp_path: Path) -> None:
    proc = null("--fail-first", "1", "--state-file", "n", "--json", cwd=tmp_path)
    record = json.loads(proc.stdout)
    assert proc.returncode == 1
    assert (record["ok"], record["failed_on_purpose"], record["run"]) == (False, True, 1)


def test_concurrent_runs_each_get_their_own_number(tmp_path: Path) -> None:
    state = tmp_path / "count"

    def one(_: int) -> int:
        proc = null("--state-file", str(state), "--json", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)["run"]

    with ThreadPoolExecutor(max_workers=6) as pool:
        runs = sorted(pool.map(one, range(6)))
    assert runs == [1, 2, 3, 4, 5, 6]
    assert state.read_text() == "6\n"


def test_state_file_with_garbage_is_refused(tmp_path: Path) -> None:
    (tmp_path / "count").write_text("banana\n")
    proc = null("--fail-first", "1", "--state-file", "count", cwd=tmp_path)
    assert proc.returncode == 8
    assert proc.stderr == ("Error: state file count does not hold a run count: 'banana' — "
                           "delete it to start counting from zero\n")


@pytest.mark.parametrize("name", ["TERM", "SIGKILL", "10", "int"])
def test_signal_kills_after_printing_and_writing(tmp_path: Path, name: str) -> None:
    proc = null("--stdout", "last words", "--write", "out.txt", "--signal", name,
                "--exit-code", "4", cwd=tmp_path)
    assert proc.returncode == -parse_signal(name)
    assert proc.stdout == "last words\n"
    assert (tmp_path / "out.txt").is_file()


def test_usage_errors(tmp_path: Path) -> None:
    proc = null("--fail-first", "2", cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (
        2, "Error: --fail-first needs --state-file — add --state-file FILE to count runs "
           "across retries\n")
    proc = null("--signal", "BOGUS", cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (
        2, "Error: unknown signal 'BOGUS' — give a signal name such as TERM or a number "
           "such as 15\n")
    proc = null("--write", "x=-5", cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (
        2, "Error: --write x=-5: size must not be negative — give PATH=SIZE_BYTES with "
           "SIZE_BYTES >= 0\n")
    proc = null("--exit-code", "300", cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (
        2, "Error: --exit-code 300 is out of range — give a number from 0 to 255\n")


def test_parse_write_and_signal() -> None:
    assert parse_write("a/b.fits=10") == WriteSpec("a/b.fits", 10)
    assert parse_write("a/b.fits") == WriteSpec("a/b.fits", None)
    assert parse_write("key=value.txt") == WriteSpec("key=value.txt", None)
    assert parse_write("empty=0") == WriteSpec("empty", 0)
    assert parse_signal("term") == parse_signal("SIGTERM") == parse_signal("15") \
        == signal.SIGTERM
