"""docs/gitops.md stays true: its analysts.yaml parses and its console session runs."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from cli.analysts import app
from cli.common import run
from docket.analysts import load_analysts

DOC = Path(__file__).resolve().parents[2] / "docs" / "gitops.md"
DOC_HOME = "/srv/docket/home"


def console_steps(text: str) -> list[tuple[str, str]]:
    steps = []
    for block in re.findall(r"```console\n(.*?)```", text, re.S):
        for chunk in re.split(r"^\$ ", block, flags=re.M)[1:]:
            command, _, output = chunk.partition("\n")
            steps.append((command, output))
    return steps


def test_the_analysts_yaml_example_is_valid(tmp_path: Path) -> None:
    text = DOC.read_text()
    block = re.search(r"```yaml\n(analysts:\n.*?)```", text, re.S)
    assert block is not None
    (tmp_path / "analysts.yaml").write_text(block.group(1))
    analysts = load_analysts(tmp_path)
    assert analysts.roles_of("alice") == {"da", "aod"}
    assert analysts.user_for_email("alice@example.org") == "alice"


def test_the_console_session_runs_as_written(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKET_HOME", str(tmp_path))
    steps = console_steps(DOC.read_text())
    assert len(steps) >= 6
    for command, expected in steps:
        argv = shlex.split(command)
        assert argv[:2] == ["docket", "analysts"], command
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            run(app, argv[2:], prog="docket analysts")
        assert out.getvalue() + err.getvalue() == expected.replace(DOC_HOME, str(tmp_path)), \
            command
