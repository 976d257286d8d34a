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

The transition only records ``handoff.requested`` (inside its transaction). Each pass
of the watcher then calls ``run_pending``, which never waits for a tool: it starts each
requested hand-off as its own process (``python -m docket.handoffs``, in a session of its
own, so it outlives a watcher or ``docket tick`` that ends) and collects the ones that
finished, recording ``handoff.done`` (with its results) or ``handoff.failed``. An ingest
that takes an hour so delays no other request's intake or launch; an execution's later
hand-offs wait for its earlier ones, and different executions' run side by side.

The record is crash-safe. ``handoff.started`` is committed before the process starts,
and the process holds an exclusive lock on its run's lock file (in
``state/handoffs/``) from before it starts until it, and the tool it runs, have exited;
it writes the tool's exit status there before the lock is let go. So a pass reads:
lock held → still running (a restarted watcher does not start it twice); lock free with
a result → finished; lock free without one → the hand-off (or the watcher, between the
record and the start) was killed, and it is started again once (a second kill is final).
A tool that fails is tried again on the next passes, ``MAX_ATTEMPTS`` times in all. Every
tool here is safe to run again (conveyor and ingest finish or repeat what they did;
deliver replaces), which is what makes a rerun after a kill correct.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from docket.fileio import atomic_write

if TYPE_CHECKING:
    from docket.store import Store

__all__ = ["HANDOFFS", "MAX_ATTEMPTS", "RUNS_DIR", "active", "check_handoff", "handoff_command",
           "run_pending", "started_pids"]

log = logging.getLogger("docket.handoffs")

# tool -> the flags it may be given as an action (None: no flag)
HANDOFFS: dict[str, tuple[str | None, ...]] = {
    "conveyor": ("--deliver", "--retrieve", "--deliver-img", "--retrieve-img", "--qa-fail"),
    "ingest-envoy": ("--calibration", "--image", "--observation"),
    "deliver": (None,),
}
MAX_ATTEMPTS = 3
TIMEOUT_S = 3600
# under the home's state directory: each run's lock, exit status, stdout and stderr
RUNS_DIR = "handoffs"


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
    """Collect finished hand-offs and start the requested ones that may run, in order;
    return how many were started. Never waits for a tool."""
    from docket.records import HandoffState  # not at the top: the hand-off process needs none

    runs = home.state_dir / RUNS_DIR
    started = 0
    blocked: set[int] = set()
    _reap()
    for item in store.open_handoffs():
        execution = item["execution"]
        if item["state"] == HandoffState.FAILED or execution in blocked:
            blocked.add(execution)  # its later hand-offs wait for it
            continue
        row = store.execution(execution)
        common = {"request": row.request if row else None,
                  "version": row.version if row else None, "execution": execution,
                  "requested": item["requested"], "action": item["action"]}
        base = runs / f"{item['requested']}.{item['attempts'] + 1}"
        if item["state"] == "running":
            if _finish(store, item, common, base):
                continue  # done: the execution's next hand-off may start in this pass
            blocked.add(execution)
            continue
        tool, _, argument = item["action"].partition(" ")
        command = handoff_command(tool, argument, Path(item["directory"]), home.tools_dir,
                                  item["output_dir"])
        if command is None:
            store.record("handoff.done", **common,
                         skipped="the request names no output_dir", results={})
            continue
        runs.mkdir(parents=True, exist_ok=True)
        store.record("handoff.started", **common, attempt=item["attempts"] + 1)
        _start(base, command, dict(os.environ, DOCKET_HOME=str(home.root)))
        started += 1
        blocked.add(execution)
    return started


def active(store: Store) -> int:
    """Hand-offs running or still to run (not those behind a hand-off that failed for
    good): ``docket tick --wait`` waits for them."""
    return store.active_handoffs()


# hand-off processes this process started: polled so that none stays a zombie
_CHILDREN: list[subprocess.Popen[bytes]] = []


def _reap() -> None:
    _CHILDREN[:] = [child for child in _CHILDREN if child.poll() is None]


def started_pids() -> list[int]:
    """The hand-off processes this process started and has not reaped (their ends are
    what ``docket tick --wait`` waits for between passes)."""
    return [child.pid for child in _CHILDREN]


