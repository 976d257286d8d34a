"""``docket init``: a home outside the repository that works as the README says."""

from __future__ import annotations

import os
import re
import subprocess

from tests.conftest import BIN, CURRENT_USER, REPO, run_docket

README = REPO / "README.md"
DOC_HOME, DOC_REPO, DOC_USER = "/home/da/docket-home", "/home/da/docket", "da"
_TIME = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d")


def _walk_through() -> list[tuple[str, str]]:
    text = README.read_text()
    section = text[text.index("## Walk-through"):]
    block = re.search(r"```console\n(.*?)```", section, re.S)
    assert block is not None
    steps = []
    for chunk in re.split(r"^\$ ", block.group(1), flags=re.M)[1:]:
        command, _, output = chunk.partition("\n")
        steps.append((command, output))
    return steps


def _expected(text: str) -> str:
    text = text.replace(DOC_HOME, "<home>").replace(DOC_REPO, str(REPO))
    text = text.replace(f"  analysts:     {DOC_USER} (", f"  analysts:     {CURRENT_USER} (")
    return text.replace(f" by {DOC_USER} at ", f" by {CURRENT_USER} at ")


def test_the_readme_walk_through_runs_as_written(tmp_path):
    """Each command of the README session, in a shell from the checkout, prints what the
    README shows (times aside)."""
    user_home = tmp_path / "da"
    user_home.mkdir()
    env = {**os.environ, "HOME": str(user_home)}
    env.pop("DOCKET_HOME", None)
    home = user_home / "docket-home"
    steps = _walk_through()
    assert steps[0][0].startswith(".venv/bin/docket init ")
    for command, output in steps:
        if command.startswith("export "):
            name, _, value = command.removeprefix("export ").partition("=")
            env[name] = os.path.expanduser(value.replace("~", str(user_home), 1))
            continue
        done = subprocess.run(command, shell=True, cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, (command, done.stderr)
        actual = _TIME.sub("<time>", done.stdout.replace(str(home), "<home>"))
        assert actual == _TIME.sub("<time>", _expected(output)), command
    assert (home / "spool" / "accepted" / "demo-example" / "v1.yaml").is_file()


def test_init_makes_a_complete_home(tmp_path):
    target = tmp_path / "new-home"
    result = run_docket("init", str(target), "--json")
    assert result.code == 0, result.err
    made = result.json()
    assert made["home"] == str(target)
    shipped = made["capabilities"]
    assert shipped == sorted(shipped) and {"demo", "null", "calibration", "quicklook"} <= set(
        shipped)
    # only what a DA can request is offered; the rest is named with the reason
    assert "casa_workflow" not in shipped and "tasks" not in shipped
    assert made["not_requestable"]["casa_workflow"] == "disabled"
    assert made["not_requestable"]["tasks"].startswith("built in")
    for sub in ("spool/incoming", "spool/accepted", "spool/rejected", "spool/attachments",
                "state", "work"):
        assert (target / sub).is_dir(), sub
    analysts = run_docket("analysts", "list", "--json", "--home", str(target)).json()
    assert [(a["user"], a["roles"]) for a in analysts["analysts"]] == [
        (CURRENT_USER, ["da", "operator"])]
    # the settings say where capabilities, work and attachments live, and are used
    settings = (target / "docket.yaml").read_text()
    assert f'templates_dir: "{REPO / "templates"}"' in settings
    assert "work_dir: work" in settings and "attachments_dir: spool/attachments" in settings
    from docket.home import resolve_home

    resolved = resolve_home(target)
    assert resolved.templates == REPO / "templates" and resolved.work == target / "work"
    # the printed cron line runs a pass of this home (the schedule part is cron's)
    command = made["cron"].split(" ", 5)[5]
    done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"})
    assert done.returncode == 0, done.stderr
    assert "0 accepted, 0 duplicate, 0 rejected" in (target / "state" / "tick.log").read_text()


def test_init_never_overwrites(tmp_path):
    target = tmp_path / "taken"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    result = run_docket("init", str(target))
    assert result.code == 8
    assert result.err == f"Error: {target} is not empty — choose a new or empty directory\n"
    assert sorted(p.name for p in target.iterdir()) == ["notes.txt"]
    assert run_docket("init", str(tmp_path / "h")).code == 0
    again = run_docket("init", str(tmp_path / "h"))
    assert again.code == 8 and "is a docket home already" in again.err
    inside = run_docket("init", str(REPO / "somewhere"))
    assert inside.code == 8 and "inside the docket repository" in inside.err
    assert not (REPO / "somewhere").exists()


def test_a_home_without_capabilities_says_how_to_get_them(tmp_path):
    empty = tmp_path / "no-capabilities"
    empty.mkdir()
    target = tmp_path / "bare"
    assert run_docket("init", str(target), "--templates", str(empty)).code == 0
    result = run_docket("validate", str(REPO / "templates" / "demo" / "example-request.yaml"),
                        "--home", str(target))
    assert result.code == 1
    assert "known capabilities: none" not in result.out
    assert (f"unknown capability 'demo': this home has no capabilities ({empty} holds none); "
            "set templates_dir in the home's docket.yaml (in a repository of requests: in "
            "its .docket.yaml) to a folder of capabilities, such as the docket "
            "repository's templates/, or add one there (docs/capabilities.md)"
            ) in result.out
