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

from cli.common import JsonOption, emit, end_process, inline, run, say, table

app = typer.Typer(help="docket: file-driven batch processing for observatory data.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
queue_app = typer.Typer(help="See and change capability queues.", no_args_is_help=True)
app.add_typer(queue_app, name="queue")


def _mount() -> None:
    from cli.analysts import app as analysts_app
    from cli.dag import app as dag_app
    from cli.init import init as init_command
    from cli.inspect import inspect as inspect_command

    app.add_typer(analysts_app, name="analysts",
                  help="List and edit the home's analysts and their roles.")
    app.command("inspect")(inspect_command)
    app.command("init")(init_command)
    app.add_typer(dag_app, name="dag", help="Run or check any DAGMan DAG file on this machine.")
    from cli.notifications import app as notifications_app
    app.add_typer(notifications_app, name="notifications")
    from cli.follow import follow
    app.command("follow")(follow)
    from cli.report import report
    app.command("report")(report)
    from cli.browse import browse
    app.command("browse")(browse)
    from cli.run import run as run_command
    from cli.work import app as work_app

    app.add_typer(work_app, name="work", help="Deposit, withdraw, update and query CHIME work.")
    app.command("run")(run_command)


_mount()

GitOption = Annotated[Path | None, typer.Option(
    "--git", help="Also read documents committed in this git checkout (pulled with "
                  "--ff-only; never modified).", show_default=False)]
HomeOption = Annotated[Path | None, typer.Option(
    "--home", help="The docket home (default: $DOCKET_HOME, else the current directory).",
    show_default=False)]


def _home(home: Path | None) -> Any:
    from docket.home import resolve_home

    return resolve_home(home)


def _user() -> str:
    from docket.analysts import user_of_uid

    return user_of_uid(os.getuid())


# requests in ----------------------------------------------------------------------


def _submitted(d: dict[str, Any]) -> str:
    """One submitted document, for people: where it went, and intake's verdict if known."""
    status, file = d["status"], inline(d["file"])
    if status == "spooled":
        return f"{file}: submitted as {inline(d['spooled'])}"
    if status in ("accepted", "duplicate"):
        what = "accepted as" if status == "accepted" else "duplicate of (nothing changed)"
        return f"{file}: {what} {inline(d['request'])} v{d['version']}"
    if status == "applied":
        return f"{file}: applied: {inline(d['outcome'])}"
    reasons = d.get("reasons") or [d.get("reason", "")]
    return "\n".join([f"{file}: rejected by intake", *(f"  - {inline(r)}" for r in reasons)])


@app.command()
def submit(files: Annotated[list[Path], typer.Argument(help="Request documents.")],
           wait: Annotated[bool, typer.Option(
               "--wait", help="Wait for intake's verdict on each document (exit 8 if one "
                              "is rejected).")] = False,
           home: HomeOption = None, as_json: JsonOption = False,
           follow: Annotated[bool, typer.Option(
               "--follow", help="Then follow the request as 'docket follow' does (one "
                                "document; its exit codes).")] = False) -> int:
    """Check documents (and that this home will take them), then drop them into the spool
    atomically: all of them, or none."""
    if follow:
        from cli.follow import submit_and_follow

        return submit_and_follow(home, files, as_json)
    from docket.drivers import submit_files
    from docket.errors import ExitCode

    result = submit_files(_home(home), files, _user(), wait=wait)
    emit(result, as_json, lambda r: "\n".join(_submitted(d) for d in r["submitted"]))
    if result.get("ok", True):
        return 0
    if not as_json:
        rejected = sum(1 for d in result["submitted"] if d["status"] == "rejected")
        say(f"Error: intake rejected {rejected} of {len(files)} documents — see the "
            "reasons above; fix them and submit again")
    return int(ExitCode.INVALID)


@app.command()
def validate(files: Annotated[list[Path], typer.Argument(help="Documents to check.")],
             templates: Annotated[Path | None, typer.Option(
                 help="Capability folders (default: the home's templates/).")] = None,
             home: HomeOption = None, as_json: JsonOption = False) -> int:
    """Check documents offline, as intake would (exit 1 if any is invalid).

    Capabilities come from --templates, else --home, else the .docket.yaml of the git
    repository you are in (a repository of requests), else $DOCKET_HOME or the current
    directory."""
    from docket.drivers import validate_files
    from docket.home import repository_home

    where = (None if home is not None else repository_home(Path.cwd())) or _home(home)
    result = validate_files(where, files, templates)

    def human(r: dict[str, Any]) -> str:
        lines = []
        for d in r["documents"]:
            if d["valid"]:
                lines.append(f"{inline(d['file'])}: valid ({d['kind']} {inline(d['name'])})")
            else:
                lines.append(f"{inline(d['file'])}: invalid")
                lines.extend(f"  - {inline(p)}" for p in d["problems"])
        return "\n".join(lines)

    emit(result, as_json, human)
    return 0 if result["valid"] else 1


# the watcher ----------------------------------------------------------------------


@app.command()
def watch(poll: Annotated[bool, typer.Option(
              "--poll", help="Poll the spool (network filesystems where inotify sees "
                             "nothing).")] = False,
          git: GitOption = None, home: HomeOption = None) -> int:
    """Watch the spool (and a git checkout) and run the work: the long-lived intake."""
    import logging
    import signal
    import threading

    from cli.common import PrintableFormatter
    from docket.drivers import watch as run_watcher

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s",
                        stream=sys.stderr)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(PrintableFormatter("%(asctime)s %(name)s %(message)s"))
    # watchfiles says "N changes detected" at INFO before every pass (and after each
    # file intake moves out): a formatted write on the way to every acceptance, saying
    # nothing the "accepted: ..." line does not. Its warnings still show.
    logging.getLogger("watchfiles").setLevel(logging.WARNING)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    def report(p: Any) -> None:
        for o in p.intake.outcomes:
            what = f"{o.status}: {o.file}"
            if o.request:
                what += f" → {o.request} v{o.version}"
            if o.reasons and o.status != "accepted":
                what += f" ({o.reasons[0]})"
            say(what)
        for e in p.started:
            say(f"started execution {e}")
        for e in p.ended:
            say(f"execution {e} ended")

    run_watcher(_home(home), poll=poll, git=git, stop=stop, on_pass=report)
    return 0


