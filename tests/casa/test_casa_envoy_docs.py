"""The pasteable examples in docs/tools/casa-envoy.md and docs/tools/vela.md run as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs" / "tools"


def example(doc: str) -> str:
    text = (DOCS / doc).read_text()
    return re.findall(r"## Example.*?```bash\n(.*?)```", text, re.S)[0]


@pytest.mark.parametrize(("doc", "expected"), [
    ("casa-envoy.md", "imaging: success (vela, "),
    ("vela.md", "exit status 1"),
])
def test_doc_example_runs(doc: str, expected: str, tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path),
           "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    proc = subprocess.run(["bash", "-c", example(doc)], capture_output=True, text=True,
                          env=env, timeout=120, check=False)
    assert expected in proc.stdout, proc.stdout + proc.stderr
