"""The shell every standalone tool's CLI shares: its app, ``--config``, progress, main.

A tool's module declares its one command on ``app = tool_app(help)``, reads settings
with ``ConfigOption``, reports progress through ``progress_lines`` or a ``ProgressBar``
(a context manager that clears its line), prints its result with ``cli.common.emit``,
and ends with ``main = entry(app)`` (its console script in pyproject.toml).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from cli.common import end_process, run

__all__ = ["ConfigOption", "tool_app", "entry", "progress_lines"]

ConfigOption = Annotated[Path | None, typer.Option(
    "--config", metavar="PATH", help="Tools config (default: $DOCKET_TOOLS_CONFIG, "
    "$DOCKET_HOME/tools.yaml, ./tools.yaml).")]


def tool_app(help: str | None = None) -> typer.Typer:
    """The app of one tool: help text taken literally (``[/vN]`` is not markup), plain
    tracebacks for what is not a ``DocketError``, no shell-completion commands."""
    return typer.Typer(add_completion=False, pretty_exceptions_enable=False,
                       rich_markup_mode=None, help=help)


def entry(app: typer.Typer) -> Callable[[], None]:
    """The console-script function of ``app``: run it on ``sys.argv``, exit with its code
    (``end_process``: a node's tool is started for every workflow)."""

    def main() -> None:
        end_process(run(app))

    return main


def progress_lines(quiet: bool, as_json: bool, *, prefix: str = "",
                   terminal_only: bool = True) -> Callable[[str], None] | None:
    """A progress callback writing one line each on stderr, or None when nobody reads
    them: ``--quiet``, ``--json``, and (``terminal_only``) stderr that is no terminal."""
    if quiet or as_json or (terminal_only and not sys.stderr.isatty()):
        return None

    def line(text: str) -> None:
        sys.stderr.write(f"{prefix}{text}\n")

    return line