@app.command()
def tick(wait: Annotated[bool, typer.Option(
             "--wait", help="Repeat passes until no execution is waiting to start or "
                            "running.")] = False,
         git: GitOption = None, home: HomeOption = None, as_json: JsonOption = False) -> int:
    """One pass of intake and work (for cron)."""
    from docket.drivers import tick as run_pass

    total = run_pass(_home(home), git, wait)

    def human(r: dict[str, Any]) -> str:
        lines = []
        for d in r["documents"]:
            line = f"{d['status']}: {inline(d['file'])}"
            if d.get("request"):
                line += f" → {inline(d['request'])} v{d['version']}"
            lines.append(line)
            if d["status"] != "accepted":
                lines.extend(f"  - {inline(reason)}" for reason in d.get("reasons", []))
        if r.get("git"):
            g = r["git"]
            lines.insert(0, ("git: " if g["ok"] else "git pull FAILED (nothing read from the "
                             "checkout this pass): ") + g.get("message", "not pulled"))
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
    from docket.drivers import status as status_of

    result = status_of(_home(home), limit, state)

    def human(r: dict[str, Any]) -> str:
        counts = ", ".join(f"{n} {s}" for s, n in sorted(r["counts"].items())) or "none"
        rows = [(q["name"], q["capability"], f"v{q['version']}", q["state"],
                 q["updated"][:19].replace("T", " "),
                 (q["reason"] or (f"source {q['source_removed']} was removed from git"
                                  if q["source_removed"] else ""))[:60])
                for q in r["requests"]]
        return (f"{r['total']} requests: {counts}\n\n"
                + table(rows, ["REQUEST", "CAPABILITY", "VERSION", "STATE", "UPDATED (UTC)",
                               "REASON"]))

    emit(result, as_json, human)
    return 0


