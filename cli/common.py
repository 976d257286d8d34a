"""What every docket CLI shares: running an app with argv, errors on stderr, --json.

Library functions raise ``DocketError``; ``run`` turns it into one line on stderr,
``Error: <what> — <how to fix>``, and the error's documented exit code. ``--json``
output has a stable shape: ``{"docket": 1, "ok": true, ...}`` or, on failure,
``{"docket": 1, "ok": false, "error": {"code": ..., "message": ...}}``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import re
import sqlite3
import sys
from collections.abc import Callable, Sequence
from typing import Annotated, Any, NoReturn

import typer
import typer.main

# typer >= 0.20 (pyproject's floor) carries its own copy of click: no tool needs click
from typer._click.exceptions import ClickException
from typer.models import CommandInfo, TyperInfo

from docket.errors import DocketError, ExitCode

__all__ = ["JsonOption", "QuietOption", "run", "end_process", "emit", "fail", "table",
           "printable", "say", "PrintableFormatter", "JSON_SHAPE_VERSION"]

JSON_SHAPE_VERSION = 1

JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]

_json_errors = False


# Characters a terminal acts on instead of showing: C0 and C1 controls (ESC starts colour,
# cursor and title sequences; CR overwrites a line), DEL, and the invisible or bidi
# formatting characters that make text read differently from what it is.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e"
                     "\u2060-\u2069\ufeff]")
_UNSAFE_IN_CELL = re.compile(_UNSAFE.pattern[:-1] + "\t\n]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, *, one_line: bool = False) -> str:
    """``text`` with every character a terminal would act on written as ``\\x1b``-style
    escapes: what documents say (names, reasons, file names) reaches people only as
    visible text. ``one_line`` also escapes newlines and tabs (table cells, log lines)."""
    return (_UNSAFE_IN_CELL if one_line else _UNSAFE).sub(_escape, text)


def inline(value: Any) -> str:
    """One value inside a line of human output (a file name, a reason): like ``printable``
    with newlines and tabs escaped too, so a spool file named ``a\\nb.yaml`` cannot start a
    line that looks like docket's own."""
    return printable(str(value), one_line=True)


def emit(result: Any, as_json: bool, human: Callable[[Any], str] | None = None) -> None:
    """Print one result: JSON for scripts (exact), or ``human(result)`` for people (escaped
    with ``printable``)."""
    if as_json:
        payload = {"docket": JSON_SHAPE_VERSION, "ok": True}
        payload.update(result if isinstance(result, dict) else {"result": result})
        sys.stdout.write(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
    elif human is not None:
        text = printable(human(result))
        if text:
            sys.stdout.write(text if text.endswith("\n") else text + "\n")


def say(text: str) -> None:
    """One line of progress or a log line on stderr, for people (escaped)."""
    sys.stderr.write(inline(text) + "\n")
    sys.stderr.flush()


class PrintableFormatter(logging.Formatter):
    """Log records for a terminal: a file name or reason from a document is escaped."""

    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record))


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """Rows as aligned text columns, for people (scripts use --json); a newline inside a
    value cannot start a row of its own."""
    cells = [[str(h) for h in headers]] + [
        ["" if c is None else inline(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in cells]
    return "\n".join(lines)


def fail(error: DocketError) -> int:
    if _json_errors:
        payload = {"docket": JSON_SHAPE_VERSION, "ok": False,
                   "error": {"code": error.code, "message": str(error)}}
        sys.stdout.write(json.dumps(payload, sort_keys=True) + "\n")
    sys.stderr.write(f"Error: {inline(error)}\n")
    return int(error.exit_code)


def _name(info: CommandInfo | TyperInfo) -> str | None:
    """The name a command or sub-app is called by, as typer names it; None if typer would
    take it from somewhere this does not look (then nothing is pruned)."""
    if isinstance(info, CommandInfo):
        callback = info.callback
        return info.name or (callback and typer.main.get_command_name(callback.__name__))
    return info.name if isinstance(info.name, str) else None


def _command(app: typer.Typer, args: Sequence[str]) -> Callable[..., Any]:
    """The click command that runs ``args``: the group of ``app`` holding only the
    command or sub-app that ``args[0]`` names, when it names one. Typer builds every
    command's parameters from its signature before it runs any (~2 ms a command, the string
    annotations evaluated); ``docket`` has ~50, a run uses one. Help, options first or a
    name that is not there get the whole app, so their output and errors stay typer's."""
    as_group = bool(app.registered_callback or app.info.callback or app.registered_groups
                    or len(app.registered_commands) > 1)
    if not as_group or not args or args[0].startswith("-"):
        return app
    commands = [c for c in app.registered_commands if _name(c) == args[0]]
    groups = [g for g in app.registered_groups if _name(g) == args[0]]
    if not commands and not groups:
        return app
    one = copy.copy(app)
    one.registered_commands, one.registered_groups = commands, groups
    # get_group, not get_command: a group of one command must stay a group (get_command
    # would make the command the whole program and args[0] an argument of it)
    return typer.main.get_group(one)


def run(app: typer.Typer, argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Run ``app`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    global _json_errors
    args = list(sys.argv[1:] if argv is None else argv)
    _json_errors = "--json" in args
    try:
        result = _command(app, args)(args=args, prog_name=prog, standalone_mode=False)
    except DocketError as exc:
        return fail(exc)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        sys.stderr.write("Error: aborted\n")
        return int(ExitCode.FAILURE)
    except ClickException as exc:
        exc.show()
        return int(exc.exit_code)
    except sqlite3.Error as exc:
        # a locked, full or damaged database: say which, without a traceback
        sys.stderr.write(f"Error: the docket database: {exc} — retry; if it persists, "
                         "check the disk and 'docket rebuild-state --check'\n")
        return int(ExitCode.FAILURE)
    except KeyboardInterrupt:
        sys.stderr.write("Error: interrupted\n")
        return 130
    except BrokenPipeError:
        return int(ExitCode.OK)
    return int(result) if isinstance(result, int) else int(ExitCode.OK)


def end_process(code: int) -> NoReturn:
    """End this process with ``code`` without the interpreter's teardown.

    Only for a console script, once its command has returned: by then everything the
    command writes is durable or closed (atomic writes, committed SQLite transactions),
    and what Python would still do is free every module and object it imported, one by
    one: measured 0.10 s at the end of a 'docket submit' (pydantic's validators, typer,
    YAML), paid by every command of every workflow. atexit handlers still run first
    (logging's flush, temporary directories' clean-up), then the output is flushed. With
    another thread still running, the ordinary exit (which waits for it) is kept.
    """
    import atexit
    import threading

    if threading.active_count() > 1:
        raise SystemExit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe: nothing more to say
            stream.flush()
    os._exit(code)
