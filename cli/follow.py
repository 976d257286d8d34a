"""``docket follow NAME``: print a request's events as they happen, exit with how it ended."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.common import JsonOption, inline

HomeOption = Annotated[Path | None, typer.Option(
    "--home", help="The docket home (default: $DOCKET_HOME, else the current directory).",
    show_default=False)]
TimeoutOption = Annotated[float | None, typer.Option(
    "--timeout-s", help="Give up after this many seconds (exit 9).", show_default=False)]

_HELP_CODES = ("Exit codes: 0 complete, 1 failed (or another final state), 4 waiting for a "
               "person (a QA decision, an approval), 5 cancelled, 8 the submitted document "
               "was rejected, 9 --timeout-s passed, 3 no such request.")


def _printer(as_json: bool) -> Any:
    from docket.follow import describe

    def show(event: dict[str, Any]) -> None:
        if as_json:
            line = json.dumps({**event, "text": describe(event)}, sort_keys=True, default=str)
        else:
            line = inline(f"{event['time'][11:19]}  {describe(event)}")
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    return show


def _finish(end: Any, as_json: bool, name: str) -> int:
    if as_json:
        sys.stdout.write(json.dumps({**end.as_dict(), "request": name}, sort_keys=True) + "\n")
    elif end.outcome == "waiting":
        sys.stdout.write(inline(f"{name} is waiting for a person in {end.state}: it "
                                f"accepts {', '.join(end.accepts)}") + "\n")
    elif end.outcome == "timeout":
        sys.stdout.write(inline(f"{name}: {end.reason}; still {end.state}") + "\n")
    elif end.outcome == "rejected":
        sys.stdout.write(inline(f"the document was rejected: {end.reason}") + "\n")
    else:
        sys.stdout.write(inline(f"{name} is {end.state}"
                                + (f": {end.reason}" if end.reason else "")) + "\n")
    sys.stdout.flush()
    return end.exit_code


def follow(name: Annotated[str, typer.Argument(help="Request name.")],
           timeout_s: TimeoutOption = None,
           home: HomeOption = None, as_json: JsonOption = False) -> int:
    """Print each event of a request as it happens, until it waits for a person or ends.

    Starts at the acceptance of the current version. Works from any shell while a
    watcher runs, and across restarts of the watcher.
    """
    from docket.follow import follow as follow_request
    from docket.home import resolve_home

    end = follow_request(resolve_home(home), name, timeout_s=timeout_s,
                         on_event=_printer(as_json))
    return _finish(end, as_json, name)


follow.__doc__ = (follow.__doc__ or "") + "\n\n" + _HELP_CODES


def submit_and_follow(home_path: Path | None, files: list[Path], as_json: bool,
                      timeout_s: float | None = None) -> int:
    """``docket submit --follow FILE``: spool one document, then follow its request."""
    from docket.documents import load_yaml
    from docket.drivers import submit_files
    from docket.errors import UsageError
    from docket.follow import follow as follow_request
    from docket.follow import open_events
    from docket.home import resolve_home

    if len(files) != 1:
        raise UsageError("--follow follows one document", "submit the others separately")
    home = resolve_home(home_path)
    try:
        data, _ = load_yaml(files[0].read_bytes(), what="file")
    except Exception:
        data = None  # submit_files says what is wrong with it
    after_id = 0
    store = open_events(home.database)
    if store is not None:
        try:
            after_id = store.last_event_id()
        finally:
            store.close()
    from docket.analysts import user_of_uid

    # the same checks as a plain 'docket submit' (queue, seal, who may submit)
    result = submit_files(home, files, user_of_uid(os.getuid()))
    spooled = Path(result["submitted"][0]["spooled"])
    spec = data.get("spec") if isinstance(data, dict) else None
    name = (spec or {}).get("request") or data["metadata"]["name"]
    if not as_json:
        sys.stdout.write(inline(f"{files[0]}: submitted as {spooled}; following {name}")
                         + "\n")
    def slow() -> None:
        sys.stderr.write(f"still waiting for intake to take in {spooled.name}: is "
                         "'docket watch' running for this home (or 'docket tick' from "
                         "cron)?\n")

    end = follow_request(home, name, after_id=after_id, spooled_file=spooled.name,
                         timeout_s=timeout_s, on_event=_printer(as_json),
                         on_slow_intake=slow)
    return _finish(end, as_json, name)
