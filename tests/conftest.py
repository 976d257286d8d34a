"""Shared fixtures: a docket home in a temporary directory, and the CLI called in-process."""

from __future__ import annotations

import contextlib
import io
import json
import os
import pwd
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CURRENT_USER = pwd.getpwuid(os.getuid()).pw_name
BIN = Path(sys.executable).parent


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def run_docket(*args: str) -> Result:
    """Call the docket CLI in-process, as a shell would, and capture what it prints."""
    from cli.common import run
    from cli.docket import app

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run(app, [str(a) for a in args], prog="docket")
    return Result(code, out.getvalue(), err.getvalue())


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A fresh home with the shipped capabilities."""
    root = tmp_path / "home"
    shutil.copytree(REPO / "templates", root / "templates")
    (root / "spool" / "incoming").mkdir(parents=True)
    # the user running the tests is every kind of analyst; tests of authorization add
    # their own users
    (root / "analysts.yaml").write_text(
        f"analysts:\n  {CURRENT_USER}:\n    roles: [da, aod, operator]\n")
    return root


@pytest.fixture
def docket(home: Path):  # noqa: ANN201
    """``docket("tick", "--json")`` runs the CLI against the fixture home."""

    def call(*args: str) -> Result:
        return run_docket(*args, "--home", str(home))

    return call


def request_doc(name: str, capability: str = "null", priority: int | None = None,
                **parameters: Any) -> str:
    spec: dict[str, Any] = {"capability": capability, "parameters": parameters}
    if priority is not None:
        spec["priority"] = priority
    return yaml.safe_dump({"apiVersion": "docket/v1", "kind": "CapabilityRequest",
                           "metadata": {"name": name}, "spec": spec}, sort_keys=False)


def drop(home: Path, filename: str, text: str | bytes) -> Path:
    """Put a document into the spool the way a DA's script would: write, then rename."""
    incoming = home / "spool" / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    tmp = incoming / f".{filename}.tmp"
    tmp.write_bytes(text.encode() if isinstance(text, str) else text)
    target = incoming / filename
    tmp.rename(target)
    return target
