"""CASA crashes without HOME; the envoy gives its child one (pool jobs often have none)."""

from __future__ import annotations

from pathlib import Path

from envoys.casa.foundation import casa_environment


def test_the_casa_child_always_has_a_home(tmp_path: Path):
    measures = tmp_path / "measures"
    measures.mkdir()
    env = casa_environment(tmp_path / "working", measures, base_env={"PATH": "/usr/bin"})
    assert env["HOME"] == str(tmp_path / "working" / "casa-site")
    kept = casa_environment(tmp_path / "working", measures, base_env={"HOME": "/home/da"})
    assert kept["HOME"] == "/home/da"