@app.command()
def show(name: Annotated[str, typer.Argument(help="Request name.")],
         events: Annotated[int, typer.Option(help="How many recent events.")] = 30,
         provenance: Annotated[bool, typer.Option(
             "--provenance", help="The products' lineage: archive inputs, recipe, CASA, "
                                  "products, ingest and delivery.")] = False,
         home: HomeOption = None, as_json: JsonOption = False) -> int:
    """Everything about one request: versions, executions, nodes, stages, events."""
    if provenance:
        from cli.provenance import show_provenance

        return show_provenance(_home(home), name, as_json)
    from docket.drivers import show_request

    result = show_request(_home(home), name, events)

    def human(r: dict[str, Any]) -> str:
        q = r["request"]
        out = [f"{q['name']}: {q['capability']} request, version {q['current_version']}, "
               f"{q['state']}"]
        for v in r["versions"]:
            out.append(f"  v{v['number']} from {v['source_file']} by {v['actor']} at "
                       f"{v['created'][:19]}")
        for e in r["executions"]:
            engine_state = ("held (paused: 'docket resume' releases it)" if e["held"]
                            else e["engine_state"])
            out.append(f"\nexecution {e['id']} (v{e['version']} e{e['number']}): {e['state']}"
                       f", engine {e['engine'] or '-'} {engine_state}")
            if e["directory"]:
                out.append(f"  directory: {e['directory']}")
            if e["reason"]:
                out.append(f"  reason: {e['reason']}")
            for a in e.get("attempts") or []:
                for f in a["failures"]:
                    out.append(f"  attempt {a['attempt']} failed: node {f['node']} → "
                               f"{f['action']} ({f['reason']})")
            for s in e.get("stages") or []:
                described = f" ({s['description']})" if s.get("description") else ""
                out.append(f"  stage {s['stage']}{described}: {s['state']} ({s['done']}/"
                           f"{s['nodes']} nodes)")
            if e["nodes"]:
                nodes = table([(n["node"], n["state"], n["attempts"], n["exit_code"],
                                n["signal"], n["reason"]) for n in e["nodes"]],
                              ["NODE", "STATE", "ATTEMPTS", "EXIT", "SIGNAL", "REASON"])
                out.extend("  " + line for line in nodes.splitlines())
            if e.get("task_workflow"):
                from cli.tasks import task_lines

                out.extend(task_lines(e["task_workflow"]))
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


def _recovered(r: dict[str, Any]) -> str:
    lines = [f"rebuilt {r['database']} from the archive and the processing directories: "
             f"{r['requests']} requests, {r['versions']} versions, {r['executions']} "
             f"executions ({r['ended']} ended, {r['running']} running or interrupted, "
             f"{r['waiting']} waiting)"]
    if r["not_recovered"]:
        lines.append("not recovered:")
        lines.extend(f"  - {p}" for p in r["not_recovered"])
    return "\n".join(lines)


@app.command("rebuild-state")
def rebuild_state(check: Annotated[bool, typer.Option(
                      "--check", help="Only compare; exit 1 if the state differs.")] = False,
                  from_archive: Annotated[bool, typer.Option(
                      "--from-archive", help="The database is lost: write a new one from "
                      "spool/accepted/ and the processing directories, and say what could "
                      "not be recovered.")] = False,
                  home: HomeOption = None, as_json: JsonOption = False) -> int:
    """Re-derive every state table from the event log (or, with --from-archive, a lost
    database from the files)."""
    from docket.drivers import rebuild

    if from_archive:
        if check:
            raise typer.BadParameter("--check compares with an event log; --from-archive "
                                     "is for a home without one")
        emit(rebuild(_home(home), False, from_archive=True), as_json, _recovered)
        return 0
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


WaitOption = Annotated[bool, typer.Option(
    "--wait/--no-wait", help="Wait until the decision is applied and print the outcome.")]
ReasonOption = Annotated[str, typer.Option("--reason", help="Why (recorded).")]


def _decide(kind: str, spec: dict[str, Any], verb: str, subject: str, home: Path | None,
            wait: bool, as_json: bool) -> int:
    from docket.drivers import decide

    result = decide(_home(home), kind, spec, verb=verb, subject=subject, wait=wait)
    emit(result, as_json, lambda r: (r.get("outcome") or
                                     f"{kind} {r['document']} spooled as {r['spooled']}"))
    return 0


