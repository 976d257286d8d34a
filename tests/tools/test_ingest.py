"""ingest into a real archive directory, and the round trip back through productfetcher."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from localhttp import LocalServer

from cli.common import run
from cli.ingest import app as ingest_app
from cli.productfetcher import app as fetch_app
from docket.fileio import sha256_file
from docket.tools.archive import catalog_lock

INGEST = Path(sys.executable).parent / "ingest"


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("DOCKET_"):
            monkeypatch.delenv(key)
    (tmp_path / "tools.yaml").write_text(
        f"ingest:\n  archive_root: {tmp_path / 'archive'}\n"
        f"productfetcher:\n  catalog: {tmp_path / 'archive' / 'catalog.json'}\n"
        "  backoff_s: 0.01\n")
    monkeypatch.setenv("DOCKET_TOOLS_CONFIG", str(tmp_path / "tools.yaml"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    (src / "cal.tgz").write_bytes(b"caltables" * 100)
    (src / "images" / "t1.fits").write_bytes(b"F" * 3000)
    (src / "images" / "t2.fits").write_bytes(b"G" * 2000)
    (src / "manifest.yaml").write_text(
        "products:\n"
        "  - name: req1\n"
        "    type: calibration\n"
        "    files: [cal.tgz]\n"
        "    metadata: {request: req1}\n"
        "  - name: req1-images\n"
        "    type: image\n"
        "    files: [images/]\n")
    return src


def ingest(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = run(ingest_app, list(args))
    out, err = capsys.readouterr()
    return code, out, err


def catalog(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "archive" / "catalog.json").read_text())


def tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and not p.name.startswith("."))


def test_ingest_as_installed_script_writes_tree_and_catalog(tmp_path: Path,
                                                             source: Path) -> None:
    env = dict(os.environ)
    proc = subprocess.run([str(INGEST), str(source), "--json"], capture_output=True,
                          text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert [(p["locator"], p["status"], p["files"], p["size_bytes"])
            for p in result["products"]] == [
        ("uid://docket/calibration/req1/v1", "ingested", 1, 900),
        ("uid://docket/image/req1-images/v1", "ingested", 2, 5000)]
    archive = tmp_path / "archive"
    assert tree(archive) == ["calibration/req1/v1/cal.tgz", "catalog.json",
                             "image/req1-images/v1/images/t1.fits",
                             "image/req1-images/v1/images/t2.fits"]
    # Archived files are read-only: the archive is not edited in place.
    assert stat.S_IMODE((archive / "calibration/req1/v1/cal.tgz").stat().st_mode) == 0o444
    entry = catalog(tmp_path)["products"]["uid://docket/image/req1-images/v1"]
    assert entry["type"] == "image"
    assert entry["path"] == "image/req1-images/v1"
    assert entry["files"] == [
        {"path": "images/t1.fits", "size_bytes": 3000,
         "sha256": sha256_file(source / "images" / "t1.fits")},
        {"path": "images/t2.fits", "size_bytes": 2000,
         "sha256": sha256_file(source / "images" / "t2.fits")}]
    assert entry["ingested"].endswith("Z")
    assert catalog(tmp_path)["products"]["uid://docket/calibration/req1/v1"]["metadata"] == {
        "request": "req1"}
    assert os.listdir(archive / ".incoming") == []


def test_same_content_is_a_no_op_and_new_content_a_new_version(
        tmp_path: Path, source: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert ingest(str(source), capsys=capsys)[0] == 0
    before = (tmp_path / "archive" / "catalog.json").read_bytes()
    code, out, _ = ingest(str(source), capsys=capsys)
    assert code == 0
    assert out == ("unchanged uid://docket/calibration/req1/v1  (1 files, 900 B)\n"
                   "unchanged uid://docket/image/req1-images/v1  (2 files, 4.9 KiB)\n")
    assert (tmp_path / "archive" / "catalog.json").read_bytes() == before

    (source / "cal.tgz").write_bytes(b"recalibrated")
    code, out, _ = ingest(str(source), capsys=capsys)
    assert code == 0
    assert out.splitlines() == [
        "ingested  uid://docket/calibration/req1/v2  (1 files, 12 B)",
        "unchanged uid://docket/image/req1-images/v1  (2 files, 4.9 KiB)"]
    archive = tmp_path / "archive"
    assert (archive / "calibration/req1/v1/cal.tgz").read_bytes() == b"caltables" * 100
    assert (archive / "calibration/req1/v2/cal.tgz").read_bytes() == b"recalibrated"
    assert sorted(catalog(tmp_path)["products"]) == [
        "uid://docket/calibration/req1/v1", "uid://docket/calibration/req1/v2",
        "uid://docket/image/req1-images/v1"]


def test_round_trip_through_productfetcher(tmp_path: Path, source: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert ingest(str(source), capsys=capsys)[0] == 0
    (source / "cal.tgz").write_bytes(b"recalibrated")
    assert ingest(str(source), capsys=capsys)[0] == 0

    code = run(fetch_app, ["-l", "uid://docket/calibration/req1/v1", "-l",
                           "uid://docket/image/req1-images", "-o", "got", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["fetched"] == 3
    assert (tmp_path / "got/req1/cal.tgz").read_bytes() == b"caltables" * 100
    for name in ("t1.fits", "t2.fits"):
        assert (tmp_path / "got/req1-images/images" / name).read_bytes() == \
            (source / "images" / name).read_bytes()

    # Without a version the locator means the latest one.
    code = run(fetch_app, ["-l", "uid://docket/calibration/req1", "-o", "latest"])
    capsys.readouterr()
    assert code == 0
    assert (tmp_path / "latest/req1/cal.tgz").read_bytes() == b"recalibrated"


def test_round_trip_through_a_catalog_served_over_http(
        tmp_path: Path, source: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert ingest(str(source), capsys=capsys)[0] == 0
    with LocalServer(root=tmp_path / "archive") as server:
        code = run(fetch_app, ["--catalog", server.url("/catalog.json"), "-l",
                               "uid://docket/image/req1-images/v1", "-o", "web", "--json"])
        out, err = capsys.readouterr()
        assert code == 0, err
        sources = [f["source"] for f in json.loads(out)["files"]]
        assert sources == [server.url("/image/req1-images/v1/images/t1.fits"),
                           server.url("/image/req1-images/v1/images/t2.fits")]
        assert tree(tmp_path / "web") == ["req1-images/images/t1.fits",
                                          "req1-images/images/t2.fits"]

        code = run(fetch_app, ["--catalog", server.url("/catalog.json"), "-l",
                               "uid://docket/image/req1-images/v9", "-o", "web"])
        _, err = capsys.readouterr()
        assert code == 3
        assert err == (f"Error: no version v9 of image/req1-images in catalog "
                       f"{server.url('/catalog.json')} — known versions: v1\n")


def test_archive_names_must_agree(tmp_path: Path, source: Path,
                                  monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DOCKET_INGEST_ARCHIVE", "vla")
    code, out, _ = ingest(str(source), capsys=capsys)
    assert code == 0
    assert out.splitlines()[0] == "ingested  uid://vla/calibration/req1/v1  (1 files, 900 B)"
    monkeypatch.setenv("DOCKET_INGEST_ARCHIVE", "alma")
    code, _, err = ingest(str(source), capsys=capsys)
    assert (code, err) == (8, f"Error: archive {tmp_path / 'archive'} is named 'vla', not "
                              "'alma' — fix ingest.archive in the tools config, or use "
                              "another archive_root\n")
    code = run(fetch_app, ["-l", "uid://alma/calibration/req1", "-o", "got"])
    _, err = capsys.readouterr()
    assert code == 3
    assert err == ("Error: locator uid://alma/calibration/req1 names archive 'alma' but "
                   f"catalog {tmp_path / 'archive' / 'catalog.json'} is archive 'vla' — point "
                   "productfetcher.catalog at that archive's catalog\n")


def test_a_held_lock_makes_ingest_wait_then_fail_with_exit_7(
        tmp_path: Path, source: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DOCKET_INGEST_LOCK_TIMEOUT_S", "0.2")
    with catalog_lock(tmp_path / "archive"):
        code, _, err = ingest(str(source), capsys=capsys)
    assert code == 7
    assert err == (f"Error: archive {tmp_path / 'archive'} is locked by another ingest "
                   "(waited 0.2 s) — wait for it to finish, or raise ingest.lock_timeout_s\n")
    assert not (tmp_path / "archive" / "catalog.json").exists()
    assert os.listdir(tmp_path / "archive" / ".incoming") == []
    assert ingest(str(source), capsys=capsys)[0] == 0


def test_concurrent_ingests_both_land_in_the_catalog(tmp_path: Path) -> None:
    """Two real processes at once: the flock serialises their catalog updates."""
    sources = []
    for i in range(2):
        src = tmp_path / f"src{i}"
        src.mkdir()
        (src / "data.bin").write_bytes(os.urandom(200_000))
        (src / "manifest.json").write_text(json.dumps(
            {"products": [{"name": "shared", "type": "image", "files": ["data.bin"]},
                          {"name": f"own{i}", "type": "image", "files": ["data.bin"]}]}))
        sources.append(src)
    procs = [subprocess.Popen([str(INGEST), str(src), "--json"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=dict(os.environ))
             for src in sources]
    results = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    products = catalog(tmp_path)["products"]
    assert sorted(products) == ["uid://docket/image/own0/v1", "uid://docket/image/own1/v1",
                                "uid://docket/image/shared/v1", "uid://docket/image/shared/v2"]
    # Each version of "shared" holds one of the two sources, complete.
    stored = {(tmp_path / "archive/image/shared" / v / "data.bin").read_bytes()
              for v in ("v1", "v2")}
    assert stored == {(src / "data.bin").read_bytes() for src in sources}


def test_missing_file_stores_nothing(tmp_path: Path, source: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    (source / "images" / "t2.fits").unlink()
    (source / "manifest.yaml").write_text(
        "products:\n"
        "  - {name: req1, type: calibration, files: [cal.tgz]}\n"
        "  - {name: req1-images, type: image, files: [images/t1.fits, images/t2.fits]}\n")
    code, _, err = ingest(str(source), capsys=capsys)
    assert code == 3
    assert err == (f"Error: product req1-images: 'images/t2.fits' is not in {source} — "
                   "fix the manifest or put the file there\n")
    assert not (tmp_path / "archive").exists() or tree(tmp_path / "archive") == []


def test_manifest_checksum_is_verified(tmp_path: Path, source: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    (source / "manifest.yaml").write_text(
        "products:\n  - name: req1\n    type: calibration\n    files:\n"
        f"      - {{path: cal.tgz, sha256: {'ab' * 32}}}\n")
    code, _, err = ingest(str(source), capsys=capsys)
    assert code == 4
    assert err.startswith("Error: product req1: cal.tgz has sha256 ")
    assert err.endswith(f"the manifest says {'ab' * 32} — re-stage the product or fix the "
                        "manifest\n")


@pytest.mark.parametrize(("manifest", "message"), [
    ("products:\n  - {name: ../up, type: image, files: [cal.tgz]}\n",
     "Error: manifest {m}: products[0]: name '../up' is not allowed — use letters, digits "
     "and . _ + - (up to 200, not starting with . _ + -)\n"),
    ("products:\n  - {name: a, type: image, files: [../etc/passwd]}\n",
     "Error: path '../etc/passwd' contains '..' — give a path inside {s} without '..'\n"),
    ("products:\n  - {name: a, type: image, files: []}\n",
     "Error: manifest {m}: products[0] (a) lists no files — give at least one file\n"),
    ("products:\n  - {name: a, type: image, files: [cal.tgz], colour: red}\n",
     "Error: manifest {m}: products[0]: unknown key(s) ['colour'] — a product has only "
     "name, type, files and metadata\n"),
    ("name: a\n",
     "Error: manifest {m} has no 'products' list — write products: [{{name: ..., type: ..., "
     "files: [...]}}]\n"),
])
def test_bad_manifests_exit_8(source: Path, manifest: str, message: str,
                              capsys: pytest.CaptureFixture[str]) -> None:
    m = source / "manifest.yaml"
    m.write_text(manifest)
    code, _, err = ingest(str(source), capsys=capsys)
    assert (code, err) == (8, message.format(m=m, s=source))


def test_symlink_out_of_the_source_is_refused(tmp_path: Path, source: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    (source / "images" / "link.fits").symlink_to(outside)
    code, _, err = ingest(str(source), capsys=capsys)
    assert code == 8
    assert err == (f"Error: product req1-images: {source}/images/link.fits is a symlink out "
                   f"of {source} — copy the file in instead\n")


def test_no_manifest_and_no_archive_root(tmp_path: Path, source: Path,
                                         monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    (source / "manifest.yaml").unlink()
    code, _, err = ingest(str(source), capsys=capsys)
    assert code == 3
    assert err == (f"Error: no manifest in {source} (looked for manifest.yaml, manifest.yml, "
                   "manifest.json) — write one (see docs/tools/ingest.md) or pass "
                   "--manifest FILE\n")
    (tmp_path / "tools.yaml").write_text("{}\n")
    code, _, err = ingest(str(source), capsys=capsys)
    assert (code, err) == (2, "Error: no archive root is configured — pass --archive-root "
                              "DIR, or set ingest.archive_root in tools.yaml (or "
                              "DOCKET_INGEST_ARCHIVE_ROOT)\n")


def test_uncatalogued_leftover_of_a_crashed_ingest_is_moved_aside(
        tmp_path: Path, source: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A crash between the rename and the catalog write leaves v1 on disk, not in the catalog.
    leftover = tmp_path / "archive/calibration/req1/v1"
    leftover.mkdir(parents=True)
    (leftover / "cal.tgz").write_bytes(b"half-finished")
    code, _, err = ingest(str(source), capsys=capsys)
    assert code == 0, err
    assert (leftover / "cal.tgz").read_bytes() == b"caltables" * 100
    aside = [p.name for p in (tmp_path / "archive/.incoming").iterdir()]
    assert len(aside) == 1 and aside[0].startswith("orphan-calibration-req1-v1-")



# -- the docs ---------------------------------------------------------------------------
DOCS = Path(__file__).resolve().parents[2] / "docs" / "tools"
DEMO_TOOLS_YAML = """ingest:
  archive_root: /tmp/demo/archive
