"""Every example request in docs/workflows.md validates and runs (with vela)."""

from __future__ import annotations

import json
import re
import subprocess

import yaml

from tests.conftest import REPO, drop
from tests.workflows.conftest import BIN, tools_config

DOC = REPO / "docs" / "workflows.md"


def examples() -> list[dict]:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    return [d for d in map(yaml.safe_load, blocks) if d.get("kind") == "CapabilityRequest"]


def test_every_capability_has_a_section_and_an_example():
    shipped = {p.parent.name for p in (REPO / "templates").glob("*/capability.yaml")
               if "recipe.yaml.j2" in {f.name for f in p.parent.iterdir()}
               or "extends: " in p.read_text()} - {"casa_workflow"}
    shipped.add("image_caching")
    text = DOC.read_text()
    assert {d["spec"]["capability"] for d in examples()} == shipped
    assert all(f"\n## {name}\n" in text for name in shipped)


def test_the_examples_run(home, docket, fake_archive, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    config = tools_config(home, fake_archive)
    config.write_text(config.read_text() + f"deliver:\n  image_cache_root: {cache}\n")
    monkeypatch.setenv("DOCKET_TOOLS_CONFIG", str(config))
    images = tmp_path / "images"
    (images / "demo-images").mkdir(parents=True)
    (images / "demo-images" / "T1.fits").write_text("image\n")
    (images / "manifest.json").write_text(json.dumps({"products": [
        {"name": "demo-images", "type": "image", "files": ["demo-images/"]}]}))
    proc = subprocess.run([str(BIN / "ingest"), "-q", str(images)], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    expected = {}
    for i, doc in enumerate(examples()):
        if doc["spec"]["capability"] != "image_caching":
            doc["spec"]["parameters"]["casa"] = "vela"  # the only change: no real CASA
        path = drop(home, f"example-{i}.yaml", yaml.safe_dump(doc, sort_keys=False))
        assert docket("validate", str(path)).code == 0
        machine = yaml.safe_load((REPO / "templates" / doc["spec"]["capability"]
                                  / "capability.yaml").read_text()).get("requires_qa")
        expected[doc["metadata"]["name"]] = "awaiting-qa" if machine or "calibration" in \
            doc["spec"]["capability"] else "complete"
    assert docket("tick", "--wait").code == 0
    for name, state in expected.items():
        shown = docket("show", name, "--json").json()
        assert shown["request"]["state"] == state, (name, shown["executions"][0]["reason"])
    assert (cache / "T1.v1" / "SHA256SUMS").is_file()
