"""cli.common.end_process: a console script ends without the interpreter's teardown, yet
keeps its exit code, its output, its atexit handlers and any thread still running."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import BIN, REPO

_SCRIPT = """
import atexit, sys, threading, time
from cli.common import end_process
atexit.register(lambda: open(sys.argv[1], "a").write("atexit ran\\n"))
if sys.argv[2] == "thread":
    def late():
        time.sleep(0.3)
        open(sys.argv[1], "a").write("thread done\\n")
    threading.Thread(target=late).start()
sys.stdout.write("buffered output, no newline")
sys.stderr.write("an error line\\n")
end_process(3)
print("never reached")
"""


def _end(tmp_path: Path, mode: str) -> tuple[subprocess.CompletedProcess[str], str]:
    marks = tmp_path / f"{mode}.txt"
    done = subprocess.run([str(BIN / "python"), "-c", _SCRIPT, str(marks), mode], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    return done, marks.read_text() if marks.exists() else ""


def test_the_exit_code_output_and_atexit_handlers_survive(tmp_path: Path) -> None:
    done, marks = _end(tmp_path, "alone")
    assert done.returncode == 3
    assert done.stdout == "buffered output, no newline"
    assert done.stderr == "an error line\n"
    assert marks == "atexit ran\n"


def test_a_thread_still_running_is_waited_for(tmp_path: Path) -> None:
    done, marks = _end(tmp_path, "thread")
    assert done.returncode == 3
    assert marks.splitlines() == ["thread done", "atexit ran"]


def test_the_docket_script_keeps_its_exit_codes(tmp_path: Path) -> None:
    missing = subprocess.run([str(BIN / "docket"), "show", "nothing-here", "--home",
                              str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and missing.stderr.startswith("Error: ")
    helped = subprocess.run([str(BIN / "docket"), "--help"], capture_output=True, text=True,
                            timeout=60)
    assert helped.returncode == 0 and "submit" in helped.stdout