productfetcher:
  catalog: /tmp/demo/archive/catalog.json
"""
DEMO_MANIFEST = """products:
  - name: req1
    type: calibration
    files: [cal.tgz]
  - name: req1-images
    type: image
    files: [images/]
"""


def console_steps(md: Path) -> list[tuple[str, str]]:
    """(command, expected output) for every ``$ `` line in the doc's console blocks."""
    steps: list[tuple[str, str]] = []
    for block in re.findall(r"```console\n(.*?)```", md.read_text(), re.S):
        for chunk in re.split(r"^\$ ", block, flags=re.M)[1:]:
            command, _, output = chunk.partition("\n")
            steps.append((command, output))
    return steps


def test_doc_examples_run_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ingest.md's example, then productfetcher.md's, in a fresh /tmp/demo."""
    ingest_doc = (DOCS / "ingest.md").read_text()
    assert f"```yaml\n{DEMO_TOOLS_YAML}```" in ingest_doc
    assert f"```yaml\n{DEMO_MANIFEST}```" in ingest_doc
    demo = str(tmp_path)
    (tmp_path / "tools.yaml").write_text(DEMO_TOOLS_YAML.replace("/tmp/demo", demo))
    (tmp_path / "products" / "images").mkdir(parents=True)
    (tmp_path / "products" / "cal.tgz").write_text("calibrated\n")
    (tmp_path / "products" / "images" / "t1.fits").write_bytes(bytes(3000))
    (tmp_path / "products" / "manifest.yaml").write_text(DEMO_MANIFEST)
    monkeypatch.delenv("DOCKET_TOOLS_CONFIG")  # found as ./tools.yaml, as a DA would
    env = dict(os.environ, PATH=f"{INGEST.parent}:{os.environ['PATH']}")
    steps = console_steps(DOCS / "ingest.md") + console_steps(DOCS / "productfetcher.md")
    assert len(steps) >= 8
    for command, expected in steps:
        proc = subprocess.run(["bash", "-c", "exec 2>&1\n" + command], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60)
        assert proc.stdout == expected.replace("/tmp/demo", demo), command


def test_docs_cover_every_option() -> None:
    for tool, doc in (("ingest", "ingest.md"), ("productfetcher", "productfetcher.md")):
        help_text = subprocess.run([str(INGEST.parent / tool), "--help"], capture_output=True,
                                   text=True, timeout=60).stdout
        text = (DOCS / doc).read_text()
        for option in set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", help_text)) - {"--help"}:
            assert f"`{option}" in text or f"{option} " in text, (tool, option)
