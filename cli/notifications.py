"""``docket notifications``: the outbox — what was sent, what waits, what is dead."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cli.common import JsonOption, emit, table

app = typer.Typer(help="See and send the home's notifications (notifications.yaml).",
                  no_args_is_help=True)

HomeOption = Annotated[Path | None, typer.Option(
    "--home", help="The docket home (default: $DOCKET_HOME, else the current directory).",
    show_default=False)]


def _home(home: Path | None) -> Any:
    from docket.home import resolve_home

    return resolve_home(home)


@app.command("list")
def list_(state: Annotated[str | None, typer.Option(
              help="Only pending, sent or dead notifications.")] = None,
          request: Annotated[str | None, typer.Option(help="Only this request's.")] = None,
          limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 50,
          home: HomeOption = None, as_json: JsonOption = False) -> int:
    """Notifications, newest first: target, state, attempts, the last error."""
    from docket.drivers import notifications

    result = notifications(_home(home), state, request, limit)

    def human(r: dict[str, Any]) -> str:
        counts = ", ".join(f"{n} {s}" for s, n in sorted(r["counts"].items())) or "none"
        rows = [(n["id"], n["request"], n["kind"], n["target"], n["channel"], n["state"],
                 n["attempts"], (n["sent"] or n["next_attempt"] or "")[:19].replace("T", " "),
                 (n["last_error"] or "")[:70]) for n in r["notifications"]]
        return f"notifications: {counts}\n\n" + table(
            rows, ["ID", "REQUEST", "EVENT", "TARGET", "CHANNEL", "STATE", "ATTEMPTS",
                   "SENT / NEXT TRY (UTC)", "LAST ERROR"])

    emit(result, as_json, human)
    return 0


@app.command()
def send(home: HomeOption = None, as_json: JsonOption = False) -> int:
    """Deliver every notification due now, then exit (for homes run by 'docket tick')."""
    from docket.notify import Sender, sender_lock

    h = _home(home)
    with sender_lock(h):
        sender = Sender(h)
        try:
            result = sender.send_due(limit=10_000)
        finally:
            sender.close()
    emit(result, as_json, lambda r: f"{r['sent']} sent, {r['failed']} failed (will retry), "
                                    f"{r['dead']} dead")
    return 0


@app.command()
def retry(ids: Annotated[list[int] | None, typer.Argument(
              help="Notification ids (default: every dead one).")] = None,
          home: HomeOption = None, as_json: JsonOption = False) -> int:
    """Make dead notifications pending again, after the endpoint is fixed."""
    from docket.drivers import retry_notifications

    emit(retry_notifications(_home(home), ids or None), as_json, lambda r: (
        f"{len(r['retried'])} notifications will be tried again" if r["retried"]
        else "no dead notifications"))
    return 0
