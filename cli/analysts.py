"""``docket analysts``: list and edit the home's analysts and their roles (Workspaces' mod_analyst).

Mounted into ``docket`` as ``docket analysts``; each command makes one call into
``docket.analysts``. The actor of an edit is the user running the command.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.common import JsonOption, emit, run, table

__all__ = ["app", "main"]

app = typer.Typer(help="List and edit the analysts of a home and their roles.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

HomeOption = Annotated[Path | None, typer.Option(
    "--home", help="The docket home (default: $DOCKET_HOME, else the current directory).",
    show_default=False)]
RoleOption = Annotated[list[str], typer.Option(
    "--role", "-r", help="A role (da, aod, operator, ...); repeat for several.",
    show_default=False)]
UserArgument = Annotated[str, typer.Argument(help="A user name on this machine.",
                                             metavar="USER", show_default=False)]


def _root(home: Path | None) -> Path:
    from docket.home import resolve_home

    return resolve_home(home).root


def _actor() -> str:
    from docket.analysts import user_of_uid

    return user_of_uid(os.getuid())


def _record(home: Path | None, change: Any) -> None:
    """Put the edit into the home's event log too (``docket history``)."""
    from docket.drivers import record_analysts_change
    from docket.home import resolve_home

    record_analysts_change(resolve_home(home), change)


def _changed(change: Any) -> str:
    if not change.changed:
        return f"{change.user}: unchanged ({', '.join(change.roles_after)})"
    if not change.roles_after:
        return f"{change.user}: removed (had {', '.join(change.roles_before)})"
    return (f"{change.user}: {', '.join(change.roles_before) or 'no role'} → "
            f"{', '.join(change.roles_after)}")


@app.command("list")
def list_(home: HomeOption = None, as_json: JsonOption = False) -> int:
    """Show every analyst with their roles and git author emails."""
    from docket.analysts import load_analysts

    analysts = load_analysts(_root(home))

    def human(r: dict[str, Any]) -> str:
        if not r["analysts"]:
            return (f"no analysts listed in {r['file']}; add one with "
                    "'docket analysts add USER --role ROLE'")
        return table([(a["user"], ", ".join(a["roles"]), ", ".join(a["emails"]),
                       a["name"] or "") for a in r["analysts"]],
                     ["USER", "ROLES", "EMAILS", "NAME"])

    emit(analysts.as_dict(), as_json, human)
    return 0


@app.command()
def add(user: UserArgument, role: RoleOption,
        email: Annotated[list[str] | None, typer.Option(
            "--email", help="A git author email that counts as this user (GitOps mode); "
                            "repeat for several.", show_default=False)] = None,
        name: Annotated[str | None, typer.Option(
            help="Full name, for people reading the list.", show_default=False)] = None,
        home: HomeOption = None, as_json: JsonOption = False) -> int:
    """Give USER roles (added to those they have)."""
    from docket.analysts import add as add_analyst

    change = add_analyst(_root(home), user, role, _actor(), emails=email or (), name=name)
    _record(home, change)
    emit(change.as_dict(), as_json, lambda _r: _changed(change))
    return 0


@app.command()
def remove(user: UserArgument,
           role: Annotated[list[str] | None, typer.Option(
               "--role", "-r", help="Take away only this role; repeat for several "
                                    "(default: remove USER from the list).",
               show_default=False)] = None,
           home: HomeOption = None, as_json: JsonOption = False) -> int:
    """Remove USER from the list, or take away some of their roles."""
    from docket.analysts import remove as remove_analyst

    change = remove_analyst(_root(home), user, _actor(), roles=role)
    _record(home, change)
    emit(change.as_dict(), as_json, lambda _r: _changed(change))
    return 0


def main(argv: list[str] | None = None) -> None:
    """Run as a program of its own (docket mounts ``app`` as ``docket analysts``)."""
    raise SystemExit(run(app, argv, prog="docket analysts"))
