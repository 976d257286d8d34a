"""``docket report``: write the home's static HTML site (for a web server or a browser)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cli.common import JsonOption, emit

HomeOption = Annotated[Path | None, typer.Option(
    "--home", help="The docket home (default: $DOCKET_HOME, else the current directory).",
    show_default=False)]


def report(out: Annotated[Path | None, typer.Option(
               "--out", help="Where to write the site (default: <home>/report).",
               show_default=False)] = None,
           full: Annotated[bool, typer.Option(
               "--full", help="Write every page again, not only what changed.")] = False,
           home: HomeOption = None, as_json: JsonOption = False) -> int:
    """Write a static HTML report: overview, one page per request, DAGs drawn.

    Only pages of requests with new events are written again, so cron can run it
    every minute. Graphviz 'dot' draws the DAGs when it is installed.
    """
    from docket.home import resolve_home
    from docket.htmlreport import write_report

    h = resolve_home(home)
    target = out if out is not None else h.root / "report"
    result = write_report(h, target.resolve(), full=full)

    def human(r: dict[str, Any]) -> str:
        return (f"{r['out']}/index.html: {len(r['requests_written'])} of {r['requests']} "
                f"request pages written" + ("" if r["index_written"] else
                                            "; nothing changed"))

    emit(result, as_json, human)
    return 0
