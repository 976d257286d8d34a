"""The VLASS capability set as a DA sees it: extends: reuses another capability without
copying, and request values reach the recipe literally."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from docket.capabilities import CapabilityError, load_capability, resolve_parameters
from docket.procdir import ProcessingDirectory
from envoys.casa.recipe import load_recipe
from tests.htcondor.condorkit import TEMPLATES, render


def test_se_calibration_reuses_calibrations_recipe_machine_and_hand_offs():
    base = load_capability(TEMPLATES, "calibration")
    se = load_capability(TEMPLATES, "se_calibration")
    assert not list(se.folder.glob("*.j2"))  # nothing copied
    assert se.template_folders[1:] == base.template_folders
    assert se.machine.transitions == base.machine.transitions
    assert se.definition.requires_qa and se.definition.enabled
    params = se.definition.parameters
    assert params["solint"].default == "int" and base.definition.parameters[
        "solint"].default == "30s"
    assert params["locator"].required  # from casa_workflow, two levels up


def test_a_da_extends_a_capability_with_one_file(tmp_path):
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES, templates)
    mine = templates / "my_quicklook"
    mine.mkdir()
    (mine / "capability.yaml").write_text(
        "name: my_quicklook\nextends: quicklook\nparameters:\n"
        "  imsize: {type: int, default: 32, minimum: 8}\n")
    capability = load_capability(templates, "my_quicklook")
    parameters, problems = resolve_parameters(capability, {
        "locator": "uid://docket/observation/x/v1", "ms": "x/x.ms"})
    assert not problems and parameters["imsize"] == 32 and parameters["niter"] == 100
    assert [s.description for s in capability.definition.stages] == [
        "gathering data", "running CASA", "post-CASA work"]


@pytest.mark.parametrize("text, message, where", [
    ("name: loop_a\nextends: loop_b\n", "makes a loop (loop_a -> loop_b -> loop_a)",
     "loop_b/capability.yaml:2"),
    ("name: loop_a\nextends: nothing_here\n", "extends 'nothing_here', which is not a "
                                              "capability", "loop_a/capability.yaml:2"),
])
def test_a_bad_extends_is_an_error_naming_the_file(tmp_path, text, message, where):
    for name, body in (("loop_a", text), ("loop_b", "name: loop_b\nextends: loop_a\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "capability.yaml").write_text(body)
        (tmp_path / name / "workflow.dag.j2").write_text("JOB a a.sub\n")
    with pytest.raises(CapabilityError) as err:
        load_capability(tmp_path, "loop_a")
    assert message in str(err.value)
    assert where in str(err.value)


HOSTILE = ['say "hi"', "it's", "a: b", "- x", "{y}", "# c", "[1, 2]", "Ωμέγα", "\\", "'"]


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("capability", ["calibration", "quicklook", "se_continuum_imaging"])
def test_request_values_reach_the_recipe_as_one_literal_value(tmp_path, capability, value):
    given = {"locator": "uid://docket/observation/x/v1", "ms": "x/x.ms", "field": value}
    if capability == "calibration":
        given = {**given, "refant": value}
        del given["field"]
    rendered, _ = render(capability, tmp_path / "e1", given)
    (rendered.directory / "rawdata" / "x" / "x.ms").mkdir(parents=True)
    recipe = load_recipe(rendered.directory / "recipe.yaml",
                         ProcessingDirectory(rendered.directory))
    key = "refant" if capability == "calibration" else "field"
    seen = [step.args[key] for step in recipe.steps if key in step.args]
    assert seen and all(v == value for v in seen)
    assert yaml.safe_load((rendered.directory / "recipe.yaml").read_text())["docket_recipe"] == 1


def test_every_recipe_renders_from_its_example(tmp_path):
    for name in ("calibration", "se_calibration", "quicklook", "se_continuum_imaging",
                 "se_coarse_cube_imaging"):
        example = load_capability(TEMPLATES, name).definition.example
        rendered, _ = render(name, tmp_path / name, example)
        recipe = load_recipe(Path(rendered.directory) / "recipe.yaml",
                             ProcessingDirectory(rendered.directory), check_ms=False)
        assert recipe.name == name and recipe.products
