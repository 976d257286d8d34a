"""``docket run PIPELINE module.function``: CHIME's ``workflow run`` on a docket home."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from cli.common import JsonOption, emit

__all__ = ["run"]


def run(pipeline: Annotated[str, typer.Argument(help="The pipeline whose work to do.")],
        function: Annotated[str, typer.Argument(
            help="module.function, called as function(**parameters).")],
        lives: Annotated[int, typer.Option(
            help="Do this many works, then exit (-1: run forever).")] = -1,
        sleep_s: Annotated[float, typer.Option(
            "--sleep-s", help="Seconds to wait when no work is queued.")] = 30.0,
        until_empty: Annotated[bool, typer.Option(
            "--until-empty", help="Exit once no work of the pipeline is queued or running."
        )] = False,
        site: Annotated[str | None, typer.Option(help="Only work for this site.")] = None,
        quiet: Annotated[bool, typer.Option("--quiet", help="No line per work.")] = False,
        home: Annotated[Path | None, typer.Option(
            "--home", help="The docket home (default: $DOCKET_HOME, else the current "
                           "directory).", show_default=False)] = None,
        as_json: JsonOption = False) -> int:
    """Withdraw work, call the function with its parameters, deposit its results."""
    from docket.home import resolve_home
    from docket.runner import run_works

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    h = resolve_home(home)
    h.ensure()
    result = run_works(h, pipeline, function, lives=lives, sleep_s=sleep_s,
                       until_empty=until_empty, site=site, say=None if quiet else say)
    emit(result, as_json, lambda r: (f"{r['runner']}: {r['success']} success, "
                                     f"{r['failure']} failure, {r['stale']} stale"))
    return 0