def _queue_change(capability: str, action: str, reason: str, home: Path | None, wait: bool,
                  as_json: bool, max_jobs: int | None = None) -> int:
    return _decide("QueueChange", {"capability": capability, "action": action,
                                   "max_jobs": max_jobs, "reason": reason},
                   f"queue-{action}", capability, home, wait, as_json)


@queue_app.command("pause")
def queue_pause(capability: str, reason: ReasonOption = "paused by an operator",
                wait: WaitOption = True, home: HomeOption = None,
                as_json: JsonOption = False) -> int:
    """Hold new starts (running work continues; requests are still accepted)."""
    return _queue_change(capability, "pause", reason, home, wait, as_json)


@queue_app.command("resume")
def queue_resume(capability: str, reason: ReasonOption = "resumed by an operator",
                 wait: WaitOption = True, home: HomeOption = None,
                 as_json: JsonOption = False) -> int:
    """Let waiting executions start again."""
    return _queue_change(capability, "resume", reason, home, wait, as_json)


@queue_app.command("limit")
def queue_limit(capability: str,
                max_jobs: Annotated[int, typer.Argument(min=0, help="Concurrent executions.")],
                reason: ReasonOption = "limit set by an operator", wait: WaitOption = True,
                home: HomeOption = None, as_json: JsonOption = False) -> int:
    """Set how many executions of a capability may run at once."""
    return _queue_change(capability, "limit", reason, home, wait, as_json, max_jobs)


@queue_app.command("enable")
def queue_enable(capability: str, reason: ReasonOption = "enabled by an operator",
                 wait: WaitOption = True, home: HomeOption = None,
                 as_json: JsonOption = False) -> int:
    """Accept new requests for a capability again."""
    return _queue_change(capability, "enable", reason, home, wait, as_json)


@queue_app.command("disable")
def queue_disable(capability: str, reason: ReasonOption = "disabled by an operator",
                  wait: WaitOption = True, home: HomeOption = None,
                  as_json: JsonOption = False) -> int:
    """Reject new requests for a capability (running and queued work continues)."""
    return _queue_change(capability, "disable", reason, home, wait, as_json)


# decisions ---------------------------------------------------------------------

qa_app = typer.Typer(help="QA decisions on a request version.", no_args_is_help=True)
app.add_typer(qa_app, name="qa")
VersionOption = Annotated[int | None, typer.Option(
    "--version", help="Request version (default: the current one).")]
RequiredReason = Annotated[str, typer.Option("--reason", help="Why (recorded).")]


def _decision(decision: str, name: str, version: int | None, reason: str,
              home: Path | None, wait: bool, as_json: bool) -> int:
    return _decide("Decision", {"request": name, "version": version, "decision": decision,
                                "reason": reason}, decision, name, home, wait, as_json)


@qa_app.command("pass")
def qa_pass(name: str, reason: RequiredReason, version: VersionOption = None,
            wait: WaitOption = True, home: HomeOption = None,
            as_json: JsonOption = False) -> int:
    """QA pass: this version is the result (the request is sealed)."""
    return _decision("qa-pass", name, version, reason, home, wait, as_json)


@qa_app.command("fail")
def qa_fail(name: str, reason: RequiredReason, version: VersionOption = None,
            wait: WaitOption = True, home: HomeOption = None,
            as_json: JsonOption = False) -> int:
    """QA fail: this version's result is not usable."""
    return _decision("qa-fail", name, version, reason, home, wait, as_json)


@qa_app.command("retry")
def qa_retry(name: str, reason: RequiredReason, version: VersionOption = None,
             wait: WaitOption = True, home: HomeOption = None,
             as_json: JsonOption = False) -> int:
    """Send a version awaiting QA back to its queue to run again."""
    return _decision("retry", name, version, reason, home, wait, as_json)


@app.command()
def approve(name: str, reason: RequiredReason, version: VersionOption = None,
            wait: WaitOption = True, home: HomeOption = None,
            as_json: JsonOption = False) -> int:
    """Approve a request version (AOD)."""
    return _decision("approve", name, version, reason, home, wait, as_json)


