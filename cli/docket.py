"""``docket``: submit requests, run the watcher, and see what happened.

Each command is thin: it resolves the home, makes one library call and prints the
result (a table for people, ``--json`` for scripts). Library modules are imported inside
the commands, so ``docket status`` does not pay for YAML, pydantic or Jinja2.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.common import JsonOption, emit, run, table

app = typer.Typer(help="docket: file-driven batch processing for observatory data.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
queue_app = typer.Typer(help="See and change capability queues.", no_args_is_help=True)
app.add_typer(queue_app, name="queue")

HomeOption = Annotated[Path | None, typer.Option(
    "--home", help="The docket home (default: $DOCKET_HOME, else the current directory).",
    show_default=False)]


def _home(home: Path | None) -> Any:
    from docket.home import resolve_home

    return resolve_home(home)


def _user() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


# requests in ----------------------------------------------------------------------


@app.command()
def submit(files: Annotated[list[Path], typer.Argument(help="Request documents.")],
           home: HomeOption = None, as_json: JsonOption = False) -> int:
    """Check documents, then drop them into the spool atomically."""
    from docket.drivers import submit_files

    result = submit_files(_home(home), files)
    emit(result, as_json, lambda r: "\n".join(
        f"{d['file']}: submitted as {d['spooled']}" for d in r["submitted"]))
    return 0


@app.command()
def validate(files: Annotated[list[Path], typer.Argument(help="Documents to check.")],
             templates: Annotated[Path | None, typer.Option(
                 help="Capability folders (default: the home's templates/).")] = None,
             home: HomeOption = None, as_json: JsonOption = False) -> int:
    """Check documents offline, as intake would (exit 1 if any is invalid)."""
    from docket.drivers import validate_files

    result = validate_files(_home(home), files, templates)

    def human(r: dict[str, Any]) -> str:
        lines = []
        for d in r["documents"]:
            if d["valid"]:
                lines.append(f"{d['file']}: valid ({d['kind']} {d['name']})")
            else:
                lines.append(f"{d['file']}: invalid")
                lines.extend(f"  - {p}" for p in d["problems"])
        return "\n".join(lines)

    emit(result, as_json, human)
    return 0 if result["valid"] else 1


# the watcher ----------------------------------------------------------------------


@app.command()
def watch(poll: Annotated[bool, typer.Option(
              "--poll", help="Poll the spool (network filesystems where inotify sees "
                             "nothing).")] = False,
          home: HomeOption = None) -> int:
    """Watch the spool and run the work: the long-lived intake."""
    import logging
    import signal
    import threading

    from docket.watcher import Watcher

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s",
                        stream=sys.stderr)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    watcher = Watcher(_home(home))

    def report(p: Any) -> None:
        for o in p.intake.outcomes:
            what = f"{o.status}: {o.file}"
            if o.request:
                what += f" → {o.request} v{o.version}"
            if o.reasons and o.status != "accepted":
                what += f" ({o.reasons[0]})"
            print(what, file=sys.stderr, flush=True)
        for e in p.started:
            print(f"started execution {e}", file=sys.stderr, flush=True)
        for e in p.ended:
            print(f"execution {e} ended", file=sys.stderr, flush=True)

    try:
        watcher.watch(poll=poll, stop=stop, on_pass=report)
    finally:
        watcher.close()
    return 0


@app.command()
def tick(wait: Annotated[bool, typer.Option(
             "--wait", help="Repeat passes until no execution is waiting to start or "
                            "running.")] = False,
         home: HomeOption = None, as_json: JsonOption = False) -> int:
    """One pass of intake and work (for cron)."""
    from docket.watcher import Watcher, intake_lock

    h = _home(home)
    watcher = Watcher(h)
    total: dict[str, Any] = {}
    try:
        with intake_lock(h.intake_lock, "docket tick"):
            import time

            while True:
                report = watcher.step().as_dict()
                for key, value in report.items():
                    total[key] = (total.get(key, 0) + value if isinstance(value, int)
                                  else total.get(key, []) + value)
                busy = watcher.store.one(
                    "SELECT count(*) AS n FROM executions WHERE engine_state IN "
                    "('starting', 'running')")["n"]
                if not wait or (busy == 0 and not report["started"]
                                and not report["waiting_files"]):
                    break
                time.sleep(watcher.home.config.poll_interval_s / 2)
    finally:
        watcher.close()
    total["waiting_files"] = sorted(set(total.get("waiting_files", [])))

    def human(r: dict[str, Any]) -> str:
        lines = []
        for d in r["documents"]:
            line = f"{d['status']}: {d['file']}"
            if d.get("request"):
                line += f" → {d['request']} v{d['version']}"
            lines.append(line)
            if d["status"] != "accepted":
                lines.extend(f"  - {reason}" for reason in d.get("reasons", []))
        lines.append(f"{r['accepted']} accepted, {r['duplicates']} duplicate, "
                     f"{r['rejected']} rejected; {len(r['started'])} started, "
                     f"{len(r['ended'])} ended")
        if r["waiting_files"]:
            lines.append("still being written: " + ", ".join(r["waiting_files"]))
        return "\n".join(lines)

    emit(total, as_json, human)
    return 0


# looking -------------------------------------------------------------------------


@app.command()
def status(state: Annotated[str | None, typer.Option(help="Only requests in this state.")]
           = None,
           limit: Annotated[int, typer.Option(help="How many recent requests.")] = 20,
           home: HomeOption = None, as_json: JsonOption = False) -> int:
    """Requests by state, and the most recent ones."""
    from docket.report import status as status_of
    from docket.store import Store

    h = _home(home)
    store = Store.open_readonly(h.database)
    try:
        result = status_of(store, limit, state)
    finally:
        store.close()

    def human(r: dict[str, Any]) -> str:
        counts = ", ".join(f"{n} {s}" for s, n in sorted(r["counts"].items())) or "none"
        rows = [(q["name"], q["capability"], f"v{q['version']}", q["state"],
                 q["updated"][:19].replace("T", " "), (q["reason"] or "")[:60])
                for q in r["requests"]]
        return (f"{r['total']} requests: {counts}\n\n"
                + table(rows, ["REQUEST", "CAPABILITY", "VERSION", "STATE", "UPDATED (UTC)",
                               "REASON"]))

    emit(result, as_json, human)
    return 0


@app.command()
def show(name: Annotated[str, typer.Argument(help="Request name.")],
         events: Annotated[int, typer.Option(help="How many recent events.")] = 30,
         home: HomeOption = None, as_json: JsonOption = False) -> int:
    """Everything about one request: versions, executions, nodes, stages, events."""
    from docket.capabilities import CapabilityError, load_capability
    from docket.errors import NotFound
    from docket.report import show as show_of
    from docket.store import Store

    h = _home(home)
    store = Store.open_readonly(h.database)
    try:
        row = store.one("SELECT capability FROM requests WHERE name=?", name)
        specs = None
        if row is not None:
            try:
                specs = list(load_capability(h.templates, row["capability"]).definition.stages)
            except CapabilityError:
                specs = []
        result = show_of(store, name, specs, events)
    finally:
        store.close()
    if result is None:
        raise NotFound(f"no request named {name!r}", "see 'docket status' for the names")

    def human(r: dict[str, Any]) -> str:
        q = r["request"]
        out = [f"{q['name']}: {q['capability']} request, version {q['current_version']}, "
               f"{q['state']}"]
        for v in r["versions"]:
            out.append(f"  v{v['number']} from {v['source_file']} by {v['actor']} at "
                       f"{v['created'][:19]}")
        for e in r["executions"]:
            out.append(f"\nexecution {e['id']} (v{e['version']} e{e['number']}): {e['state']}"
                       f", engine {e['engine'] or '-'} {e['engine_state']}")
            if e["directory"]:
                out.append(f"  directory: {e['directory']}")
            if e["reason"]:
                out.append(f"  reason: {e['reason']}")
            for s in e.get("stages") or []:
                out.append(f"  stage {s['stage']}: {s['state']} ({s['done']}/{s['nodes']} "
                           "nodes)")
            if e["nodes"]:
                nodes = table([(n["node"], n["state"], n["attempts"], n["exit_code"],
                                n["signal"], n["reason"]) for n in e["nodes"]],
                              ["NODE", "STATE", "ATTEMPTS", "EXIT", "SIGNAL", "REASON"])
                out.extend("  " + line for line in nodes.splitlines())
        if r["events"]:
            out.append("\nrecent events:")
        for ev in r["events"]:
            out.append(f"  {ev['time'][:19]} {ev['type']}"
                       + (f" e{ev['execution']}" if ev["execution"] else "")
                       + (f" by {ev['actor']}" if ev["actor"] else ""))
        return "\n".join(out)

    emit(result, as_json, human)
    return 0


# changing ------------------------------------------------------------------------


@app.command()
def cancel(name: Annotated[str, typer.Argument(help="Request name.")],
           reason: Annotated[str, typer.Option(help="Why.")] = "cancelled by a user",
           home: HomeOption = None, as_json: JsonOption = False) -> int:
    """Cancel a request's waiting or running executions."""
    from docket.drivers import cancel_request

    result = cancel_request(_home(home), name, reason, _user())
    emit(result, as_json, lambda r: (
        f"cancelled executions {', '.join(map(str, r['cancelled']))} of {name}"
        if r["cancelled"] else f"{name}: nothing to cancel ({r['reason']})"))
    return 0


