"""Fixtures of the PEX tests: the built PEX files, a private PEX_ROOT, a bare runner.

The PEX files are built once per session by the function ``make pex`` uses
(``pex-build/build.py``), into ``dist/``; tools that are already up to date there (same
sources, lock, pex and flags) are not rebuilt, so a second session starts in seconds.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
BARE_PATH = "PATH=/usr/bin:/bin"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "pex: builds the PEX files and runs them with a bare "
                                       "python3 (make pex)")


def load_build() -> ModuleType:
    """``pex-build/build.py`` as a module (its folder name is not importable)."""
    name = "docket_pex_build"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "pex-build" / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def build() -> ModuleType:
    return load_build()


@pytest.fixture(scope="session")
def pex_files(build: ModuleType) -> dict[str, Path]:
    """tool -> dist/<tool>.pex, built (or found up to date) once per session."""
    started = time.monotonic()
    built = build.build(log=lambda line: print(line, file=sys.stderr))
    rebuilt = [b.name for b in built if b.rebuilt]
    print(f"\npex: {len(rebuilt)} built ({', '.join(rebuilt) or 'none'}), "
          f"{len(built) - len(rebuilt)} up to date, {time.monotonic() - started:.1f} s",
          file=sys.stderr)
    return {b.name: b.path for b in built}


@pytest.fixture(scope="session")
def pex_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The PEX_ROOT every bare run shares: each PEX installs its venv once per session."""
    return tmp_path_factory.mktemp("pex-root")


@pytest.fixture
def tool_pex(pex_files: dict[str, Path], tmp_path: Path) -> Callable[[str], Path]:
    """Copy a tool's PEX alone into an empty directory, as it lands on a cluster node."""

    def copy(name: str) -> Path:
        target = tmp_path / f"{name}-bin" / f"{name}.pex"
        if not target.exists():
            target.parent.mkdir()
            shutil.copy2(pex_files[name], target)
        return target

    return copy


@pytest.fixture
def bare(pex_root: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``env -i PATH=/usr/bin:/bin PEX_ROOT=... [VAR=...] python3 TOOL.pex ARGS`` in ``cwd``."""

    def run(pex: Path, *args: str | Path, cwd: Path, env: dict[str, str] | None = None,
            root: Path | None = None, timeout_s: float = 180) -> subprocess.CompletedProcess[str]:
        assignments = [f"{k}={v}" for k, v in (env or {}).items()]
        argv = ["/usr/bin/env", "-i", BARE_PATH, f"PEX_ROOT={root or pex_root}", *assignments,
                "python3", str(pex), *map(str, args)]
        return subprocess.run(argv, cwd=cwd, capture_output=True, text=True,
                              timeout=timeout_s, check=False)

    return run
