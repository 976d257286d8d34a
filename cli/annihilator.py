"""``annihilator``: remove old processing directories, spool archives and deliveries."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Annotated

import typer

from cli.common import JsonOption, QuietOption, emit
from cli.toolshell import ConfigOption, entry, tool_app
from docket.errors import ExitCode
from docket.procdir import ACTIVE_MARKER
from docket.tools.annihilator import Report, annihilate, areas_from_config
from docket.tools.config import load_tool_config

app = tool_app("Remove entries of the configured areas whose newest file is older "
                       "than the area's max_age_days, and runs that failed QA; never an "
           "active run, never anything outside the roots. Run it from cron.")


def _size(size_bytes: int) -> str:
    value = float(size_bytes)
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{size_bytes} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def _human(report: Report) -> str:
    verb = "would remove" if report.dry_run else "removed"
    lines = []
    for area in report.areas:
        for removal in area.removed:
            newest = datetime.fromtimestamp(removal.newest_mtime, UTC).strftime(
                "%Y-%m-%d %H:%M UTC")
            lines.append(f"{area.area.name}: {verb} {removal.path} "
                         f"({_size(removal.size_bytes)}, newest {newest}, {removal.reason})")
        for path in area.kept_active:
            lines.append(f"{area.area.name}: kept {path}: active run ({ACTIVE_MARKER})")
        for error in area.errors:
            lines.append(f"{area.area.name}: problem: {error}")
    count = sum(len(a.removed) for a in report.areas)
    entries = f"{count} entr{'y' if count == 1 else 'ies'}"
    lines.append(f"{'would free' if report.dry_run else 'freed'} "
                 f"{_size(report.freed_bytes)} in {entries}")
    return "\n".join(lines)


@app.command()
def annihilator(
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print what would be removed and freed; remove nothing.")] = False,
    area: Annotated[list[str] | None, typer.Option(
        "--area", metavar="NAME", help="Only this configured area; repeatable.")] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> int:
    areas = areas_from_config(load_tool_config("annihilator", config))
    report = annihilate(areas, only=area, dry_run=dry_run)
    emit(dict(report.as_dict(), ok=not report.errors), as_json,
         lambda _: "" if quiet and not report.errors else _human(report))
    if report.errors:
        count = len(report.errors)
        sys.stderr.write(f"Error: {count} problem{'' if count == 1 else 's'} in the areas "
                         "— see the report, fix permissions or roots, run again\n")
        return int(ExitCode.PARTIAL)
    return int(ExitCode.OK)


main = entry(app)


if __name__ == "__main__":
    main()