@app.command("rebuild-state")
def rebuild_state(check: Annotated[bool, typer.Option(
                      "--check", help="Only compare; exit 1 if the state differs.")] = False,
                  home: HomeOption = None, as_json: JsonOption = False) -> int:
    """Re-derive every state table from the event log."""
    from docket.drivers import rebuild

    result = rebuild(_home(home), check)
    emit(result, as_json, lambda r: (
        f"replayed {r['events']} events; state " +
        ("matches" if r["identical"] else "DIFFERED in: " + ", ".join(r["differences"]))))
    return 0 if result["identical"] or not check else 1


@queue_app.command("list")
def queue_list(home: HomeOption = None, as_json: JsonOption = False) -> int:
    """Per capability: running, waiting, limit, paused, enabled, oldest wait."""
    from docket.drivers import queues

    result = queues(_home(home))
    emit(result, as_json, lambda r: table(
        [(q["capability"], q["running"], q["waiting"], q["max_jobs"],
          "yes" if q["paused"] else "no", "yes" if q["enabled"] else "no",
          (q["oldest_wait"] or "")[:19]) for q in r["queues"]],
        ["CAPABILITY", "RUNNING", "WAITING", "LIMIT", "PAUSED", "ENABLED", "OLDEST WAITING"]))
    return 0


