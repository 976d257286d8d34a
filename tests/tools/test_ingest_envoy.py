"""ingest-envoy on real processing directories, into a real archive, and back out."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from cli.common import run
from cli.ingest_envoy import app
from cli.productfetcher import app as fetch_app
from docket.fileio import sha256_file
from docket.tools.archive import catalog_lock

INGEST_ENVOY = Path(sys.executable).parent / "ingest-envoy"


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("DOCKET_"):
            monkeypatch.delenv(key)
    (tmp_path / "tools.yaml").write_text(
        f"ingest:\n  archive_root: {tmp_path / 'archive'}\n"
        f"productfetcher:\n  catalog: {tmp_path / 'archive'}\n")
    monkeypatch.setenv("DOCKET_TOOLS_CONFIG", str(tmp_path / "tools.yaml"))
    monkeypatch.chdir(tmp_path)


def make_run(root: Path, request: str = "req1") -> Path:
    """A processing directory as docket lays it out, with calibration-run products."""
    d = root / f"{request}.v1.e1"
    for sub in ("rawdata", "working", "products"):
        (d / sub).mkdir(parents=True)
    (d / "metadata.json").write_text(json.dumps({
        "docket": 1, "request": request, "version": 1, "execution": 1,
        "capability": "std_calibration", "parameters": {"sdm": "X1"}, "directory": str(d),
        "output_dir": None, "created": "2026-11-21T09:00:00Z"}))
    p = d / "products"
    (p / "gain.tbl").mkdir()
    (p / "gain.tbl" / "table.dat").write_bytes(b"gain" * 50)
    (p / "gain.tbl" / "table.f0").write_bytes(b"g0" * 50)
    (p / "bandpass.cal").mkdir()
    (p / "bandpass.cal" / "table.dat").write_bytes(b"bp" * 50)
    (p / "phase.G").mkdir()  # a CASA table without a telling suffix
    (p / "phase.G" / "table.dat").write_bytes(b"ph" * 50)
    (p / "flagversions").mkdir()
    (p / "flagversions" / "FLAG_VERSION_LIST").write_text("main\n")
    (p / "summary.txt").write_text("calibrated\n")
    # Two weblogs: the one with the later name is older, so mtime decides.
    (p / "weblog-b.tgz").write_bytes(b"old weblog")
    (p / "weblog-a.tgz").write_bytes(b"new weblog")
    os.utime(p / "weblog-b.tgz", (1_700_000_000, 1_700_000_000))
    os.utime(p / "weblog-a.tgz", (1_800_000_000, 1_800_000_000))
    return d


def envoy(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = run(app, list(args))
    out, err = capsys.readouterr()
    return code, out, err


def members(tgz: Path) -> list[str]:
    with tarfile.open(tgz) as tar:
        return sorted(m.name for m in tar.getmembers() if m.isfile())


def test_calibration_as_installed_script(tmp_path: Path) -> None:
    d = make_run(tmp_path)
    proc = subprocess.run([str(INGEST_ENVOY), "--calibration", str(d), "--json"],
                          capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["staged"] == ["flagversions.tgz", "req1.caltables.tgz", "summary.txt",
                                "weblog-a.tgz"]
    assert result["skipped"] == ["weblog-b.tgz (older weblog than weblog-a.tgz)"]
    assert result["tarred"]["req1.caltables.tgz"] == ["bandpass.cal", "gain.tbl", "phase.G"]
    assert [(p["locator"], p["status"]) for p in result["products"]] == [
        ("uid://docket/calibration/req1/v1", "ingested")]
    stored = tmp_path / "archive/calibration/req1/v1"
    assert sorted(os.listdir(stored)) == result["staged"]
    assert members(stored / "req1.caltables.tgz") == [
        "bandpass.cal/table.dat", "gain.tbl/table.dat", "gain.tbl/table.f0",
        "phase.G/table.dat"]
    assert (stored / "weblog-a.tgz").read_bytes() == b"new weblog"
    entry = json.loads((tmp_path / "archive/catalog.json").read_text())["products"][
        "uid://docket/calibration/req1/v1"]
    assert entry["metadata"] == {"request": "req1", "request_version": 1, "execution": 1,
                                 "capability": "std_calibration", "kind": "calibration"}
    # The staging folder is gone after a successful ingest; products/ is untouched.
    assert not Path(result["staging"]).exists()
    assert (d / "products" / "weblog-b.tgz").exists()


def test_rerun_is_unchanged_and_changed_tables_make_v2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = make_run(tmp_path)
    assert envoy("--calibration", str(d), capsys=capsys)[0] == 0
    code, out, err = envoy("--calibration", str(d), capsys=capsys)
    assert code == 0, err
    assert out.splitlines()[-1].startswith("unchanged uid://docket/calibration/req1/v1  "
                                           "(4 files, ")
    (d / "products" / "gain.tbl" / "table.f0").write_bytes(b"G1" * 50)
    code, out, _ = envoy("--calibration", str(d), capsys=capsys)
    assert code == 0
    assert out.splitlines()[-1].startswith("ingested  uid://docket/calibration/req1/v2  ")


def test_round_trip_of_calibration_tables(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    d = make_run(tmp_path)
    assert envoy("--calibration", str(d), capsys=capsys)[0] == 0
    code = run(fetch_app, ["-l", "uid://docket/calibration/req1/v1", "-o", "fetched"])
    _, err = capsys.readouterr()
    assert code == 0, err
    with tarfile.open(tmp_path / "fetched/req1/req1.caltables.tgz") as tar:
        data = tar.extractfile("gain.tbl/table.f0")
        assert data is not None and data.read() == b"g0" * 50


def test_image_and_observation_kinds(tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    d = make_run(tmp_path, "req2")
    (d / "products" / "target.image").mkdir()
    (d / "products" / "target.image" / "table.dat").write_bytes(b"img")
    code, out, err = envoy("--image", str(d), "--json", capsys=capsys)
    assert code == 0, err
    result = json.loads(out)
    # Outside calibration, a table is just a directory: each one becomes <dir>.tgz.
    assert result["staged"] == ["bandpass.cal.tgz", "flagversions.tgz", "gain.tbl.tgz",
                                "phase.G.tgz", "summary.txt", "target.image.tgz",
                                "weblog-a.tgz"]
    assert result["products"][0]["locator"] == "uid://docket/image/req2/v1"
    code, out, _ = envoy("--observation", str(d), "--json", capsys=capsys)
    assert code == 0
    assert json.loads(out)["products"][0]["locator"] == "uid://docket/observation/req2/v1"


def test_manifest_is_written_before_ingest_and_kept_on_failure(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    d = make_run(tmp_path)
    monkeypatch.setenv("DOCKET_INGEST_LOCK_TIMEOUT_S", "0.1")
    with catalog_lock(tmp_path / "archive"):
        code, _, err = envoy("--calibration", str(d), capsys=capsys)
    assert code == 7
    assert err.startswith(f"Error: archive {tmp_path / 'archive'} is locked")
    staging = d / "working" / "ingest-staging" / "req1.v1.e1.calibration"
    manifest = json.loads((staging / "manifest.json").read_text())
    product = manifest["products"][0]
    assert (product["name"], product["type"]) == ("req1", "calibration")
    assert [f["path"] for f in product["files"]] == ["flagversions.tgz", "req1.caltables.tgz",
                                                     "summary.txt", "weblog-a.tgz"]
    for f in product["files"]:
        assert f["sha256"] == sha256_file(staging / f["path"])
    # The next attempt starts from an empty staging folder and succeeds.
    code, _, err = envoy("--calibration", str(d), "--staging-root", str(tmp_path / "stage"),
                         "--keep-staging", capsys=capsys)
    assert code == 0, err
    assert (tmp_path / "stage" / "req1.v1.e1.calibration" / "manifest.json").is_file()


def test_tar_is_reproducible(tmp_path: Path) -> None:
    from envoys.ingest.staging import reproducible_tar

    d = make_run(tmp_path)
    first, second = tmp_path / "a.tgz", tmp_path / "b.tgz"
    reproducible_tar(first, [d / "products" / "gain.tbl"])
    reproducible_tar(second, [d / "products" / "gain.tbl"])
    assert first.read_bytes() == second.read_bytes()
    with tarfile.open(fileobj=io.BytesIO(first.read_bytes())) as tar:
        assert {(m.uid, m.gid, m.uname) for m in tar.getmembers()} == {(0, 0, "")}


@pytest.mark.parametrize(("breakage", "code", "message"), [
    ("no-metadata", 3, "Error: {d}/metadata.json does not exist — give the metadata.json of "
                       "a processing directory that docket created\n"),
    ("bad-json", 8, "Error: {d}/metadata.json is not valid JSON: Expecting value at line 1 "
                    "column 1 — metadata.json is written by docket's core; restore it or "
                    "rerun the request\n"),
    ("no-request", 8, "Error: {d}/metadata.json: field 'request' is missing — metadata.json "
                      "is written by docket's core; restore it or rerun the request\n"),
    ("docket-2", 8, "Error: {d}/metadata.json: field 'docket' is 2; this tool reads version "
                    "1 — use a tool as new as the docket that wrote it\n"),
    ("no-products", 3, "Error: {d}/products does not exist — the run wrote no products; "
                       "check its logs before ingesting\n"),
    ("empty-products", 8, "Error: {d}/products holds nothing to ingest — check that the run "
                          "wrote its products\n"),
    ("symlink-out", 8, "Error: {d}/products/escape.fits is a symlink out of {d}/products — "
                       "replace it with the product itself\n"),
])
def test_bad_processing_directories(tmp_path: Path, breakage: str, code: int, message: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    d = make_run(tmp_path)
    meta = d / "metadata.json"
    data = json.loads(meta.read_text())
    if breakage == "no-metadata":
        meta.unlink()
    elif breakage == "bad-json":
        meta.write_text("")
    elif breakage == "no-request":
        del data["request"]
        meta.write_text(json.dumps(data))
    elif breakage == "docket-2":
        meta.write_text(json.dumps(dict(data, docket=2)))
    elif breakage == "no-products":
        shutil.rmtree(d / "products")
    elif breakage == "empty-products":
        shutil.rmtree(d / "products")
        (d / "products").mkdir()
    elif breakage == "symlink-out":
        (tmp_path / "elsewhere.fits").write_text("x")
        (d / "products" / "escape.fits").symlink_to(tmp_path / "elsewhere.fits")
    got = envoy("--calibration", str(d), capsys=capsys)
    assert (got[0], got[2]) == (code, message.format(d=d))
    assert not (tmp_path / "archive" / "catalog.json").exists()


def test_exactly_one_kind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = make_run(tmp_path)
    for args in (["--calibration", str(d), "--image", str(d)], []):
        code, _, err = envoy(*args, capsys=capsys)
        assert code == 2
        assert err == ("Error: give exactly one of --calibration, --image, --observation — "
                       "e.g. ingest-envoy --calibration /lustre/runs/req1\n")


# -- the docs ---------------------------------------------------------------------------
DOC = Path(__file__).resolve().parents[2] / "docs" / "tools" / "ingest-envoy.md"


def test_doc_example_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKET_TOOLS_CONFIG")  # the example's ./tools.yaml is used
    demo = tmp_path / "demo2"
    demo.mkdir()
    env = dict(os.environ, PATH=f"{INGEST_ENVOY.parent}:{os.environ['PATH']}")
    steps = []
    for block in re.findall(r"```console\n(.*?)```", DOC.read_text(), re.S):
        for chunk in re.split(r"^\$ ", block, flags=re.M)[1:]:
            steps.append(chunk.partition("\n")[::2])
    assert len(steps) == 10
    for command, expected in steps:
        proc = subprocess.run(["bash", "-c", "exec 2>&1\n" + command.replace(
            "/tmp/demo2", str(demo))], cwd=demo, env=env, capture_output=True, text=True,
            timeout=60)
        assert proc.stdout == expected.replace("/tmp/demo2", str(demo)), command


def test_doc_covers_every_option() -> None:
    help_text = subprocess.run([str(INGEST_ENVOY), "--help"], capture_output=True, text=True,
                               timeout=60).stdout
    text = DOC.read_text()
    for option in set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", help_text)) - {"--help"}:
        assert f"`{option}" in text, option
