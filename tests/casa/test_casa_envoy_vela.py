"""casa-envoy running vela (use_vela: true): every mode, every way CASA fails, and the envoy's
own failures (a program that will not start, a time limit). Fast: no real CASA."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest
from casa_testkit import VELA, envoy, fake_ms, make_processing_dir, read_report, reason_codes

from docket.tools.casalog import find_logs

PARAMS = {"ms": "x.ms", "use_vela": True, "refant": "A00", "imsize": 32, "cell": "8arcsec",
          "caltables": ["x.G"]}


@pytest.fixture
def pdir(tmp_path: Path) -> Path:
    root = make_processing_dir(tmp_path / "run", PARAMS)
    fake_ms(root / "rawdata" / "x.ms")
    fake_ms(root / "rawdata" / "x.G")
    return root


def set_parameters(pdir: Path, **changes: object) -> None:
    import yaml

    params = {**PARAMS, **changes}
    request = yaml.safe_load((pdir / "request.yaml").read_text())
    request["spec"]["parameters"] = params
    (pdir / "request.yaml").write_text(yaml.safe_dump(request))
    metadata = json.loads((pdir / "metadata.json").read_text())
    metadata["parameters"] = params
    (pdir / "metadata.json").write_text(json.dumps(metadata))


@pytest.mark.parametrize(("mode", "tasks", "products"), [
    ("calibration", ["flagdata", "gaincal", "applycal"], ["products/x.G"]),
    ("imaging", ["tclean", "exportfits"], ["products/x.fits"]),
    ("restore", ["applycal", "split"], ["products/x.calibrated.ms"]),
    ("restore-and-image", ["applycal", "tclean", "exportfits"], ["products/x.fits"]),
])
def test_every_mode_succeeds_with_vela(pdir: Path, mode: str, tasks: list[str],
                                       products: list[str]) -> None:
    proc, payload = envoy(f"--{mode}", pdir, "--json")
    assert proc.returncode == 0, proc.stderr
    assert payload["verdict"] == "success" and payload["program"] == "vela"
    assert [p["path"] for p in payload["products"]] == products
    assert all(p["present"] and p["size_bytes"] > 0 for p in payload["products"])
    job = json.loads((pdir / "working" / "casa-envoy-job.json").read_text())
    assert [t["task"] for t in job["tasks"]] == tasks
    assert payload == {**read_report(pdir), "ok": True}
    assert (pdir / payload["stdout"]).read_text().startswith(f"[1/{len(tasks)}] {tasks[0]}")


@pytest.mark.parametrize(("fail", "codes", "exit_status"), [
    ("bad-argument", ["exit-status", "missing-product"], 1),
    ("severe-raise", ["exit-status", "severe", "severe", "missing-product"], 1),
    ("severe-exit0", ["severe"], 0),
    ("missing-product", ["missing-product"], 0),
])
def test_each_casa_failure_fails_the_run(pdir: Path, fail: str, codes: list[str],
                                         exit_status: int) -> None:
    set_parameters(pdir, vela_fail=fail)
    proc, payload = envoy("--imaging", pdir, "--json")
    assert proc.returncode == 6
    assert payload["ok"] is False and payload["verdict"] == "failed"
    assert reason_codes(payload) == codes
    assert payload["exit_status"] == exit_status
    assert payload["error"] == {"code": "external-failure",
                                "message": payload["reasons"][0]["message"]}
    assert proc.stderr.splitlines()[-1].startswith(
        f"Error: CASA run failed: {payload['reasons'][0]['message']} — see ")
    assert read_report(pdir)["verdict"] == "failed"


def test_bad_argument_reason_quotes_the_assertion(pdir: Path) -> None:
    set_parameters(pdir, vela_fail="bad-argument", vela_fail_at="exportfits")
    _proc, payload = envoy("--imaging", pdir, "--json")
    assert payload["reasons"][0] == {
        "code": "exit-status",
        "message": "CASA exited with status 1: AssertionError: {'imagename': ['unallowed value "
                   "(vela was told to fail exportfits with a bad argument)']}"}


def test_leap_second_warnings_alone_are_a_success(pdir: Path) -> None:
    command = shlex.join([str(VELA), "--leap-second-warnings"])
    proc, payload = envoy("--imaging", pdir, "--json",
                          env={"DOCKET_CASA_ENVOY_VELA": command})
    assert proc.returncode == 0, proc.stderr
    assert payload["verdict"] == "success"
    assert [a["rule"] for a in payload["allowed_severe"]] == ["stale-leap-second-table"]


def test_rerun_judges_only_its_own_log_lines(pdir: Path) -> None:
    set_parameters(pdir, vela_fail="severe-exit0")
    assert envoy("--imaging", pdir)[0].returncode == 6
    set_parameters(pdir, vela_fail="none")
    proc, payload = envoy("--imaging", pdir, "--json")
    # The same second may give the same log name: CASA (and vela) append to it.
    assert proc.returncode == 0, proc.stderr
    assert payload["severe"] == []
    assert len(find_logs(pdir / "working")) in (1, 2)


def test_moved_directory_corrects_paths(pdir: Path) -> None:
    old = "/lustre/docket/runs/req-1"
    set_parameters(pdir, ms=f"{old}/rawdata/x.ms")
    metadata = json.loads((pdir / "metadata.json").read_text())
    metadata["directory"] = old
    (pdir / "metadata.json").write_text(json.dumps(metadata))
    proc, payload = envoy("--imaging", pdir, "--json")
    assert proc.returncode == 0, proc.stderr
    assert payload["relocated_from"] == old
    assert payload["path_corrections"] == [{"parameter": "ms", "from": f"{old}/rawdata/x.ms",
                                            "to": f"{pdir}/rawdata/x.ms"}]
    job = json.loads((pdir / "working" / "casa-envoy-job.json").read_text())
    assert job["tasks"][0]["args"]["vis"] == str(pdir / "working" / "x.ms")


def test_program_that_will_not_start(pdir: Path) -> None:
    proc, payload = envoy("--imaging", pdir, "--json",
                          env={"DOCKET_CASA_ENVOY_VELA": "/nonexistent/vela"})
    assert proc.returncode == 6
    assert reason_codes(payload) == ["not-started", "missing-product"]
    assert payload["reasons"][0]["message"].startswith(
        "CASA could not be started: [Errno 2] No such file or directory")


def test_time_limit_stops_the_run(pdir: Path) -> None:
    sleeper = shlex.join([sys.executable, "-c", "import time; time.sleep(60)"])
    proc, payload = envoy("--imaging", pdir, "--json",
                          env={"DOCKET_CASA_ENVOY_VELA": sleeper,
                               "DOCKET_CASA_ENVOY_TIMEOUT_S": "1"})
    assert proc.returncode == 6
    assert payload["timed_out"] is True
    assert reason_codes(payload) == ["timeout", "no-log", "missing-product"]


def test_python_without_casa_fails_with_its_message(tmp_path: Path) -> None:
    # The real-CASA path with an interpreter that has no casatasks: the script says so.
    pdir = make_processing_dir(tmp_path / "run", {**PARAMS, "use_vela": False})
    fake_ms(pdir / "rawdata" / "x.ms")
    measures = tmp_path / "measures"
    (measures / "geodetic").mkdir(parents=True)
    proc, payload = envoy("--imaging", pdir, "--json",
                          env={"DOCKET_CASA_ENVOY_PYTHON": "/usr/bin/python3",
                               "DOCKET_CASA_ENVOY_MEASURES_PATH": str(measures)})
    assert proc.returncode == 6
    assert reason_codes(payload) == ["exit-status", "no-log", "missing-product"]
    assert "/usr/bin/python3 cannot import casatasks" in payload["reasons"][0]["message"]
    assert (pdir / "working" / "casa-site" / "casasiteconfig.py").is_file()


def test_human_output_and_quiet(pdir: Path) -> None:
    proc, _ = envoy("--imaging", pdir)
    assert proc.returncode == 0
    assert proc.stdout.splitlines()[0].startswith("imaging: success (vela, ")
    assert "casa-envoy: running vela (imaging: tclean, exportfits)" in proc.stderr
    proc, _ = envoy("--imaging", pdir, "--quiet")
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == ""


def test_core_style_metadata_with_nulls_and_extra_fields(pdir: Path) -> None:
    # docket's core writes null for optional parameters without a default, and fields
    # of its own (execution_number, files): neither stops the envoy.
    metadata = json.loads((pdir / "metadata.json").read_text())
    metadata["parameters"] = {**PARAMS, "flux_calibrator": None, "niter": None,
                              "use_vela": True, "task_args": None, "expected_products": None}
    metadata.update(execution_number=1, files=[])
    (pdir / "metadata.json").write_text(json.dumps(metadata))
    proc, payload = envoy("--calibration", pdir, "--json")
    assert proc.returncode == 0, proc.stderr
    job = json.loads((pdir / "working" / "casa-envoy-job.json").read_text())
    assert [t["task"] for t in job["tasks"]] == ["flagdata", "gaincal", "applycal"]
