"""vela, the CASA stand-in, run as a user runs it (the installed script, real files)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from casa_testkit import VELA, fake_ms

from docket.tools.casalog import LOG_NAME_RE, find_logs, read_log


def write_job(cwd: Path, **vela: object) -> Path:
    fake_ms(cwd / "x.ms")
    job = {
        "docket_casa_job": 1, "mode": "imaging",
        "tasks": [
            {"task": "tclean", "args": {"vis": str(cwd / "x.ms"), "imagename": "img",
                                        "imsize": [64, 64], "cell": "8arcsec"}},
            {"task": "exportfits", "args": {"imagename": "img.image",
                                            "fitsimage": str(cwd / "out" / "img.fits")}},
        ],
        "products": [str(cwd / "out" / "img.fits")],
        "vela": {"fail": "none", "fail_at": None, **vela},
    }
    path = cwd / "casa-envoy-job.json"
    path.write_text(json.dumps(job))
    return path


def vela(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VELA), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False)


def the_log(cwd: Path) -> Path:
    logs = list(find_logs(cwd))
    assert len(logs) == 1
    return logs[0]


def test_success_writes_casa_log_and_products(tmp_path: Path) -> None:
    write_job(tmp_path)
    proc = vela(tmp_path, "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["ok"] is True and result["tasks"] == ["tclean", "exportfits"]
    log = the_log(tmp_path)
    assert LOG_NAME_RE.match(log.name)
    for line in log.read_text().splitlines():
        time, priority, origin, message = line.split("\t")
        assert priority == "INFO"
    assert "##### Begin Task: tclean             #####" in log.read_text()
    fits = tmp_path / "out" / "img.fits"
    assert fits.read_bytes()[:30] == b"SIMPLE  =                    T"
    assert fits.stat().st_size % 2880 == 0
    assert (tmp_path / "img.image" / "table.dat").is_file()
    assert (tmp_path / "img.psf").is_dir()


def test_bad_argument_raises_before_logging_the_task(tmp_path: Path) -> None:
    write_job(tmp_path)
    proc = vela(tmp_path, "--fail", "bad-argument")
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[0] == "Traceback (most recent call last):"
    assert proc.stderr.splitlines()[-1].startswith("AssertionError: {'vis': ['unallowed value")
    entries = read_log(the_log(tmp_path))
    assert not any("Begin Task" in e.message for e in entries)
    assert not (tmp_path / "out").exists()


def test_severe_raise_logs_severe_then_exits_1(tmp_path: Path) -> None:
    write_job(tmp_path)
    proc = vela(tmp_path, "--fail", "severe-raise", "--fail-at", "exportfits")
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1] == (
        "RuntimeError: vela was told to fail with SEVERE and an exception")
    severe = [e for e in read_log(the_log(tmp_path)) if e.priority == "SEVERE"]
    assert [e.origin for e in severe] == ["", "exportfits::::casa"]
    assert severe[1].message.startswith("Task exportfits raised an exception of class "
                                        "RuntimeError")
    # tclean ran before the failing task; the End Task lines are still logged.
    assert (tmp_path / "img.image").is_dir()
    assert "##### End Task: exportfits           #####" in the_log(tmp_path).read_text()


def test_severe_exit0_logs_severe_and_exits_0(tmp_path: Path) -> None:
    write_job(tmp_path, fail="severe-exit0")
    proc = vela(tmp_path, "-q")
    assert proc.returncode == 0
    severe = [e for e in read_log(the_log(tmp_path)) if e.priority == "SEVERE"]
    assert [(e.origin, e.message) for e in severe] == [
        ("tclean::vela", "vela was told to log SEVERE and return normally")]
    # CASA echoes SEVERE lines on stderr too.
    assert "\tSEVERE\ttclean::vela\t" in proc.stderr
    assert (tmp_path / "out" / "img.fits").is_file()


def test_missing_product_skips_the_product(tmp_path: Path) -> None:
    write_job(tmp_path, fail="missing-product")
    proc = vela(tmp_path, "-q")
    assert proc.returncode == 0
    assert not (tmp_path / "out" / "img.fits").exists()
    assert (tmp_path / "img.image").is_dir()
    assert not [e for e in read_log(the_log(tmp_path)) if e.priority == "SEVERE"]


def test_leap_second_warnings_are_casas_three_lines(tmp_path: Path) -> None:
    write_job(tmp_path)
    assert vela(tmp_path, "-q", "--leap-second-warnings").returncode == 0
    lines = [line for line in the_log(tmp_path).read_text().splitlines()
             if "\tSEVERE\t" in line]
    assert len(lines) == 3
    assert lines[0].split("\t")[2].startswith("MeasTable::dUTC(Double)")
    assert lines[1].split("\t")[2].endswith("+")
    assert lines[0].split("\t")[3] == "Leap second table TAI_UTC seems out-of-date."


def test_missing_vis_is_a_bad_argument(tmp_path: Path) -> None:
    write_job(tmp_path)
    (tmp_path / "x.ms" / "table.dat").unlink()
    (tmp_path / "x.ms").rmdir()
    proc = vela(tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1] == (
        f"AssertionError: {{'vis': ['{tmp_path / 'x.ms'} does not exist']}}")


def test_no_job_file_is_exit_3(tmp_path: Path) -> None:
    proc = vela(tmp_path)
    assert proc.returncode == 3
    assert proc.stderr == ("Error: CASA job file casa-envoy-job.json does not exist — run "
                           "casa-envoy first, or give the path of casa-envoy-job.json\n")


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "is not valid JSON"),
    ('{"docket_casa_job": 1, "mode": "imaging", "tasks": []}',
     "field 'tasks' must be a non-empty list"),
])
def test_bad_job_file_is_exit_8(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "casa-envoy-job.json").write_text(content)
    proc = vela(tmp_path)
    assert proc.returncode == 8
    assert proc.stderr.startswith("Error: ") and message in proc.stderr


def test_unknown_fail_mode_is_exit_8(tmp_path: Path) -> None:
    write_job(tmp_path)
    proc = vela(tmp_path, "--fail", "explode")
    assert proc.returncode == 8
    assert proc.stderr == ("Error: unknown vela failure mode 'explode' — use one of none, "
                           "bad-argument, severe-raise, severe-exit0, missing-product\n")


def test_help() -> None:
    proc = subprocess.run([str(VELA), "--help"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0
    assert "CASA stand-in" in proc.stdout and "--fail" in proc.stdout
