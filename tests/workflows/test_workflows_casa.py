"""The VLASS capabilities end to end on the local engine with real CASA, on the tiny
simulated observation (envoys.casa.demodata), fetched from the archive by locator."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import drop
from tests.workflows.conftest import BIN, tools_config

pytestmark = pytest.mark.casa

DEMO = {"locator": "uid://docket/observation/demo-vlass/v1", "ms": "demo-vlass/demo-vlass.ms"}


@pytest.fixture
def chome(home: Path, demo_archive: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DOCKET_TOOLS_CONFIG", str(tools_config(home, demo_archive)))
    return home


def request(name: str, capability: str, **parameters) -> str:
    return yaml.safe_dump({"apiVersion": "docket/v1", "kind": "CapabilityRequest",
                           "metadata": {"name": name},
                           "spec": {"capability": capability,
                                    "parameters": {**DEMO, **parameters}}}, sort_keys=False)


def _run(docket, home: Path, name: str, capability: str, **parameters) -> dict:
    drop(home, f"{name}.yaml", request(name, capability, **parameters))
    assert docket("tick", "--wait").code == 0
    return docket("show", name, "--json").json()["executions"][0]


@pytest.mark.parametrize("capability", ["calibration", "se_calibration"])
def test_calibration_solves_summarises_and_is_ingested_with_real_casa(chome, docket,
                                                                      capability, tmp_path):
    name = f"{capability.replace('_', '-')}-real"  # the archive is shared by the session
    execution = _run(docket, chome, name, capability)
    assert execution["state"] == "awaiting-qa", execution["reason"]
    products = Path(execution["directory"]) / "products"  # a link into the QA area
    assert (products / f"{name}.caltables.tgz").stat().st_size > 0
    assert (products / "calibrated" / "demo-vlass.ms" / "table.dat").is_file()
    summary = (products / "demo-vlass.summary.txt").read_text()
    assert "solution statistics: gain.calstat.json" in summary
    gain = json.loads((Path(execution["directory"]) / "working" / "gain.calstat.json")
                      .read_text())
    # the simulated 5 % gain errors: amplitudes near 1
    assert 0.8 < gain["CPARAM"]["mean"] < 1.2
    provenance = json.loads((products / "provenance.json").read_text())
    assert provenance["casa"]["version"].startswith("6.7.0")
    assert provenance["inputs"][0]["locator"] == DEMO["locator"]
    assert len(provenance["inputs"][0]["sha256"]) == 64
    # QA pass: ingested; the locator fetches the calibration back
    assert docket("qa", "pass", name, "--reason", "gains near 1").code == 0
    assert docket("tick", "--wait").code == 0  # the hand-offs run beside the passes
    results = docket("results", "--json").json()["executions"][0]["results"]
    locator = results["archive_locator"]
    assert locator == f"uid://docket/calibration/{name}/v1"
    proc = subprocess.run([str(BIN / "productfetcher"), "-q", "-l", locator, "-o",
                           str(tmp_path / "back")], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    back = tmp_path / "back" / name
    assert {f"{name}.caltables.tgz", "calibrated.tgz", "provenance.json"} <= {
        p.name for p in back.iterdir()}


def test_continuum_imaging_finds_the_two_simulated_sources(chome, docket):
    execution = _run(docket, chome, "img-real", "se_continuum_imaging", field="T1")
    assert execution["state"] == "complete", execution["reason"]
    products = Path(execution["directory"]) / "products"
    rows = list(csv.DictReader((products / "T1.components.csv").open()))
    assert 2 <= len(rows) <= 4
    brightest = rows[0]
    # S1: 0.5 Jy at 13h31m12.72s +29d30m33s (202.803 deg, 29.509 deg)
    assert abs(float(brightest["ra_deg"]) - 202.803) < 0.005
    assert abs(float(brightest["dec_deg"]) - 29.5092) < 0.005
    assert 0.3 < float(brightest["peak_jy"]) < 0.7
    assert (products / "T1.pbcor.fits").stat().st_size > 0


def test_quicklook_images_the_tile_and_judges_it_automatically(chome, docket):
    execution = _run(docket, chome, "ql-real", "quicklook", field="T1")
    assert execution["state"] == "complete", execution["reason"]
    stats = json.loads((Path(execution["directory"]) / "products" / "quicklook.stats.json")
                       .read_text())
    # 0.5 Jy brightest source, 20 mJy visibility noise: a clear detection
    assert 0.3 < stats["peak_jy"] < 0.7 and stats["dynamic_range"] > 10
    results = json.loads((Path(execution["directory"]) / "results.json").read_text())
    assert results["qa"]["automatic"]["verdict"] == "pass"


def test_coarse_cube_images_two_channels_with_the_second_input(chome, docket, tmp_path):
    resources = tmp_path / "resources"
    resources.mkdir()
    (resources / "reimaging.yaml").write_text("mask: none\n")
    (resources / "manifest.json").write_text(json.dumps({"products": [
        {"name": "demo-vlass-resources", "type": "observation", "files": ["reimaging.yaml"]}]}))
    proc = subprocess.run([str(BIN / "ingest"), "-q", str(resources)], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    execution = _run(docket, chome, "cube-real", "se_coarse_cube_imaging", field="T1",
                     resources_locator="uid://docket/observation/demo-vlass-resources/v1")
    assert execution["state"] == "complete", execution["reason"]
    stats = json.loads((Path(execution["directory"]) / "products" / "T1.cube.stats.json")
                       .read_text())
    assert len(stats["planes"]) == 2  # nchan 2 (4 channels, width 2)


def test_split_per_field_and_image_each_piece_with_real_casa(chome, docket):
    execution = _run(docket, chome, "split-real", "seci_split_measurement_sets",
                     pieces=["J1331+3030", "T1"])
    assert execution["state"] == "complete", execution["reason"]
    products = Path(execution["directory"]) / "products"
    for i in (0, 1):
        assert (products / "split" / f"demo-vlass.{i}.ms" / "table.dat").is_file()
        assert (products / "pieces" / f"demo-vlass.{i}.fits").stat().st_size > 0
