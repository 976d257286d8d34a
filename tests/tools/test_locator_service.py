"""productfetcher resolving uid:// locators through a site's locator service, served by a
real HTTP server on 127.0.0.1 (the archive catalog stays in charge of its own archive)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from localhttp import LocalServer

from cli.common import run
from cli.productfetcher import app

LOCATOR = "uid://evla/execblock/X1.eb/v1"
SDM = b"<ASDM/>" * 1000
BDF = bytes(range(256)) * 40


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(autouse=True)
def quick_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("DOCKET_"):
            monkeypatch.delenv(key)
    (tmp_path / "none.yaml").write_text("{}\n")
    monkeypatch.setenv("DOCKET_TOOLS_CONFIG", str(tmp_path / "none.yaml"))
    monkeypatch.setenv("DOCKET_PRODUCTFETCHER_BACKOFF_S", "0.01")
    monkeypatch.setenv("DOCKET_PRODUCTFETCHER_RETRIES", "2")
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalServer]:
    with LocalServer() as srv:
        monkeypatch.setenv("DOCKET_PRODUCTFETCHER_LOCATOR_SERVICE", srv.url("/locator"))
        yield srv


def answer(server: LocalServer, locator: str, body: object, mode: str = "ok") -> None:
    query = urllib.parse.urlencode({"locator": locator})
    server.add(f"/locator?{query}", json.dumps(body).encode(), mode)


def files(server: LocalServer, sdm_sha: str | None = None) -> dict:
    return {"name": "X1.eb", "files": [
        {"url": server.add("/data/ASDM.xml", SDM), "path": "X1.sdm/ASDM.xml",
         "size_bytes": len(SDM), "sha256": sdm_sha or sha(SDM)},
        {"url": server.add("/data/bdf1", BDF), "path": "X1.sdm/ASDMBinary/bdf1",
         "size_bytes": len(BDF), "sha256": sha(BDF)}]}


def fetch(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run(app, list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_locator_the_service_knows_is_fetched_and_checked(tmp_path, server, capsys):
    answer(server, LOCATOR, files(server), mode="fail-first")  # a 503 is retried
    code, out, err = fetch(capsys, "-l", LOCATOR, "-o", "out", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert [f["dest"] for f in result["files"]] == ["X1.eb/X1.sdm/ASDM.xml",
                                                   "X1.eb/X1.sdm/ASDMBinary/bdf1"]
    assert (tmp_path / "out" / "X1.eb" / "X1.sdm" / "ASDM.xml").read_bytes() == SDM
    assert all(f["locator"] == LOCATOR and len(f["sha256"]) == 64 for f in result["files"])


def test_a_wrong_checksum_from_the_service_is_a_mismatch(tmp_path, server, capsys):
    answer(server, LOCATOR, files(server, sdm_sha="0" * 64))
    code, _, err = fetch(capsys, "-l", LOCATOR, "-o", "out")
    assert code == 4, err
    assert not (tmp_path / "out" / "X1.eb" / "X1.sdm" / "ASDM.xml").exists()


def test_an_unknown_locator_and_a_bad_answer_are_clear_errors(server, capsys):
    code, _, err = fetch(capsys, "-l", "uid://evla/execblock/nope/v1", "-o", "out")
    assert code == 3
    assert "the locator service" in err and "does not know uid://evla/execblock/nope/v1" in err
    answer(server, LOCATOR, {"files": [{"url": "http://x/a", "path": "../etc/passwd",
                                        "size_bytes": 1, "sha256": "0" * 64}]})
    code, _, err = fetch(capsys, "-l", LOCATOR, "-o", "out")
    assert code == 8
    assert "is not a relative path without '..'" in err


def test_the_archive_catalog_still_answers_for_its_own_archive(tmp_path, server, capsys):
    archive, source = tmp_path / "archive", tmp_path / "src"
    source.mkdir()
    (source / "a.fits").write_bytes(b"fits")
    (source / "manifest.json").write_text(json.dumps({"products": [
        {"name": "i1", "type": "image", "files": ["a.fits"]}]}))
    proc = subprocess.run([str(Path(sys.executable).parent / "ingest"), "--archive-root",
                           str(archive), "-q", str(source)], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    answer(server, LOCATOR, files(server))
    code, _, err = fetch(capsys, "--catalog", str(archive), "-l", "uid://docket/image/i1/v1",
                         "-l", LOCATOR, "-o", "out")
    assert code == 0, err
    assert (tmp_path / "out" / "i1" / "a.fits").read_bytes() == b"fits"
    assert (tmp_path / "out" / "X1.eb" / "X1.sdm" / "ASDMBinary" / "bdf1").read_bytes() == BDF
    assert not any(s.path.startswith("/locator?locator=uid%3A%2F%2Fdocket") for s in server.seen)
