"""The VLASS capabilities end to end on the local engine, with vela standing in for CASA."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import drop
from tests.workflows.conftest import (
    BIN,
    SPLIT_OF_TWO,
    fetch_back,
    split_outputs,
    tools_config,
)

DEMO = {"locator": "uid://docket/observation/demo-vlass/v1", "ms": "demo-vlass/demo-vlass.ms"}


@pytest.fixture
def vhome(home: Path, fake_archive: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DOCKET_TOOLS_CONFIG", str(tools_config(home, fake_archive)))
    return home


def request(name: str, capability: str, output_dir: str | None = None, **parameters) -> str:
    spec = {"capability": capability, "parameters": {**DEMO, "casa": "vela", **parameters}}
    if output_dir:
        spec["output_dir"] = output_dir
    return yaml.safe_dump({"apiVersion": "docket/v1", "kind": "CapabilityRequest",
                           "metadata": {"name": name}, "spec": spec}, sort_keys=False)


def test_quicklook_runs_three_stages_and_records_automatic_qa(vhome, docket):
    drop(vhome, "ql.yaml", request("ql-1", "quicklook", field="T1"))
    assert docket("tick", "--wait").code == 0
    shown = docket("show", "ql-1", "--json").json()
    execution = shown["executions"][0]
    assert shown["request"]["state"] == "complete", execution["reason"]
    assert [(s["description"], s["state"]) for s in execution["stages"]] == [
        ("gathering data", "done"), ("running CASA", "done"), ("post-CASA work", "done")]
    directory = Path(execution["directory"])
    assert (directory / "products" / "quicklook.fits").is_file()
    results = docket("results", "--json").json()
    mine = next(r for r in results["executions"] if r["request"] == "ql-1")
    assert mine["results"]["qa"]["automatic"]["verdict"] in ("pass", "fail")
    assert {p["path"] for p in mine["products"]} >= {"products/quicklook.fits",
                                                      "products/provenance.json"}
    human = docket("show", "ql-1").out
    assert "stage gathering-data (gathering data): done" in human


def _execution(docket, name: str) -> dict:
    return docket("show", name, "--json").json()["executions"][0]


def test_calibration_qa_pass_ingests_records_the_locator_and_delivers(vhome, docket,
                                                                      tmp_path):
    drop(vhome, "cal.yaml", request("cal-1", "calibration", output_dir="deliveries/cal-1"))
    assert docket("tick", "--wait").code == 0
    execution = _execution(docket, "cal-1")
    assert execution["state"] == "awaiting-qa", execution["reason"]
    directory = Path(execution["directory"])
    qa_dir = vhome / "qa" / "cal-1.v1.e1"
    # the run waits in the QA area; the processing directory links to it
    assert (directory / "products").is_symlink()
    assert (qa_dir / "products" / "cal-1.caltables.tgz").is_file()
    assert (qa_dir / "products" / "demo-vlass.weblog.html").is_file()
    assert not (vhome / "work" / "deliveries" / "cal-1").exists()  # not before QA

    assert docket("qa", "pass", "cal-1", "--reason", "solutions look fine").code == 0
    docket("tick")
    execution = _execution(docket, "cal-1")
    assert execution["state"] == "complete"
    assert not (directory / "products").is_symlink() and not qa_dir.exists()
    results = docket("results", "--json").json()
    mine = next(r for r in results["executions"] if r["request"] == "cal-1")
    locator = mine["results"]["archive_locator"]
    assert locator == "uid://docket/calibration/cal-1/v1"
    # fetchable back from the archive by productfetcher
    fetched = fetch_back(locator, tmp_path / "fetched")
    assert (fetched / "cal-1" / "cal-1.caltables.tgz").is_file()
    # and delivered into output_dir: the products, with checksums, not the processing dir
    delivered = vhome / "work" / "deliveries" / "cal-1"
    assert (delivered / "cal-1.caltables.tgz").is_file()
    assert (delivered / "SHA256SUMS").is_file()
    assert not (delivered / "workflow.dag").exists()
    # the lineage, from the archive input to the ingested and delivered products
    lineage = docket("show", "cal-1", "--provenance", "--json").json()
    run = lineage["executions"][0]
    assert run["provenance"]["inputs"][0]["locator"] == DEMO["locator"]
    assert run["provenance"]["casa"]["program"] == "vela"
    assert run["provenance"]["casa"]["attempt"] == 1
    assert [t["task"] for t in run["provenance"]["recipe"]["tasks"]][:2] == [
        "flagdata", "setjy"]
    assert run["archive_locator"] == locator
    text = docket("show", "cal-1", "--provenance").out
    assert f"input   {DEMO['locator']}" in text
    assert f"then    ingest-envoy --calibration → archive_locator {locator}" in text
    assert f"then    deliver → delivered_to {delivered}" in text
    # the hand-offs and the locator in the results are derived from the event log
    assert docket("rebuild-state", "--check").code == 0


def test_calibration_qa_fail_hands_the_run_back_for_clean_up(vhome, docket):
    drop(vhome, "cal.yaml", request("cal-2", "calibration"))
    assert docket("tick", "--wait").code == 0
    assert _execution(docket, "cal-2")["state"] == "awaiting-qa"
    assert docket("qa", "fail", "cal-2", "--reason", "bandpass is noisy").code == 0
    docket("tick")
    execution = _execution(docket, "cal-2")
    directory = Path(execution["directory"])
    assert execution["state"] == "failed"
    assert (directory / ".docket-qa-failed").is_file()
    assert not (directory / "products").is_symlink()
    assert not (vhome / "qa" / "cal-2.v1.e1").exists()


@pytest.mark.parametrize("capability, extra, final", [
    ("se_calibration", {}, "awaiting-qa"),
    ("se_continuum_imaging", {"field": "T1"}, "complete"),
    ("se_coarse_cube_imaging", {"field": "T1", "resources_locator":
                                "uid://docket/observation/demo-vlass-resources/v1"},
     "complete"),
])
def test_each_imaging_and_calibration_capability_runs_with_vela(vhome, docket, capability,
                                                                 extra, final):
    drop(vhome, "r.yaml", request("r-1", capability, **extra))
    assert docket("tick", "--wait").code == 0
    execution = _execution(docket, "r-1")
    assert execution["state"] == final, execution["reason"]
    provenance = json.loads((Path(execution["directory"]) / "products" / "provenance.json")
                            .read_text())
    assert [i["locator"] for i in provenance["inputs"]][:1] == [DEMO["locator"]]
    assert provenance["casa"]["program"] == "vela"
    if capability == "se_coarse_cube_imaging":
        assert (Path(execution["directory"]) / "resources" / "demo-vlass-resources"
                / "reimaging.yaml").is_file()
        assert len(provenance["inputs"]) == 2


@pytest.mark.parametrize("mode, reason", [
    ("bad-argument", "AssertionError"),
    ("severe-raise", "SEVERE"),
    ("severe-exit0", "SEVERE"),
    ("missing-product", "missing"),
])
def test_every_way_casa_fails_fails_the_execution_with_the_reason(vhome, docket, mode,
                                                                   reason):
    drop(vhome, "r.yaml", request("bad-1", "quicklook", vela_fail=mode))
    assert docket("tick", "--wait").code == 0
    execution = _execution(docket, "bad-1")
    assert execution["state"] == "failed"
    assert "node casa" in execution["reason"]
    shown = docket("show", "bad-1").out
    assert reason in shown, shown


def _image_archive(archive: Path, tmp_path: Path, text: str) -> str:
    images = tmp_path / "images"
    (images / "demo-images").mkdir(parents=True, exist_ok=True)
    (images / "demo-images" / "T1.fits").write_text(text)
    (images / "manifest.json").write_text(json.dumps({"products": [
        {"name": "demo-images", "type": "image", "files": ["demo-images/"]}]}))
    proc = subprocess.run([str(BIN / "ingest"), "--archive-root", str(archive), "--json",
                           "-q", str(images)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["products"][0]["locator"]


def test_image_caching_copies_the_set_under_its_name_once(home, docket, tmp_path,
                                                           monkeypatch):
    archive, cache = tmp_path / "archive", tmp_path / "cache"
    cache.mkdir()
    config = tools_config(home, archive)
    config.write_text(config.read_text() + f"deliver:\n  image_cache_root: {cache}\n")
    monkeypatch.setenv("DOCKET_TOOLS_CONFIG", str(config))
    locator = _image_archive(archive, tmp_path, "image one\n")

    def cache_it(name: str, locator: str) -> dict:
        drop(home, f"{name}.yaml", yaml.safe_dump({
            "apiVersion": "docket/v1", "kind": "CapabilityRequest", "metadata": {"name": name},
            "spec": {"capability": "image_caching", "parameters": {
                "locator": locator, "image_set": "demo-images", "cache_name": "T1.v1"}}}))
        assert docket("tick", "--wait").code == 0
        execution = _execution(docket, name)
        assert execution["state"] == "complete", execution["reason"]
        return json.loads((Path(execution["directory"]) / "cache.out").read_text())

    first = cache_it("cache-1", locator)
    cached = cache / "T1.v1"
    assert (cached / "demo-images" / "T1.fits").read_text() == "image one\n"
    assert "demo-images/T1.fits" in (cached / "SHA256SUMS").read_text()
    assert not first["unchanged"]
    assert cache_it("cache-2", locator)["unchanged"]  # the same set again: left as it is
    newer = _image_archive(archive, tmp_path, "image two\n")
    assert newer.endswith("/v2")
    assert cache_it("cache-3", newer)["replaced"]
    assert (cached / "demo-images" / "T1.fits").read_text() == "image two\n"


def test_output_dir_gets_the_products_and_a_resubmit_really_runs_again(vhome, docket):
    drop(vhome, "ql.yaml", request("ql-out", "quicklook", output_dir="deliveries/ql-out"))
    assert docket("tick", "--wait").code == 0
    first = _execution(docket, "ql-out")
    assert first["state"] == "complete", first["reason"]
    delivered = vhome / "work" / "deliveries" / "ql-out"
    assert (delivered / "quicklook.fits").is_file() and (delivered / "SHA256SUMS").is_file()
    assert not (delivered / "workflow.dag").exists()  # the products, not the processing
    assert json.loads((delivered / "provenance.json").read_text())["execution"] == 1

    assert docket("resubmit", "ql-out", "--reason", "again").code == 0
    assert docket("tick", "--wait").code == 0
    executions = docket("show", "ql-out", "--json").json()["executions"]
    second = max(executions, key=lambda e: e["id"])
    assert second["id"] != first["id"] and second["state"] == "complete"
    assert second["directory"] != first["directory"]
    assert {n["node"]: n["state"] for n in second["nodes"]} == {
        "fetch": "done", "casa": "done", "post": "done", "deliver": "done"}
    # the delivery was replaced by the new run's products
    assert json.loads((delivered / "provenance.json").read_text())["execution"] == second["id"]


def test_split_fans_out_one_node_per_piece(vhome, docket):
    drop(vhome, "s.yaml", request("split-1", "seci_split_measurement_sets",
                                  pieces=["J1331+3030", "T1"]))
    assert docket("tick", "--wait").code == 0
    execution = _execution(docket, "split-1")
    assert execution["state"] == "complete", execution["reason"]
    stages = {s["description"]: (s["state"], s["done"], s["nodes"])
              for s in execution["stages"]}
    assert stages["running CASA"] == ("done", 3, 3)  # the split and one node per piece
    assert split_outputs(Path(execution["directory"])) == SPLIT_OF_TWO
    shown = docket("show", "split-1").out
    assert "stage running-casa (running CASA): done (3/3 nodes)" in shown


def test_a_failing_hand_off_is_recorded_retried_then_reported(home, docket, fake_archive,
                                                              monkeypatch):
    config = home / "tools.yaml"  # no conveyor.qa_area: conveyor --deliver cannot work
    config.write_text(f"ingest:\n  archive_root: {fake_archive}\n"
                      f"productfetcher:\n  catalog: {fake_archive}\n")
    # nothing in the environment: the jobs and hand-offs find the home's tools.yaml
    monkeypatch.delenv("DOCKET_TOOLS_CONFIG", raising=False)
    monkeypatch.delenv("DOCKET_HOME", raising=False)
    drop(home, "cal.yaml", request("cal-3", "calibration"))
    assert docket("tick", "--wait").code == 0
    docket("tick")
    docket("tick")
    execution = _execution(docket, "cal-3")
    assert execution["state"] == "awaiting-qa"  # the run itself is fine
    assert not (Path(execution["directory"]) / "products").is_symlink()
    history = docket("history", "cal-3", "--json").json()
    failed = [e for e in history["events"] if e["type"] == "handoff.failed"]
    assert [e["data"]["attempt"] for e in failed] == [1, 2, 3]
    assert "qa_area" in failed[0]["data"]["reason"]
    assert failed[-1]["data"]["final"] is True
    notes = [e["data"]["message"] for e in history["events"] if e["type"] == "notification"]
    assert any("hand-off 'conveyor --deliver' failed 3 times" in n for n in notes)
