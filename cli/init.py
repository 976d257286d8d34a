"""``docket init DIR``: a new home outside the repository, and what to do next."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cli.common import JsonOption, emit


def init(directory: Annotated[Path, typer.Argument(
             help="The new home (created; may exist if empty).")],
         templates: Annotated[Path | None, typer.Option(
             help="Capability folders the home uses (default: the docket repository's "
                  "templates/).")] = None,
         as_json: JsonOption = False) -> int:
    """Create a home: docket.yaml, spool and state folders, you as operator and DA."""
    import os

    from docket.analysts import user_of_uid
    from docket.drivers import init_home

    result = init_home(directory, templates, user_of_uid(os.getuid()))

    def human(r: dict[str, Any]) -> str:
        user, roles = next(iter(r["analysts"].items()))
        return "\n".join([
            f"created the docket home {r['home']}",
            f"  settings:     {r['settings']}",
            f"  capabilities: {r['templates']} ({', '.join(r['capabilities']) or 'none yet'})",
            *(["  not for requests: " + ", ".join(
                f"{name} ({why})" for name, why in r["not_requestable"].items())]
              if r["not_requestable"] else []),
            f"  analysts:     {user} ({', '.join(roles)}) in analysts.yaml",
            "",
            "next:",
            *(f"  {step}" for step in r["next"]),
            "",
            "to run it from cron, one pass a minute (crontab -e):",
            f"  {r['cron']}",
        ])

    emit(result, as_json, human)
    return 0