def _queue_change(capability: str, home: Path | None, as_json: bool, **change: Any) -> int:
    from docket.drivers import change_queue

    result = change_queue(_home(home), capability, _user(), **change)
    emit(result, as_json, lambda r: f"queue {capability}: " + ", ".join(
        f"{k}={v}" for k, v in r["change"].items()))
    return 0


@queue_app.command("pause")
def queue_pause(capability: str, home: HomeOption = None, as_json: JsonOption = False) -> int:
    """Hold new starts (running work continues; requests are still accepted)."""
    return _queue_change(capability, home, as_json, paused=True)


@queue_app.command("resume")
def queue_resume(capability: str, home: HomeOption = None,
                 as_json: JsonOption = False) -> int:
    """Let waiting executions start again."""
    return _queue_change(capability, home, as_json, paused=False)


@queue_app.command("limit")
def queue_limit(capability: str,
                max_jobs: Annotated[int, typer.Argument(min=0, help="Concurrent executions.")],
                home: HomeOption = None, as_json: JsonOption = False) -> int:
    """Set how many executions of a capability may run at once."""
    return _queue_change(capability, home, as_json, max_jobs=max_jobs)


def main(argv: list[str] | None = None) -> None:
    raise SystemExit(run(app, argv, prog="docket"))


if __name__ == "__main__":
    main()