@app.command()
def reject(name: str, reason: RequiredReason, version: VersionOption = None,
           wait: WaitOption = True, home: HomeOption = None,
           as_json: JsonOption = False) -> int:
    """Reject a request version (AOD)."""
    return _decision("reject", name, version, reason, home, wait, as_json)


@app.command()
def resubmit(name: str, reason: RequiredReason, version: VersionOption = None,
             rescue: Annotated[bool, typer.Option(
                 "--rescue", help="Continue the failed execution from its rescue DAG "
                                  "(finished nodes are not run again).")] = False,
             wait: WaitOption = True, home: HomeOption = None,
             as_json: JsonOption = False) -> int:
    """Run a version again, as a new execution."""
    return _decide("Resubmit", {"request": name, "version": version, "reason": reason,
                                "rescue": rescue},
                   "resubmit", name, home, wait, as_json)


@app.command()
def seal(name: str, reason: RequiredReason, wait: WaitOption = True,
         home: HomeOption = None, as_json: JsonOption = False) -> int:
    """Accept no further versions of a request."""
    return _decide("Seal", {"request": name, "reason": reason}, "seal", name, home, wait,
                   as_json)


@app.command()
def mediate(name: str,
            set_state: Annotated[str, typer.Option("--set-state", help="The state to force.")],
            reason: RequiredReason, home: HomeOption = None,
            as_json: JsonOption = False) -> int:
    """Force a request's current execution into a state (operators only; recorded)."""
    from docket.drivers import mediate as mediate_request

    result = mediate_request(_home(home), name, set_state, reason, _user())
    emit(result, as_json, lambda r: f"{name}: execution {r['execution']} {r['from']} → "
                                    f"{r['to']} ({reason})")
    return 0


@app.command()
def pause(name: str, reason: ReasonOption = "paused by a user", home: HomeOption = None,
          as_json: JsonOption = False) -> int:
    """Hold a running workflow: its running jobs finish, no new job starts."""
    from docket.drivers import hold_execution

    result = hold_execution(_home(home), name, reason, _user())
    emit(result, as_json, lambda r: f"{name}: execution {r['execution']} held")
    return 0


@app.command()
def resume(name: str, reason: ReasonOption = "resumed by a user", home: HomeOption = None,
           as_json: JsonOption = False) -> int:
    """Release a held workflow: it starts jobs again."""
    from docket.drivers import hold_execution

    result = hold_execution(_home(home), name, reason, _user(), release=True)
    emit(result, as_json, lambda r: f"{name}: execution {r['execution']} released")
    return 0


# bookkeeping ---------------------------------------------------------------------


@app.command()
def results(capability: Annotated[str | None, typer.Option(
                help="Only executions of this capability.")] = None,
            works: Annotated[bool, typer.Option(
                "--works", help="CHIME-style works (docs/work.md) instead of executions.")]
            = False,
            pipeline: Annotated[str | None, typer.Option(
                help="Only works of this pipeline (selects works).")] = None,
            status: Annotated[str | None, typer.Option(
                help="Only executions in this state, or works with this status.")] = None,
            tag: Annotated[str | None, typer.Option(help="Only those with this tag.")]
            = None,
            group: Annotated[str | None, typer.Option(help="Only works of this group.")]
            = None,
            event: Annotated[int | None, typer.Option(help="Only works for this event id.")]
            = None,
            site: Annotated[str | None, typer.Option(help="Only works for this site.")]
            = None,
            user: Annotated[str | None, typer.Option(help="Only this user's works.")] = None,
            since: Annotated[str | None, typer.Option(
                help="Only those created at or after this UTC date/time (ISO).")] = None,
            until: Annotated[str | None, typer.Option(
                help="Only works created before this UTC date/time (ISO).")] = None,
            limit: Annotated[int, typer.Option(help="At most this many.")] = 100,
            home: HomeOption = None, as_json: JsonOption = False) -> int:
    """Executions (or, with --works or --pipeline, works) with their results and products."""
    from docket.errors import UsageError

    work_only = {"--group": group, "--event": event, "--site": site, "--user": user,
                 "--until": until}
    if works or pipeline is not None:
        if capability is not None:
            raise UsageError("--capability selects executions, --works/--pipeline works",
                             "give one or the other")
        return _work_results(home, as_json, pipeline=pipeline, status=status, tag=tag,
                             group=group, event=event, site=site, user=user, since=since,
                             until=until, limit=limit)
    given = [name for name, value in work_only.items() if value is not None]
    if given:
        # executions are not filtered by these; silently ignoring them would mislead
        raise UsageError(f"{', '.join(given)} filter works, not executions",
                         "add --works (or --pipeline P) to query works")
    from docket.drivers import results as results_of

    result = results_of(_home(home), capability, status, tag, since, limit)
    emit(result, as_json, lambda r: table(
        [(e["id"], e["request"], f"v{e['version']}", e["capability"], e["status"],
          ",".join(e["tags"]), e["user"], (e["created"] or "")[:19], len(e["products"]))
         for e in r["executions"]],
        ["EXECUTION", "REQUEST", "VERSION", "CAPABILITY", "STATUS", "TAGS", "USER", "CREATED",
         "PRODUCTS"]))
    return 0


