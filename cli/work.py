"""``docket work``: CHIME-style work by hand: deposit, withdraw, update, list, show.

Mounted into ``docket`` as ``docket work``; ``docket run`` (cli/run.py) is the runner.
Each command makes one call into ``docket.work``.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.common import JsonOption, emit, table

__all__ = ["app"]

app = typer.Typer(help="Deposit, withdraw, update and query CHIME-style work.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

HomeOption = Annotated[Path | None, typer.Option(
    "--home", help="The docket home (default: $DOCKET_HOME, else the current directory).",
    show_default=False)]


def _home(home: Path | None) -> Any:
    from docket.home import resolve_home

    return resolve_home(home)


def _when(value: str | None) -> float | None:
    if value is None:
        return None
    from docket.errors import UsageError

    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{value!r} is not a date/time",
                         "write it as ISO, e.g. 2026-11-21 or 2026-11-21T09:00Z") from None
    if moment.tzinfo is None:
        from datetime import UTC

        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _stamp(value: float | None) -> str:
    if value is None:
        return ""
    from datetime import UTC

    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _rows(works: list[dict[str, Any]]) -> str:
    return table([(w["id"], w["pipeline"], w["status"], w["priority"], w["attempt"],
                   ",".join(w.get("tags") or []), w.get("group") or "", w["site"], w["user"],
                   _stamp(w["creation"])) for w in works],
                 ["ID", "PIPELINE", "STATUS", "PRIORITY", "ATTEMPT", "TAGS", "GROUP", "SITE",
                  "USER", "CREATED (UTC)"])


@app.command()
def deposit(files: Annotated[list[Path], typer.Argument(
                help="Work documents (kind: Work YAML) or CHIME work JSON (an object or a "
                     "list).")],
            home: HomeOption = None, as_json: JsonOption = False) -> int:
    """Queue works for their pipelines' runners."""
    from docket.drivers import deposit_works

    emit(deposit_works(_home(home), files), as_json, lambda r: "\n".join(
        f"deposited work {i}" for i in r["deposited"]))
    return 0


@app.command()
def withdraw(pipeline: Annotated[str, typer.Argument(help="The pipeline.")],
             site: Annotated[str | None, typer.Option(help="Only work for this site.")] = None,
             user: Annotated[str | None, typer.Option(help="Only this user's work.")] = None,
             tag: Annotated[list[str] | None, typer.Option(help="Only work with this tag.")]
             = None,
             home: HomeOption = None, as_json: JsonOption = False) -> int:
    """Take the next queued work (leased to you until its timeout); 'work update' it."""
    from docket.drivers import withdraw_work
    from docket.runner import runner_name

    work = withdraw_work(_home(home), pipeline, runner_name(), site=site, user=user, tags=tag)
    emit(work, as_json, lambda r: (
        json.dumps(r["work"], indent=2, sort_keys=True) if r["work"]
        else f"no queued work for pipeline {pipeline}"))
    return 0


@app.command()
def update(work_id: Annotated[str, typer.Argument(metavar="ID", help="The work's id.")],
           status: Annotated[str | None, typer.Option(
               help="created, queued, running, success or failure.")] = None,
           results: Annotated[str | None, typer.Option(help="Results as a JSON object.")]
           = None,
           product: Annotated[list[str] | None, typer.Option(
               help="A product path (repeat); replaces the list.")] = None,
           plot: Annotated[list[str] | None, typer.Option(
               help="A plot path (repeat); replaces the list.")] = None,
           tag: Annotated[list[str] | None, typer.Option(
               help="A tag (repeat); replaces the list.")] = None,
           priority: Annotated[int | None, typer.Option(help="1 to 5.")] = None,
           home: HomeOption = None, as_json: JsonOption = False) -> int:
    """Change a work: its status, results, products, plots, tags or priority."""
    from docket.drivers import update_work
    from docket.errors import UsageError

    changes: dict[str, Any] = {}
    if status is not None:
        changes["status"] = status
    if results is not None:
        try:
            changes["results"] = json.loads(results)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--results is not JSON: {exc.msg}",
                             "give an object, e.g. '{\"snr\": 10.5}'") from None
    for key, value in (("products", product), ("plots", plot), ("tags", tag),
                       ("priority", priority)):
        if value is not None:
            changes[key] = value
    if not changes:
        raise UsageError("nothing to change", "give --status, --results, --product, ...")
    emit(update_work(_home(home), work_id, changes), as_json,
         lambda r: f"work {work_id}: {r['work']['status']}")
    return 0


@app.command("list")
def list_works(
        pipeline: Annotated[str | None, typer.Option(help="Only this pipeline.")] = None,
        status: Annotated[str | None, typer.Option(help="Only this status.")] = None,
        tag: Annotated[str | None, typer.Option(help="Only works with this tag.")] = None,
        group: Annotated[str | None, typer.Option(help="Only this group.")] = None,
        event: Annotated[int | None, typer.Option(help="Only works for this event id.")]
        = None,
        site: Annotated[str | None, typer.Option(help="Only this site.")] = None,
        user: Annotated[str | None, typer.Option(help="Only this user's works.")] = None,
        since: Annotated[str | None, typer.Option(
            help="Created at or after this UTC date/time (ISO).")] = None,
        until: Annotated[str | None, typer.Option(
            help="Created before this UTC date/time (ISO).")] = None,
        limit: Annotated[int, typer.Option(help="At most this many.")] = 100,
        home: HomeOption = None, as_json: JsonOption = False) -> int:
    """Works with their results, products and bookkeeping, newest first."""
    from docket.drivers import query_works

    works = query_works(_home(home), pipeline=pipeline, status=status, tag=tag, group=group,
                        event=event, site=site, user=user, since=_when(since),
                        until=_when(until), limit=limit)
    emit(works, as_json, lambda r: _rows(r["works"]))
    return 0


@app.command()
def show(work_id: Annotated[str, typer.Argument(metavar="ID", help="The work's id.")],
         home: HomeOption = None, as_json: JsonOption = False) -> int:
    """Every field of one work, its checksums and each attempt."""
    from docket.drivers import get_work

    emit(get_work(_home(home), work_id), as_json,
         lambda r: json.dumps(r["work"], indent=2, sort_keys=True))
    return 0
