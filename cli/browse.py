"""``docket browse``: look around the home's database in a web browser (datasette)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

HomeOption = Annotated[Path | None, typer.Option(
    "--home", help="The docket home (default: $DOCKET_HOME, else the current directory).",
    show_default=False)]


def browse(host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
           port: Annotated[int, typer.Option(help="Port to listen on.")] = 8001,
           snapshot: Annotated[bool, typer.Option(
               "--snapshot", help="Serve a consistent copy, immutable, instead of the live "
                                  "database (read-only).")] = False,
           home: HomeOption = None) -> int:
    """Serve the home's SQLite state read-only in datasette, with canned queries.

    Needs the optional extra: pip install 'docket[browse]'.
    """
    from docket.browse import datasette_command
    from docket.home import resolve_home

    argv = datasette_command(resolve_home(home), host, port, snapshot)
    os.execv(argv[0], argv)  # datasette takes over this process (Ctrl-C stops it)
    return 0  # pragma: no cover - execv does not return