def _work_results(home: Path | None, as_json: bool, *, status: str | None,
                  since: str | None, until: str | None, **filters: Any) -> int:
    """``docket results --works``: the same query and table as ``docket work list``."""
    from cli.work import _rows, _when
    from docket.drivers import query_works
    from docket.errors import UsageError
    from schemas.work import WORK_STATUSES

    if status is not None and status not in WORK_STATUSES:
        raise UsageError(f"--status {status!r}: a work is {', '.join(WORK_STATUSES)}",
                         "execution states (e.g. 'complete') apply without --works")
    found = query_works(_home(home), status=status, since=_when(since), until=_when(until),
                        **filters)
    emit(found, as_json, lambda r: _rows(r["works"]))
    return 0


@app.command()
def history(name: str, home: HomeOption = None, as_json: JsonOption = False) -> int:
    """Every event of a request, with its actor and reason."""
    from docket.drivers import history as history_of

    result = history_of(_home(home), name)
    emit(result, as_json, lambda r: table(
        [(e["time"][:23], e["type"], e["version"], e["execution"], e["actor"],
          e["data"].get("reason") or e["data"].get("to") or "") for e in r["events"]],
        ["TIME (UTC)", "EVENT", "VERSION", "EXECUTION", "ACTOR", "REASON / STATE"]))
    return 0


@app.command()
def metrics(home: HomeOption = None, as_json: JsonOption = False,
            prometheus: Annotated[Path | None, typer.Option(
                "--prometheus", help="Also write this file in node_exporter's textfile "
                                     "format (needs docket[prometheus]).",
                show_default=False)] = None) -> int:
    """Counts per capability and state, queue wait and run time, failures by cause."""
    from docket.drivers import metrics as metrics_of

    result = metrics_of(_home(home), prometheus)

    def human(r: dict[str, Any]) -> str:
        def fmt(v: float | None) -> str:
            return "-" if v is None else f"{v:.1f}"

        rows = []
        for cap, states in sorted(r["counts"].items()):
            t = r["timing"].get(cap, {})
            rows.append((cap, ", ".join(f"{n} {s}" for s, n in sorted(states.items())),
                         fmt(t["queue_wait_s"]["p50"]), fmt(t["queue_wait_s"]["p95"]),
                         fmt(t["run_time_s"]["p50"]), fmt(t["run_time_s"]["p95"])))
        out = table(rows, ["CAPABILITY", "EXECUTIONS", "WAIT p50 s", "WAIT p95 s",
                           "RUN p50 s", "RUN p95 s"])
        if r["failures_by_cause"]:
            out += "\n\nfailures by cause:\n" + "\n".join(
                f"  {n:5d}  {c}" for c, n in sorted(r["failures_by_cause"].items(),
                                                    key=lambda x: -x[1]))
        return out

    emit(result, as_json, human)
    return 0


def main(argv: list[str] | None = None) -> None:
    raise SystemExit(run(app, argv, prog="docket"))


def script() -> None:
    """The ``docket`` console script: ``main`` on ``sys.argv``, then ``end_process`` (a
    caller of ``main`` in its own process, a test among them, keeps its SystemExit)."""
    end_process(run(app, prog="docket"))


if __name__ == "__main__":
    script()