def _start(base: Path, command: list[str], env: dict[str, str]) -> None:
    """Start the hand-off's process holding the run's lock, which it keeps to the end."""
    for suffix in (".json", ".out", ".err"):  # nothing from an earlier try of this base
        Path(f"{base}{suffix}").unlink(missing_ok=True)
    fd = os.open(f"{base}.lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with open(f"{base}.runner.err", "wb") as runner_err:  # the runner's own errors
            _CHILDREN.append(subprocess.Popen(
                [sys.executable, "-m", "docket.handoffs", "--lock-fd", str(fd), str(base),
                 "--", *command], pass_fds=(fd,), env=env, start_new_session=True,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=runner_err))
    except OSError as exc:  # cannot start: the next pass sees a free lock, no result
        log.warning("hand-off %s could not start: %s", base.name, exc)
    finally:
        os.close(fd)


def _finish(store: Store, item: Any, common: dict[str, Any], base: Path) -> bool:
    """Record a started hand-off that has ended; False while it runs or once it failed."""
    from docket.engines.localdag import lock_is_held  # the DAG runner's lock test

    if lock_is_held(Path(f"{base}.lock")):
        return False
    try:
        return _record_end(store, item, common, base)
    finally:  # recorded: the run's files have nothing more to say
        for suffix in (".json", ".out", ".err", ".runner.err", ".lock"):
            Path(f"{base}{suffix}").unlink(missing_ok=True)


def _record_end(store: Store, item: Any, common: dict[str, Any], base: Path) -> bool:
    tool = item["action"].partition(" ")[0]
    attempt = item["attempts"] + 1
    try:
        code = json.loads(Path(f"{base}.json").read_text())["exit_code"]
    except (OSError, ValueError, KeyError):
        # no result: it was killed (or never started); a second kill is final
        killed = store.handoff_kills(item["execution"], item["requested"])
        crashed = _read(Path(f"{base}.runner.err")).strip().splitlines()  # its traceback
        reason = (f"the hand-off's process failed: {crashed[-1]}" if crashed
                  else "the hand-off was killed before it finished")
        _failed(store, common, attempt, None, reason,
                final=attempt >= MAX_ATTEMPTS or killed >= 1, killed=True)
        return False
    out = _read(Path(f"{base}.out"))
    if code == 0:
        try:
            payload = json.loads(out) if out.strip() else {}
        except ValueError:
            payload = {}
        store.record("handoff.done", **common, results=_results(tool, payload))
        return True
    err = _read(Path(f"{base}.err"))
    reason = (err.strip().splitlines() or [f"exit status {code}"])[-1]
    _failed(store, common, attempt, code, reason, final=attempt >= MAX_ATTEMPTS)
    return False


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _failed(store: Store, common: dict[str, Any], attempt: int, code: int | None,
            reason: str, *, final: bool, killed: bool = False) -> None:
    log.warning("execution %s: %s failed (%s)", common["execution"], common["action"],
                reason)
    with store.transaction():
        store.record("handoff.failed", **common, exit_code=code, reason=reason,
                     attempt=attempt, final=final, **({"killed": True} if killed else {}))
        if final:
            store.record("notification", **{k: common[k] for k in
                                             ("request", "version", "execution")},
                         message=f"{common['request']} v{common['version']}: hand-off "
                                 f"{common['action']!r} failed {attempt} times: {reason}")


def main(argv: list[str] | None = None) -> int:
    """The hand-off's own process: run the tool, then write its exit status beside the
    lock it holds (inherited, and passed on to the tool, so a tool that outlives this
    process still holds it)."""
    parser = argparse.ArgumentParser(prog="python -m docket.handoffs")
    parser.add_argument("--lock-fd", type=int, required=True)
    parser.add_argument("base", type=Path)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    base: Path = args.base
    with open(f"{base}.out", "wb") as out, open(f"{base}.err", "wb") as err:
        try:
            code: int | None = subprocess.run(
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                pass_fds=(args.lock_fd,), timeout=TIMEOUT_S, check=False).returncode
        except subprocess.TimeoutExpired:
            err.write(f"\nError: the hand-off timed out after {TIMEOUT_S} s\n".encode())
            code = None
        except OSError as exc:
            err.write(f"\nError: cannot run {command[0]}: {exc}\n".encode())
            code = None
    atomic_write(Path(f"{base}.json"), json.dumps({"exit_code": code}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
