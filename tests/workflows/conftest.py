"""Fixtures of the VLASS workflow tests: an archive holding the demo observation, and a
home whose tools find it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def _ingest(source: Path, archive: Path, name: str, files: list[str]) -> str:
    manifest = {"docket_manifest": 1, "products": [
        {"name": name, "type": "observation", "files": files}]}
    (source / "manifest.json").write_text(json.dumps(manifest))
    proc = subprocess.run([str(BIN / "ingest"), "--archive-root", str(archive), "--json", "-q",
                           str(source)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["products"][0]["locator"]


@pytest.fixture(scope="session")
def fake_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An archive with a stand-in demo-vlass observation (vela only needs a directory)."""
    return fake_archive_at(tmp_path_factory.mktemp("fake-archive"))


def fake_archive_at(root: Path) -> Path:
    """The stand-in demo-vlass observation and its reimaging resources, ingested into an
    archive under ``root`` (also by the pool tests, whose jobs must see it)."""
    source = root / "observation"
    ms = source / "demo-vlass.ms"
    ms.mkdir(parents=True)
    (ms / "table.dat").write_text("not a real table\n")
    archive = root / "archive"
    assert _ingest(source, archive, "demo-vlass", ["demo-vlass.ms/"]) == (
        "uid://docket/observation/demo-vlass/v1")
    resources = root / "resources"
    resources.mkdir()
    (resources / "reimaging.yaml").write_text("mask: none\n")
    _ingest(resources, archive, "demo-vlass-resources", ["reimaging.yaml"])
    return archive


@pytest.fixture(scope="session")
def demo_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real demo observation (casatools.simulator), ingested: real-CASA tests only."""
    from envoys.casa.demodata import build_demo_data

    return build_demo_data(tmp_path_factory.mktemp("demo-data")).archive


def tools_config(home: Path, archive: Path) -> Path:
    """tools.yaml for the jobs and hand-offs of ``home``: the archive, a QA area."""
    (home / "qa").mkdir(exist_ok=True)
    path = home / "tools.yaml"
    path.write_text(f"ingest:\n  archive_root: {archive}\n"
                    f"productfetcher:\n  catalog: {archive}\n"
                    f"conveyor:\n  qa_area: {home / 'qa'}\n")
    return path


def fetch_back(locator: str, into: Path, config: Path | None = None) -> Path:
    """productfetcher brings ``locator`` back from the archive into ``into``, as a user
    would (``config``: the tools.yaml, else DOCKET_TOOLS_CONFIG)."""
    extra = ["--config", str(config)] if config else []
    proc = subprocess.run([str(BIN / "productfetcher"), "-q", "-l", locator, "-o", str(into),
                           *extra], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return into


# what seci_split_measurement_sets makes of demo-vlass split into two pieces
SPLIT_OF_TWO = {"split": ["demo-vlass.0.ms", "demo-vlass.1.ms"],
                "pieces": ["demo-vlass.0.fits", "demo-vlass.1.fits"]}


def split_outputs(directory: Path) -> dict[str, list[str]]:
    """The split measurement sets and the piece images a split run left in products/."""
    products = directory / "products"
    return {kind: sorted(p.name for p in (products / kind).iterdir())
            for kind in ("split", "pieces")}
