"""The CASA envoy with real CASA: success, the three ways CASA fails, a missing product."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from casa_testkit import VELA, envoy, make_processing_dir, read_report, reason_codes

from docket.fileio import sha256_file
from docket.tools.casalog import find_logs, read_log

pytestmark = pytest.mark.casa

IMAGING = {"ms": "tiny.ms", "imsize": 64, "cell": "8arcsec", "niter": 100}
CALIBRATION = {"ms": "tiny.ms", "refant": "A00", "solint": "int"}


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*"))
            if p.is_file()}


def fits_header(path: Path) -> dict[str, str]:
    cards = {}
    raw = path.read_bytes()[:2880 * 4].decode("ascii", errors="replace")
    for i in range(0, len(raw), 80):
        card = raw[i:i + 80]
        if card.startswith("END"):
            break
        if card[8:10] == "= ":
            cards[card[:8].strip()] = card[10:].split("/")[0].strip()
    return cards


@pytest.fixture(scope="module")
def calibration_run(tiny_ms: Path, tmp_path_factory: pytest.TempPathFactory):
    pdir = make_processing_dir(tmp_path_factory.mktemp("cal") / "run", CALIBRATION,
                               ms=tiny_ms, capability="casa-calibration")
    proc, payload = envoy("--calibration", pdir, "--json")
    return pdir, proc, payload


def test_imaging_makes_a_fits_image_of_the_point_source(tiny_ms: Path, tmp_path: Path) -> None:
    pdir = make_processing_dir(tmp_path / "run", IMAGING, ms=tiny_ms)
    proc, payload = envoy("--imaging", pdir, "--json")

    assert proc.returncode == 0, proc.stderr
    assert payload["ok"] is True and payload["verdict"] == "success"
    assert payload["reasons"] == [] and payload["severe"] == []
    assert payload["program"] == "casa" and payload["exit_status"] == 0
    assert read_report(pdir)["verdict"] == "success"
    fits = pdir / "products" / "tiny.fits"
    header = fits_header(fits)
    assert header["SIMPLE"] == "T"
    assert (header["NAXIS1"], header["NAXIS2"]) == ("64", "64")
    # The 1 Jy point source sits at the phase centre: the brightest pixel is the centre.
    from casacore.images import image

    pixels = image(str(fits)).getdata().squeeze()
    peak_y, peak_x = divmod(int(pixels.argmax()), pixels.shape[1])
    assert (peak_y, peak_x) == (32, 32)
    assert 0.8 < float(pixels.max()) < 1.2
    # The casa log is in working/, and the report names it.
    logs = list(find_logs(pdir / "working"))
    assert [str(p.relative_to(pdir)) for p in logs] == payload["logs"]
    assert "##### Begin Task: tclean             #####" in logs[0].read_text()
    # rawdata/ is never changed: CASA worked on a copy in working/.
    assert tree_digest(pdir / "rawdata" / "tiny.ms") == tree_digest(tiny_ms)
    assert (pdir / "working" / "tiny.ms" / "table.dat").is_file()


def test_calibration_writes_the_caltable(calibration_run) -> None:
    pdir, proc, payload = calibration_run
    assert proc.returncode == 0, proc.stderr
    assert payload["verdict"] == "success"
    assert payload["products"] == [
        {"path": "products/tiny.G", "present": True,
         "size_bytes": payload["products"][0]["size_bytes"]}]
    assert (pdir / "products" / "tiny.G" / "table.dat").is_file()
    log_text = (pdir / payload["logs"][0]).read_text()
    for task in ("flagdata", "gaincal", "applycal"):
        assert f"Task {task} complete." in log_text


def test_restore_and_image_with_the_calibration_caltable(calibration_run, tiny_ms: Path,
                                                         tmp_path: Path) -> None:
    cal_dir = calibration_run[0]
    pdir = make_processing_dir(tmp_path / "run", {**IMAGING, "caltables": ["tiny.G"]},
                               ms=tiny_ms,
                               rawdata_extra={"tiny.G": cal_dir / "products" / "tiny.G"})
    proc, payload = envoy("--restore-and-image", pdir, "--json")
    assert proc.returncode == 0, proc.stderr
    assert payload["verdict"] == "success"
    assert fits_header(pdir / "products" / "tiny.fits")["NAXIS1"] == "64"
    job = json.loads((pdir / "working" / "casa-envoy-job.json").read_text())
    assert [t["task"] for t in job["tasks"]] == ["applycal", "tclean", "exportfits"]
    assert job["tasks"][1]["args"]["datacolumn"] == "corrected"


def test_restore_splits_the_calibrated_ms(calibration_run, tiny_ms: Path,
                                          tmp_path: Path) -> None:
    cal_dir = calibration_run[0]
    pdir = make_processing_dir(tmp_path / "run", {"ms": "tiny.ms", "caltables": ["tiny.G"]},
                               ms=tiny_ms, capability="casa-restore",
                               rawdata_extra={"tiny.G": cal_dir / "products" / "tiny.G"})
    proc, payload = envoy("--restore", pdir, "--json")
    assert proc.returncode == 0, proc.stderr
    assert payload["verdict"] == "success"
    from casacore.tables import table

    with table(str(pdir / "products" / "tiny.calibrated.ms"), ack=False) as ms:
        assert ms.nrows() > 0 and "DATA" in ms.colnames()


def test_bad_argument_fails_on_the_exit_status(tiny_ms: Path, tmp_path: Path) -> None:
    # CASA refuses calmode='xyz' with an AssertionError before logging anything.
    pdir = make_processing_dir(tmp_path / "run", {**CALIBRATION, "calmode": "xyz"},
                               ms=tiny_ms)
    proc, payload = envoy("--calibration", pdir, "--json")
    assert proc.returncode == 6
    assert payload["ok"] is False and payload["verdict"] == "failed"
    assert reason_codes(payload) == ["exit-status", "missing-product"]
    assert payload["reasons"][0]["message"] == (
        "CASA exited with status 1: AssertionError: {'calmode': ['unallowed value xyz']}")
    assert payload["severe"] == []
    assert proc.stderr.splitlines()[-1] == (
        "Error: CASA run failed: CASA exited with status 1: AssertionError: "
        "{'calmode': ['unallowed value xyz']} — see "
        f"{pdir / 'working' / 'casa-envoy-report.json'}")


def test_run_time_error_fails_on_severe_and_exit_status(tiny_ms: Path, tmp_path: Path) -> None:
    pdir = make_processing_dir(tmp_path / "run", {**CALIBRATION, "refant": "NOANT"},
                               ms=tiny_ms)
    proc, payload = envoy("--calibration", pdir, "--json")
    assert proc.returncode == 6
    assert payload["verdict"] == "failed"
    codes = reason_codes(payload)
    assert codes[0] == "exit-status" and "severe" in codes
    assert "RuntimeError: Antenna Expression: No match found" in payload["reasons"][0]["message"]
    assert any("Task gaincal raised an exception of class RuntimeError" in s["message"]
               for s in payload["severe"])


def test_severe_with_exit_status_0_fails(tiny_ms: Path, tmp_path: Path) -> None:
    # setjy with a source no flux standard knows logs SEVERE and returns normally.
    pdir = make_processing_dir(tmp_path / "run", {**CALIBRATION, "flux_calibrator": "pt"},
                               ms=tiny_ms)
    proc, payload = envoy("--calibration", pdir, "--json")
    assert proc.returncode == 6
    assert payload["exit_status"] == 0
    assert reason_codes(payload) == ["severe"]
    assert payload["reasons"][0]["message"].endswith(
        "FluxStandard::compute: pt is not recognized by Perley-Butler 2017")
    assert payload["products"][0]["present"] is True


def test_missing_product_fails(tiny_ms: Path, tmp_path: Path) -> None:
    pdir = make_processing_dir(tmp_path / "run",
                               {**IMAGING, "expected_products": ["tiny.pbcor.fits"]},
                               ms=tiny_ms)
    proc, payload = envoy("--imaging", pdir, "--json")
    assert proc.returncode == 6
    assert payload["exit_status"] == 0 and payload["severe"] == []
    assert payload["reasons"] == [{"code": "missing-product",
                                   "message": "expected product products/tiny.pbcor.fits "
                                              "is missing"}]
    assert (pdir / "products" / "tiny.fits").is_file()


def test_stale_leap_second_table_is_allowed(tiny_ms: Path, tmp_path: Path) -> None:
    # Measures data whose TAI_UTC table is older than 180 days: casacore logs three
    # SEVERE lines on a good run. They are on the allow-list.
    from casacore.tables import table

    from envoys.casa.foundation import find_measures

    bundled = find_measures(sys.executable)
    measures = tmp_path / "measures"
    shutil.copytree(bundled / "geodetic", measures / "geodetic")
    (measures / "ephemerides").symlink_to(bundled / "ephemerides")
    with table(str(measures / "geodetic" / "TAI_UTC"), readonly=False, ack=False) as tai:
        tai.putkeyword("VS_DATE", "2024/01/01/00:00")
    pdir = make_processing_dir(tmp_path / "run", CALIBRATION, ms=tiny_ms)
    proc, payload = envoy("--calibration", pdir, "--json",
                          env={"DOCKET_CASA_ENVOY_MEASURES_PATH": str(measures)})
    assert proc.returncode == 0, proc.stderr
    assert payload["verdict"] == "success"
    assert [a["rule"] for a in payload["allowed_severe"]] == ["stale-leap-second-table"]
    assert payload["allowed_severe"][0]["message"].startswith(
        "Leap second table TAI_UTC seems out-of-date.\nUntil the table is updated")
    severe = [e for e in read_log(pdir / payload["logs"][0]) if e.priority == "SEVERE"]
    assert len(severe) == 1 and severe[0].origin.startswith("MeasTable::dUTC")


def test_vela_writes_the_same_log_lines_as_casa(tiny_ms: Path, tmp_path: Path) -> None:
    """vela's task lines are CASA's, field for field, for the same job file."""
    pdir = make_processing_dir(tmp_path / "run", IMAGING, ms=tiny_ms)
    proc, payload = envoy("--imaging", pdir, "--json")
    assert proc.returncode == 0, proc.stderr
    vela_dir = tmp_path / "vela"
    vela_dir.mkdir()
    subprocess.run([str(VELA), "-q", str(pdir / "working" / "casa-envoy-job.json")],
                   cwd=vela_dir, check=True, env={**os.environ})

    def task_lines(log: Path) -> list[tuple[str, str, str]]:
        return [(e.priority, e.origin, e.message) for e in read_log(log)
                if e.origin.endswith("::::casa") and e.message.startswith("#####")]

    casa_lines = task_lines(pdir / payload["logs"][0])
    vela_lines = task_lines(next(iter(find_logs(vela_dir))))
    assert casa_lines and casa_lines == vela_lines


LEAN_IMPORT_PROBE = r'''
import json, sys
sys.path.insert(0, sys.argv[1])
from casa_script import import_casatasks
casatasks = import_casatasks({"tclean"})
before = {name: name in sys.modules for name in
          ("casatasks.tclean", "casatasks.applycal", "casatasks.predictcomp", "scipy")}
from casatasks import applycal
try:
    casatasks.no_such_task
    unknown = "no error"
except AttributeError as exc:
    unknown = str(exc)
every = all(getattr(casatasks, name) is not None for name in casatasks.__all__)
casatasks.casalog.post("probe line")
print(json.dumps({"before": before, "applycal": applycal is casatasks.applycal,
                  "module": type(applycal).__module__, "unknown": unknown,
                  "every": every, "version": casatasks.version_string()}))
'''


def test_the_casa_child_imports_only_its_jobs_tasks_and_the_rest_on_use(tmp_path: Path) -> None:
    """``import casatasks`` imports all ~120 tasks, scipy among them (most of the
    import's time); the job's CASA child imports the tasks its job calls, and any other
    the moment something asks for it, with the package's log and version set up."""
    from envoys.casa.foundation import casa_environment, find_measures

    env = casa_environment(tmp_path / "site", find_measures(sys.executable))
    script_dir = Path(__file__).resolve().parents[2] / "envoys" / "casa"
    proc = subprocess.run([sys.executable, "-c", LEAN_IMPORT_PROBE, str(script_dir),
                           "--noconfig"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.splitlines()[-1])
    assert seen["before"] == {"casatasks.tclean": True, "casatasks.applycal": False,
                              "casatasks.predictcomp": False, "scipy": False}
    assert seen["applycal"] is True and seen["module"] == "casatasks.applycal"
    assert seen["unknown"] == "module 'casatasks' has no attribute 'no_such_task'"
    assert seen["every"] is True and seen["version"] == "6.7.0.31"
    log = next(iter(find_logs(tmp_path))).read_text()
    assert "CASA Version MODULAR 6.7.0.31" in log and "probe line" in log
