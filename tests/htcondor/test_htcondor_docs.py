"""docs/htcondor.md stays true: its YAML validates, its default policy is the shipped one,
its site block is what docket writes, and its inspect example is real output."""

from __future__ import annotations

import re
import shutil

import yaml

from docket.policy import load_policy
from docket.sites import apply_site
from schemas.capability import StageSpec
from schemas.policy import FailurePolicy
from schemas.sites import SitesFile
from tests.htcondor.condorkit import REPO, TEMPLATES, render
from tests.htcondor.test_inspect import _htcondor_home, inspect

DOC = (REPO / "docs" / "htcondor.md").read_text()
BLOCKS = re.findall(r"```(yaml|text)\n(.*?)```", DOC, re.DOTALL)


def _yaml_blocks() -> list[object]:
    return [yaml.safe_load(text) for kind, text in BLOCKS if kind == "yaml"]


def test_every_yaml_example_validates():
    blocks = _yaml_blocks()
    sites = [b for b in blocks if isinstance(b, dict) and "sites" in b]
    assert len(sites) == 1
    config = SitesFile.model_validate(sites[0])
    assert [s.name for s in config.sites] == ["chtc", "nmpost"]
    policies = [b["failure_policy"] for b in blocks
                if isinstance(b, dict) and "failure_policy" in b]
    assert policies[0] == "default"
    for spec in policies[1:]:
        FailurePolicy.model_validate(spec)
    stages = [b for b in blocks if isinstance(b, dict) and "stages" in b]
    for stage in stages[0]["stages"]:
        StageSpec.model_validate(stage)


def test_the_documented_default_policy_is_the_shipped_one():
    documented = next(b for b in _yaml_blocks() if isinstance(b, dict) and "rules" in b
                      and b.get("description"))
    shipped = load_policy(TEMPLATES)
    assert FailurePolicy.model_validate(documented).rules == [
        r.model_copy(update={"note": ""}) for r in shipped.rules]
    for code in ("34", "12", "13"):
        assert f"| {code} |" in DOC


def test_the_documented_site_block_is_what_docket_writes(tmp_path):
    rendered, _ = render("demo", tmp_path / "e1", {"targets": ["a"]})
    site = SitesFile.model_validate(next(b for b in _yaml_blocks()
                                         if isinstance(b, dict) and "sites" in b)).sites[0]
    apply_site(rendered.directory, site)
    block = next(text for kind, text in BLOCKS if kind == "text" and "docket:site" in text)
    written = (rendered.directory / "fetch.sub").read_text()
    documented = [line for line in block.splitlines()
                  if not line.startswith(("accounting_group", "+DESIRED"))]
    # the doc shows two of the three attributes in the order a DA would read them
    assert "accounting_group = group_vlass\n+DESIRED_Sites = \"CHTC\"\n" in written
    for line in documented:
        assert line in written.splitlines(), line


def test_the_inspect_example_is_real_output(tmp_path):
    home = tmp_path / "home"
    directory = _htcondor_home(home)
    shutil.rmtree(home / "templates")
    shutil.copytree(TEMPLATES, home / "templates")
    code, out, _ = inspect("sky-1", "--home", home, "--lines", "3")
    assert code == 0
    example = next(text for kind, text in BLOCKS if kind == "text"
                   and text.startswith("$ docket inspect sky-1"))
    real = out.replace(str(directory), "/data/work/sky-1/v1/e1").splitlines()
    at = 0
    for line in example.splitlines()[1:]:  # the doc leaves lines out, never changes one
        while at < len(real) and real[at] != line:
            at += 1
        assert at < len(real), f"not in the real output (in order): {line!r}"
        at += 1
