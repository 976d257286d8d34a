"""casa-envoy's setup: the processing directory, its documents, parameters, CASA's environment.

Each check runs the installed casa-envoy against real files and compares the one-line
error a DA would read. No CASA is needed: these runs stop before launching anything.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from casa_testkit import envoy, fake_ms, make_processing_dir

from envoys.casa.foundation import casa_environment

IMAGING = {"ms": "x.ms", "imsize": 64, "cell": "8arcsec", "use_vela": True}


@pytest.fixture
def pdir(tmp_path: Path) -> Path:
    root = make_processing_dir(tmp_path / "run", IMAGING)
    fake_ms(root / "rawdata" / "x.ms")
    return root


def edit_metadata(pdir: Path, **changes: object) -> None:
    path = pdir / "metadata.json"
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is ...:
            del data[key]
        else:
            data[key] = value
    path.write_text(json.dumps(data))


def set_parameters(pdir: Path, parameters: dict) -> None:
    path = pdir / "request.yaml"
    request = yaml.safe_load(path.read_text())
    request["spec"]["parameters"] = parameters
    path.write_text(yaml.safe_dump(request))
    edit_metadata(pdir, parameters=parameters)


def error_line(proc) -> str:
    lines = proc.stderr.splitlines()
    assert lines, proc
    return lines[-1]


def test_no_mode_is_a_usage_error(pdir: Path) -> None:
    proc, _ = envoy(pdir)
    assert proc.returncode == 2
    assert error_line(proc) == ("Error: give exactly one of --calibration, --imaging, "
                                "--restore, --restore-and-image, --recipe FILE, --post — "
                                "casa-envoy --imaging "
                                "/path/to/processing-dir")
    proc, _ = envoy("--imaging", "--calibration", pdir)
    assert proc.returncode == 2


def test_missing_directory_and_documents_are_not_found(tmp_path: Path, pdir: Path) -> None:
    proc, _ = envoy("--imaging", tmp_path / "nope")
    assert proc.returncode == 3
    assert error_line(proc) == (f"Error: processing directory {tmp_path / 'nope'} does not "
                                "exist — give the processing directory or its metadata.json")
    (pdir / "request.yaml").unlink()
    proc, _ = envoy("--imaging", pdir / "metadata.json")
    assert proc.returncode == 3
    assert error_line(proc) == (f"Error: {pdir / 'request.yaml'} does not exist — give a "
                                "processing directory written by docket's core")


def test_missing_rawdata_is_not_found(pdir: Path) -> None:
    (pdir / "rawdata" / "x.ms" / "table.dat").unlink()
    (pdir / "rawdata" / "x.ms").rmdir()
    (pdir / "rawdata").rmdir()
    proc, _ = envoy("--imaging", pdir)
    assert proc.returncode == 3
    assert "rawdata does not exist or is not a directory" in error_line(proc)


@pytest.mark.parametrize("field", ["docket", "request", "version", "execution", "capability",
                                   "parameters", "directory"])
def test_metadata_field_missing(pdir: Path, field: str) -> None:
    edit_metadata(pdir, **{field: ...})
    proc, _ = envoy("--imaging", pdir)
    assert proc.returncode == 8
    assert error_line(proc) == (f"Error: {pdir / 'metadata.json'}: field '{field}' is "
                                "missing — metadata.json is written by docket's core; "
                                "restore it or rerun the request")


def test_metadata_field_of_wrong_type(pdir: Path) -> None:
    edit_metadata(pdir, version="one")
    proc, _ = envoy("--imaging", pdir)
    assert proc.returncode == 8
    assert error_line(proc).startswith(
        f"Error: {pdir / 'metadata.json'}: field 'version' must be an integer, got 'one' — ")


def test_metadata_not_json(pdir: Path) -> None:
    (pdir / "metadata.json").write_text('{"docket": 1,\n  oops}')
    proc, _ = envoy("--imaging", pdir)
    assert proc.returncode == 8
    assert error_line(proc).startswith(f"Error: {pdir / 'metadata.json'} is not valid JSON: "
                                       "Expecting property name enclosed in double quotes at "
                                       "line 2 column 3")


def test_request_yaml_syntax_error_names_line_and_column(pdir: Path) -> None:
    (pdir / "request.yaml").write_text("apiVersion: docket/v1\nkind: [unclosed\n")
    proc, _ = envoy("--imaging", pdir)
    assert proc.returncode == 8
    assert error_line(proc).startswith("Error: request.yaml is not valid YAML at line 3 "
                                       "column 1:")


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda r: r.update(kind="QaDecision"),
     "request.yaml: field 'kind' must be 'CapabilityRequest', got 'QaDecision'"),
    (lambda r: r["spec"].pop("capability"), "request.yaml: field 'spec.capability' is missing"),
    (lambda r: r["metadata"].pop("name"), "request.yaml: field 'metadata.name' is missing"),
    (lambda r: r["spec"].update(parameters=[1, 2]),
     "request.yaml: field 'spec.parameters' must be a mapping, got [1, 2]"),
])
def test_request_fields(pdir: Path, mutate, message: str) -> None:
    path = pdir / "request.yaml"
    request = yaml.safe_load(path.read_text())
    mutate(request)
    path.write_text(yaml.safe_dump(request))
    proc, _ = envoy("--imaging", pdir)
    assert proc.returncode == 8
    assert error_line(proc).startswith(f"Error: {message} — ")


def test_metadata_and_request_must_agree(pdir: Path) -> None:
    edit_metadata(pdir, request="someone-else")
    proc, _ = envoy("--imaging", pdir)
    assert proc.returncode == 8
    assert error_line(proc) == ("Error: metadata.json field 'request' is 'someone-else' but "
                                "request.yaml metadata.name is 'req-1' — the two files belong "
                                "to different requests; restore the right one")


def test_contradicting_parameter_is_refused(pdir: Path) -> None:
    edit_metadata(pdir, parameters={**IMAGING, "imsize": 128})
    proc, _ = envoy("--imaging", pdir)
    assert proc.returncode == 8
    assert error_line(proc).startswith(
        "Error: parameter 'imsize' differs: request.yaml spec.parameters.imsize is 64, "
        "metadata.json parameters.imsize is 128 — ")


@pytest.mark.parametrize(("mode", "parameters", "code", "message"), [
    ("--imaging", {"imsize": 64, "cell": "8arcsec"}, 8,
     "request.yaml spec.parameters.ms is missing: the imaging run needs the input "
     "Measurement Set under rawdata/ (ms: my.ms) — add 'ms:' under spec.parameters in "
     "request.yaml"),
    ("--imaging", {**IMAGING, "ms": "nope.ms"}, 3,
     "request.yaml spec.parameters.ms names rawdata/nope.ms, which does not exist — put the "
     "data under rawdata/ or fix the parameter"),
    ("--imaging", {**IMAGING, "ms": "../x.ms"}, 8,
     "request.yaml spec.parameters.ms is not a usable path under rawdata/: path '../x.ms' "
     "contains '..'"),
    ("--imaging", {**IMAGING, "ms": "/etc"}, 8,
     "request.yaml spec.parameters.ms is '/etc', which is not under"),
    ("--imaging", {**IMAGING, "imsize": "big"}, 8,
     "request.yaml spec.parameters.imsize must be a positive integer or a pair of them, got "
     "'big'"),
    ("--imaging", {**IMAGING, "cell": None}, 8,
     "request.yaml spec.parameters.cell is missing: the imaging run needs the pixel size"),
    ("--imaging", {**IMAGING, "niter": -1}, 8,
     "request.yaml spec.parameters.niter must be an integer >= 0, got -1"),
    ("--imaging", {**IMAGING, "imagename": "sub/dir"}, 8,
     "request.yaml spec.parameters.imagename must be a plain file name"),
    ("--imaging", {**IMAGING, "use_vela": "yes"}, 8,
     "request.yaml spec.parameters.use_vela must be true or false, got 'yes'"),
    ("--imaging", {**IMAGING, "vela_fail": "explode"}, 8,
     "request.yaml spec.parameters.vela_fail must be one of none, bad-argument, severe-raise, "
     "severe-exit0, missing-product, got 'explode'"),
    ("--imaging", {**IMAGING, "task_args": {"gaincal": {"minsnr": 5}}}, 8,
     "request.yaml spec.parameters.task_args names task 'gaincal', which the imaging run does "
     "not call (it calls tclean, exportfits)"),
    ("--calibration", {"ms": "x.ms"}, 8,
     "request.yaml spec.parameters.refant is missing: the calibration run needs a reference "
     "antenna"),
    ("--restore", {"ms": "x.ms"}, 8,
     "request.yaml spec.parameters.caltables is missing: the restore run needs the "
     "calibration tables to apply"),
    ("--restore", {"ms": "x.ms", "caltables": ["x.G"]}, 3,
     "request.yaml spec.parameters.caltables names rawdata/x.G, which does not exist"),
    ("--imaging", {**IMAGING, "expected_products": ["../../etc/passwd"]}, 8,
     "request.yaml spec.parameters.expected_products is not a usable path under products/"),
])
def test_parameters_are_checked(pdir: Path, mode: str, parameters: dict, code: int,
                                message: str) -> None:
    set_parameters(pdir, {k: v for k, v in parameters.items() if v is not None})
    proc, _ = envoy(mode, pdir)
    assert proc.returncode == code
    assert error_line(proc).startswith(f"Error: {message}")
    assert not (pdir / "working" / "casa-envoy-job.json").exists()


def test_parameter_added_by_metadata_is_named_as_such(pdir: Path) -> None:
    edit_metadata(pdir, parameters={**IMAGING, "niter": "many"})
    proc, _ = envoy("--imaging", pdir)
    assert proc.returncode == 8
    assert error_line(proc).startswith(
        "Error: metadata.json parameters.niter must be an integer >= 0, got 'many'")


def test_casa_environment_is_offline_and_local(tmp_path: Path) -> None:
    measures = tmp_path / "measures"
    (measures / "geodetic").mkdir(parents=True)
    (measures / "ephemerides").mkdir()
    working = tmp_path / "working"
    working.mkdir()
    env = casa_environment(working, measures, base_env={"PATH": "/usr/bin"})
    site = working / "casa-site"
    # HOME too: CASA segfaults without one, and pool jobs often have none
    assert env == {"PATH": "/usr/bin", "CASASITECONFIG": str(site / "casasiteconfig.py"),
                   "OMP_NUM_THREADS": "1", "HOME": str(site)}
    config: dict = {}
    exec((site / "casasiteconfig.py").read_text(), config)
    assert config["measures_auto_update"] is False and config["data_auto_update"] is False
    assert config["measurespath"] == str(site / "data")
    assert config["cachedir"] == str(site / "cache") and (site / "cache").is_dir()
    # The measures data is presented as (legacy) casarundata, so casaconfig logs INFO,
    # not SEVERE, about it.
    data = site / "data"
    assert sorted(p.name for p in data.iterdir()) == [
        "alma", "catalogs", "demo", "ephemerides", "geodetic", "gui", "nrao"]
    assert (data / "geodetic").resolve() == (measures / "geodetic").resolve()
    # A caller's OMP_NUM_THREADS wins.
    env = casa_environment(working, measures, base_env={"OMP_NUM_THREADS": "2"})
    assert env["OMP_NUM_THREADS"] == "2"


def test_help_lists_the_modes() -> None:
    proc, _ = envoy("--help")
    assert proc.returncode == 0
    for flag in ("--calibration", "--imaging", "--restore", "--restore-and-image", "--json"):
        assert flag in proc.stdout
    assert os.access(Path(proc.args[0]), os.X_OK)
