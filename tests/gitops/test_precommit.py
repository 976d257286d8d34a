"""The shipped pre-commit hook, run by pre-commit itself in a repository of requests only."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import BIN, REPO

PRE_COMMIT = BIN / "pre-commit"
pytestmark = pytest.mark.skipif(not PRE_COMMIT.exists(),
                                reason="pre-commit is not installed (pip install -e '.[dev]')")

BAD = """apiVersion: docket/v1
kind: CapabilityRequest
metadata: {name: typo}
spec:
  capability: demo
  parameters: {targetz: [m31]}
"""


def _git(repo: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=300)


def _requests_repo(tmp_path: Path, hook_args: list[str] | None = None) -> tuple[Path, dict]:
    """A git repository with requests and a .pre-commit-config.yaml using the shipped hook.

    pre-commit would install a 'language: python' hook from PyPI; here the same hook runs
    as 'repo: local' with the docket already installed (no network)."""
    repo = tmp_path / "requests"
    (repo / "survey").mkdir(parents=True)
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "HOME": str(tmp_path),
           "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-cache"),
           "GIT_AUTHOR_NAME": "Da", "GIT_AUTHOR_EMAIL": "da@example.org",
           "GIT_COMMITTER_NAME": "Da", "GIT_COMMITTER_EMAIL": "da@example.org"}
    env.pop("DOCKET_HOME", None)
    _git(repo, "init", "-q", "-b", "main", env=env)
    shipped = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    hook = dict(next(h for h in shipped if h["id"] == "docket-validate"))
    assert hook["language"] == "python"
    hook["language"] = "unsupported"
    if hook_args:
        hook["args"] = hook_args
    (repo / ".pre-commit-config.yaml").write_text(
        yaml.safe_dump({"repos": [{"repo": "local", "hooks": [hook]}]}))
    shutil.copy(REPO / "templates" / "demo" / "example-request.yaml", repo / "survey")
    return repo, env


def test_the_hook_finds_capabilities_from_the_repositorys_docket_yaml(tmp_path):
    repo, env = _requests_repo(tmp_path)
    (repo / ".docket.yaml").write_text(f"templates_dir: {REPO / 'templates'}\n")
    (repo / "survey" / "typo.yaml").write_text(BAD)
    assert _git(repo, "add", "-A", env=env).returncode == 0
    installed = subprocess.run([str(PRE_COMMIT), "install"], cwd=repo, env=env,
                               capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr
    refused = _git(repo, "commit", "-q", "-m", "two requests", env=env)
    assert refused.returncode != 0
    said = refused.stdout + refused.stderr
    assert "docket validate" in said and "Failed" in said
    assert "survey/typo.yaml: invalid" in said and "targetz" in said
    assert "survey/example-request.yaml: valid (CapabilityRequest demo-example)" in said
    assert _git(repo, "rev-parse", "HEAD", env=env).returncode != 0  # nothing committed
    (repo / "survey" / "typo.yaml").write_text(BAD.replace("targetz", "targets"))
    _git(repo, "add", "-A", env=env)
    done = _git(repo, "commit", "-q", "-m", "two requests", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "docket validate" in done.stdout + done.stderr


def test_the_hook_takes_the_capabilities_from_its_args(tmp_path):
    capabilities = tmp_path / "shared" / "capabilities"
    shutil.copytree(REPO / "templates", capabilities)
    repo, env = _requests_repo(tmp_path, ["--templates", str(capabilities)])
    _git(repo, "add", "-A", env=env)
    run = subprocess.run([str(PRE_COMMIT), "run", "--all-files"], cwd=repo, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "docket validate" in run.stdout and "Passed" in run.stdout


def test_without_a_setting_the_hook_says_where_capabilities_come_from(tmp_path):
    repo, env = _requests_repo(tmp_path)
    _git(repo, "add", "-A", env=env)
    run = subprocess.run([str(PRE_COMMIT), "run", "--all-files"], cwd=repo, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 1
    assert "this home has no capabilities" in run.stdout
    assert "in a repository of requests: in its .docket.yaml" in run.stdout
