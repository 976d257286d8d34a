"""Hand-offs: the tools a state-machine transition runs on an execution's directory.

A capability's machine names them as actions a DA can read, e.g.::

    [executing] -<succeed>{notify, conveyor --deliver}-> [awaiting-qa]
    [awaiting-qa] -<qa-pass@da>{conveyor --retrieve, ingest-envoy --calibration,
                                deliver}-> [complete]
    [awaiting-qa] -<qa-fail@da>{conveyor --qa-fail}-> [failed]

- ``conveyor --deliver`` (``--retrieve``, ``--deliver-img``, ``--retrieve-img``,
  ``--qa-fail``): conveyor on the directory's ``metadata.json``;
- ``ingest-envoy --calibration`` (``--image``, ``--observation``): ingest-envoy on the
  directory; the product's locator goes into the execution's results
  (``archive_locator``);
- ``deliver``: the products into the request's ``output_dir``, replacing an earlier
  delivery there; nothing when the request names none.

The transition only records ``handoff.requested`` (inside its transaction); after the
commit, ``run_pending`` runs each requested hand-off in order and records
``handoff.done`` (with its results) or ``handoff.failed``. Every tool here is safe to run
again (conveyor and ingest finish or repeat what they did; deliver replaces), so a crash
between running a tool and recording it only runs it once more. A failed hand-off is
tried again on the next passes, ``MAX_ATTEMPTS`` times in all; the execution's later
hand-offs wait for it.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from docket.store import Store

__all__ = ["HANDOFFS", "MAX_ATTEMPTS", "check_handoff", "handoff_command", "run_pending"]

log = logging.getLogger("docket.handoffs")

# tool -> the flags it may be given as an action (None: no flag)
HANDOFFS: dict[str, tuple[str | None, ...]] = {
    "conveyor": ("--deliver", "--retrieve", "--deliver-img", "--retrieve-img", "--qa-fail"),
    "ingest-envoy": ("--calibration", "--image", "--observation"),
    "deliver": (None,),
}
MAX_ATTEMPTS = 3
TIMEOUT_S = 3600


def check_handoff(tool: str, argument: str) -> str | None:
    """Why ``tool argument`` is not a hand-off a machine may name (None when it is)."""
    allowed = HANDOFFS[tool]
    if (argument or None) in allowed:
        return None
    flags = ", ".join(f for f in allowed if f) or "no argument"
    return f"action {tool!r} takes {flags}, not {argument!r}"


def handoff_command(tool: str, argument: str, directory: Path, tools_dir: Path,
                    output_dir: str | None) -> list[str] | None:
    """The command line of a hand-off; None when there is nothing to do."""
    exe = str(tools_dir / tool)
    if tool == "conveyor":
        return [exe, "--json", "-q", argument, str(directory / "metadata.json")]
    if tool == "ingest-envoy":
        return [exe, "--json", "-q", argument, str(directory)]
    if tool == "deliver":
        if not output_dir:
            return None
        target = Path(output_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        return [exe, "--json", "-q", "--force", "-l", str(target.parent), "--name",
                target.name, str(directory)]
    raise ValueError(f"unknown hand-off {tool!r}")


def _results(tool: str, payload: dict[str, Any]) -> dict[str, Any]:
    if tool == "ingest-envoy":
        products = payload.get("products") or []
        if products:
            return {"archive_locator": products[0].get("locator")}
    if tool == "deliver" and payload.get("destination"):
        return {"delivered_to": payload["destination"]}
    return {}


def run_pending(store: Store, home: Any) -> int:
    """Run every requested hand-off not yet done, in order; return how many ran."""
    done = 0
    blocked: set[int] = set()
    for item in store.open_handoffs():
        execution = item["execution"]
        if item["state"] == "failed" or execution in blocked:
            blocked.add(execution)  # its later hand-offs wait for it
            continue
        row = store.execution(execution)
        common = {"request": row.request if row else None,
                  "version": row.version if row else None, "execution": execution}
        action = item["action"]
        tool, _, argument = action.partition(" ")
        command = handoff_command(tool, argument, Path(item["directory"]), home.tools_dir,
                                  item["output_dir"])
        if command is None:
            store.record("handoff.done", **common, requested=item["requested"], action=action,
                         skipped="the request names no output_dir", results={})
            continue
        env = dict(os.environ, DOCKET_HOME=str(home.root))
        try:
            proc = subprocess.run(command, capture_output=True, text=True, env=env,
                                  timeout=TIMEOUT_S, check=False, stdin=subprocess.DEVNULL)
            code, out, err = proc.returncode, proc.stdout, proc.stderr
        except (OSError, subprocess.TimeoutExpired) as exc:
            code, out, err = None, "", str(exc)
        done += 1
        if code == 0:
            try:
                payload = json.loads(out) if out.strip() else {}
            except ValueError:
                payload = {}
            store.record("handoff.done", **common, requested=item["requested"], action=action,
                         results=_results(tool, payload))
            continue
        reason = (err.strip().splitlines() or [f"exit status {code}"])[-1]
        attempt = item["attempts"] + 1
        final = attempt >= MAX_ATTEMPTS
        log.warning("execution %s: %s failed (%s)", execution, action, reason)
        with store.transaction():
            store.record("handoff.failed", **common, requested=item["requested"],
                         action=action, exit_code=code, reason=reason, attempt=attempt,
                         final=final)
            if final:
                store.record("notification", **common,
                             message=f"{common['request']} v{common['version']}: hand-off "
                                     f"{action!r} failed {attempt} times: {reason}")
        blocked.add(execution)
    return done
