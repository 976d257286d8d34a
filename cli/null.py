"""``null``: a test job that sleeps, prints, fails, writes and exits as it is told."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from cli.common import JsonOption, emit
from cli.toolshell import entry, tool_app
from docket.errors import UsageError
from docket.tools import null as null_tool

app = tool_app("A test job that does exactly what it is told. Steps run in this order: "
               "read checks, sleep, print, fail-first check, write files, signal, exit.")


def _print(stream: object, text: str) -> None:
    stream.write(text if text.endswith("\n") else text + "\n")  # type: ignore[attr-defined]
    stream.flush()  # type: ignore[attr-defined]


@app.command()
def null(
    sleep_s: Annotated[float, typer.Option("--sleep-s",
                                           help="Sleep this many seconds first.")] = 0.0,
    exit_code: Annotated[int, typer.Option("--exit-code",
                                           help="Exit code of a run that does not fail.")] = 0,
    write: Annotated[list[str] | None, typer.Option(
        "--write", metavar="PATH[=SIZE_BYTES]",
        help="Write this file (relative to the working directory; parents are made), "
             "SIZE_BYTES of deterministic content or one text line. Repeatable.")] = None,
    fail_first: Annotated[int, typer.Option(
        "--fail-first", metavar="K",
        help="Runs 1..K fail with --fail-exit-code and write nothing (needs --state-file).")] = 0,
    state_file: Annotated[Path | None, typer.Option(
        "--state-file", metavar="FILE",
        help="Run counter shared by retries (locked while it is updated).")] = None,
    fail_exit_code: Annotated[int, typer.Option("--fail-exit-code",
                                                help="Exit code of a failing run.")] = 1,
    stdout: Annotated[str | None, typer.Option("--stdout", metavar="TEXT",
                                               help="Print TEXT on stdout.")] = None,
    stderr: Annotated[str | None, typer.Option("--stderr", metavar="TEXT",
                                               help="Print TEXT on stderr.")] = None,
    signal_: Annotated[str | None, typer.Option(
        "--signal", metavar="NAME_OR_NUMBER",
        help="Kill itself with this signal after printing and writing (TERM, KILL, 9...).")
    ] = None,
    read: Annotated[list[str] | None, typer.Option(
        "--read", metavar="PATH",
        help="Require this input to exist and be readable (exit 3 otherwise). Repeatable.")
    ] = None,
    as_json: JsonOption = False,
) -> int:
    # Checked here rather than by typer so that every usage error has the one-line form.
    for option, code in (("--exit-code", exit_code), ("--fail-exit-code", fail_exit_code)):
        if not 0 <= code <= 255:
            raise UsageError(f"{option} {code} is out of range", "give a number from 0 to 255")
    if sleep_s < 0 or fail_first < 0:
        raise UsageError("--sleep-s and --fail-first must not be negative",
                         "give a number >= 0")
    if state_file is None and fail_first:
        raise UsageError("--fail-first needs --state-file",
                         "add --state-file FILE to count runs across retries")
    spec = null_tool.NullSpec(
        sleep_s=sleep_s,
        exit_code=exit_code,
        writes=tuple(null_tool.parse_write(w) for w in write or []),
        fail_first=fail_first,
        state_file=state_file,
        fail_exit_code=fail_exit_code,
        stdout=stdout,
        stderr=stderr,
        signal_number=null_tool.parse_signal(signal_) if signal_ is not None else None,
        reads=tuple(read or []),
    )
    result = null_tool.execute(spec, lambda text: _print(sys.stdout, text),
                               lambda text: _print(sys.stderr, text))
    if as_json:
        emit(result.as_dict(), True)
        sys.stdout.flush()
    if result.signal_number is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        null_tool.kill_self(result.signal_number)
    return result.exit_code


main = entry(app)


if __name__ == "__main__":
    main()
