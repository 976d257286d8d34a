"""Drivers: what each ``docket`` command does, between the thin CLI and the library.

Each function takes a resolved ``Home`` and plain arguments, makes the library calls and
returns one plain result dict (the CLI prints it as a table or as ``--json``).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from docket.app import open_home
from docket.errors import Invalid, NotFound
from docket.home import Home

__all__ = ["init_home", "submit_files", "validate_files", "tick", "watch", "status",
           "show_request", "results", "metrics", "provenance", "notifications",
           "retry_notifications", "record_analysts_change", "deposit_works", "withdraw_work",
           "update_work", "query_works", "get_work", "cancel_request", "rebuild", "queues",
           "spool_file", "decide", "mediate", "history", "hold_execution"]


def init_home(root: Path, templates: Path | None, user: str) -> dict[str, Any]:
    """A new home: settings, folders, ``user`` as its operator and DA, and what to do next."""
    import shlex
    import sys

    from docket.analysts import add
    from docket.capabilities import list_capabilities, requestable
    from docket.home import REPOSITORY, create_home

    templates = (templates or REPOSITORY / "templates").resolve()
    if not templates.is_dir():
        raise NotFound(f"no capability folder at {templates}",
                       "give --templates DIR (a folder of capabilities)")
    home = create_home(root, templates)
    add(home.root, user, ["operator", "da"], user)
    docket = Path(sys.argv[0]).resolve() if Path(sys.argv[0]).name == "docket" else (
        Path(sys.executable).parent / "docket")
    q = shlex.quote
    cron = (f"* * * * * cd {q(str(home.root))} && flock -n state/cron.lock {q(str(docket))} "
            "tick >> state/tick.log 2>&1")
    capabilities, closed = requestable(templates, list_capabilities(templates))
    example = REPOSITORY / "templates" / "demo" / "example-request.yaml"
    steps = [f"export DOCKET_HOME={q(str(home.root))}"]
    if example.is_file() and "demo" in capabilities:
        steps.append(f"{q(str(docket))} submit {q(str(example))}")
    steps += [f"{q(str(docket))} tick --wait    # or keep '{docket.name} watch' running, "
              "or add the cron line", f"{q(str(docket))} status"]
    return {"home": str(home.root), "settings": str(home.root / "docket.yaml"),
            "templates": str(templates), "capabilities": capabilities, "not_requestable": closed,
            "analysts": {user: ["da", "operator"]}, "cron": cron, "next": steps}


def spool_file(home: Home, raw: bytes, name: str) -> Path:
    """Write ``raw`` into ``spool/incoming`` atomically, under a name not yet used there."""
    from docket.fileio import atomic_write

    home.incoming.mkdir(parents=True, exist_ok=True)
    stem, dot, suffix = name.rpartition(".")
    if not dot:
        stem, suffix = name, "yaml"
    target = home.incoming / f"{stem}.{suffix}"
    counter = 1
    while target.exists():
        counter += 1
        target = home.incoming / f"{stem}-{counter}.{suffix}"
    # atomic_write's temporary name starts with a dot, which intake never reads
    atomic_write(target, raw)
    return target


def _read(path: Path, limit: int) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(limit + 1)
    except FileNotFoundError:
        raise NotFound(f"{path} does not exist", "check the path") from None
    except IsADirectoryError:
        raise Invalid(f"{path} is a directory", "give a YAML file") from None


def validate_files(home: Home, files: list[Path], templates: Path | None = None) -> dict[
        str, Any]:
    from docket.capabilities import CapabilityCache
    from docket.documents import DocumentError
    from docket.intake import check_document

    caps = CapabilityCache(templates or home.templates)
    documents = []
    for path in files:
        raw = _read(path, home.config.max_document_bytes)
        try:
            checked = check_document(raw, home, caps, filename=path.name)
        except DocumentError as exc:
            documents.append({"file": str(path), "valid": False,
                              "problems": [str(p) for p in exc.problems]})
            continue
        model = checked.parsed.model
        documents.append({"file": str(path), "valid": True, "kind": checked.parsed.kind,
                          "name": model.metadata.name})
    return {"valid": all(d["valid"] for d in documents), "documents": documents}


def submit_files(home: Home, files: list[Path], actor: str, *, wait: bool = False,
                 timeout_s: float = 120.0) -> dict[str, Any]:
    """Check every file as far as can be known before intake, then spool them all (or none).

    Beyond ``validate`` (the document alone), each request is judged against the home's
    state as ``actor`` (the owner the spooled file will have): a capability or queue that
    is disabled, a submitter the capability does not allow, a sealed request. With
    ``wait``, wait for intake's verdict on each file (applying intake here when no watcher
    holds the home) and report it; ``result["ok"]`` is False when any was rejected.
    """
    checked = validate_files(home, files)
    bad = [d for d in checked["documents"] if not d["valid"]]
    if bad:
        first = bad[0]
        raise Invalid(f"{first['file']} is not a valid request: {first['problems'][0]}"
                      + (f" (and {len(first['problems']) - 1} more)"
                         if len(first["problems"]) > 1 else ""),
                      "run 'docket validate FILE' for every problem; nothing was submitted")
    for document in checked["documents"]:
        refusal = _refusal(home, document, actor)
        if refusal is not None:
            raise Invalid(f"{document['file']} would be rejected: {refusal}",
                          "nothing was submitted")
    mark = _last_event(home)
    submitted = []
    for path, document in zip(files, checked["documents"], strict=True):
        target = spool_file(home, _read(path, home.config.max_document_bytes), path.name)
        submitted.append({"file": str(path), "spooled": str(target), "status": "spooled",
                          "kind": document["kind"], "name": document["name"]})
    result: dict[str, Any] = {"submitted": submitted}
    if wait:
        for item in submitted:
            spooled = Path(item["spooled"])
            if item["kind"] == "CapabilityRequest":
                item.update(_await(home, spooled, lambda p=spooled: _request_outcome(
                    home, p, mark), f"{item['file']}", timeout_s))
            else:
                item.update(_await(home, spooled, lambda p=spooled, n=item["name"]:
                                   _decision_outcome(home, n, p, mark), f"{item['file']}",
                                   timeout_s))
        result["ok"] = all(i["status"] != "rejected" for i in submitted)
    return result


# the watcher ----------------------------------------------------------------------


def _git_source(home: Home, repo_dir: Path | None) -> Any:
    """The git checkout ``repo_dir`` as a source of documents (None without one)."""
    if repo_dir is None:
        return None
    from docket.gitsource import GitSource

    return GitSource(repo_dir, require_signed=home.config.require_signed,
                     max_bytes=home.config.max_document_bytes)


def tick(home: Home, git: Path | None = None, wait: bool = False) -> dict[str, Any]:
    """One pass of intake and work (with ``wait``, passes until nothing waits or runs)."""
    from docket.watcher import Watcher

    watcher = Watcher(home)
    try:
        return watcher.tick(git=_git_source(home, git), wait=wait)
    finally:
        watcher.close()


def watch(home: Home, *, poll: bool, git: Path | None, stop: Any,
          on_pass: Any = None) -> None:
    """The long-lived intake, until ``stop`` (a ``threading.Event``) is set; it first waits
    out a full or failing disk. ``on_pass`` is called with each pass's ``PassReport``."""
    from docket.watcher import Watcher

    watcher = Watcher.open_when_possible(home, stop)
    if watcher is None:
        return
    try:
        watcher.watch(poll=poll, stop=stop, on_pass=on_pass, git=_git_source(home, git))
    finally:
        watcher.close()


def _refusal(home: Home, document: dict[str, Any], actor: str) -> str | None:
    """What the home's state says to a valid request document from ``actor``."""
    if document["kind"] != "CapabilityRequest":
        return None  # decisions are judged against the state when applied
    from docket.documents import parse_document, spec_sha256

    raw = _read(Path(document["file"]), home.config.max_document_bytes)
    model = parse_document(raw, max_bytes=home.config.max_document_bytes,
                           max_nodes=home.config.max_yaml_nodes).model
    # a home that never ran reads as an empty one: judged by the definitions alone
    app = open_home(home, readonly=True, empty_if_new=True)
    try:
        sha = spec_sha256(model.spec.model_dump(mode="json"))
        return app.rules.assess(app.capabilities.get(model.spec.capability),
                                model.metadata.name, sha, actor)[2]
    finally:
        app.close()


def _last_event(home: Home) -> int:
    if not home.database.is_file():
        return 0
    with open_home(home, readonly=True) as app:
        return app.store.last_event_id()


def _request_outcome(home: Home, path: Path, after_event: int) -> dict[str, Any] | None:
    """Intake's verdict on the request spooled as ``path``, once it has left the spool:
    the first event about that file name recorded after ``after_event``."""
    if path.exists() or not home.database.exists():
        return None
    with open_home(home, readonly=True) as app:
        found = [e for e in (
            app.store.first_event(("version.accepted",), after_event, source_file=path.name),
            app.store.first_event(("document.duplicate", "document.rejected"), after_event,
                                  file=path.name)) if e is not None]
    if not found:
        return None
    event = min(found, key=lambda e: e["id"])
    if event["type"] == "version.accepted":
        return {"status": "accepted", "request": event["request"], "version": event["version"]}
    if event["type"] == "document.duplicate":
        return {"status": "duplicate", "request": event["request"],
                "version": event["version"]}
    return {"status": "rejected", "reasons": event["data"].get("reasons", [])}


def _await(home: Home, path: Path, outcome_of: Any, what: str,
           timeout_s: float) -> dict[str, Any]:
    """Wait until intake has decided the spooled ``path`` and ``outcome_of()`` says how.

    When no watcher holds the home's intake, apply intake here (one pass over just that
    file), so waiting also works where cron runs ``tick``.
    """
    import time

    from docket.errors import DocketError, Locked

    deadline = time.monotonic() + timeout_s
    while True:
        if path.exists():
            with contextlib.suppress(Locked):  # a watcher has the intake: wait for it
                _apply_here(home, path.name)
        outcome = outcome_of()
        if outcome is not None:
            return outcome
        if time.monotonic() > deadline:
            raise DocketError(f"{what} was not decided within {timeout_s:g} s",
                              "is the watcher running? it stays in the spool; "
                              "'docket tick' decides it")
        time.sleep(0.1)


def cancel_request(home: Home, name: str, reason: str, actor: str) -> dict[str, Any]:
    app = open_home(home)
    store, rules = app.store, app.rules
    try:
        if store.request(name) is None:
            raise NotFound(f"no request named {name!r}", "see 'docket status' for the names")
        from docket.analysts import load_analysts
        from docket.decisions import Refused, cancel_executions, check_may_change
        from docket.errors import UsageError

        try:
            check_may_change(rules, name, actor, load_analysts(home.root).roles_of(actor),
                             "cancelling")
        except Refused as exc:
            raise UsageError(str(exc), "ask the requester or an operator") from None
        with store.transaction():
            cancelled = cancel_executions(rules, name, None, reason, actor)
        return {"request": name, "cancelled": cancelled,
                "reason": reason if cancelled else "every execution has already ended"}
    finally:
        app.close()


def rebuild(home: Home, check: bool, from_archive: bool = False) -> dict[str, Any]:
    from docket.store import Store

    if from_archive:
        from docket.recovery import rebuild_from_archive
        from docket.watcher import intake_lock

        home.ensure()
        with intake_lock(home.intake_lock, "docket rebuild-state --from-archive"):
            return rebuild_from_archive(home).as_dict()

    if not home.database.is_file():
        raise NotFound(f"no docket database at {home.database}", "nothing to rebuild")
    store = Store(home.database)
    try:
        with store.transaction():
            before = store.snapshot()
            count = store.rebuild()
            after = store.snapshot()
            differences = [t for t in before if before[t] != after[t]]
            if check:
                store.conn.execute("ROLLBACK")
                store.conn.execute("BEGIN")  # the context manager commits this empty one
        restored = []
        if not check:
            from docket.intake import repair_archive

            restored = [str(p) for p in repair_archive(store, home.accepted)]
        return {"events": count, "identical": not differences, "differences": differences,
                "applied": not check, "archive_restored": restored}
    finally:
        store.close()


def queues(home: Home) -> dict[str, Any]:
    app = open_home(home, readonly=True, empty_if_new=True)  # a new home: the definitions
    try:
        return {"queues": [q.__dict__ for q in app.rules.queues()]}
    finally:
        app.close()


# decisions ---------------------------------------------------------------------


def _decision_name(verb: str, subject: str) -> str:
    import secrets
    from datetime import UTC, datetime

    stamp = datetime.now(UTC).strftime("%Y%m%dt%H%M%S")
    head = f"{verb}-{subject}"[: 63 - len(stamp) - 6].rstrip("-._")
    return f"{head}-{stamp}-{secrets.token_hex(2)}"


def decide(home: Home, kind: str, spec: dict[str, Any], *, verb: str, subject: str,
           wait: bool = True, timeout_s: float = 60.0) -> dict[str, Any]:
    """Write a decision document into the spool; by default wait until it is applied.

    When no watcher holds the home's intake, the command applies its own document (one
    intake pass over just that file), so the verbs also work where cron runs ``tick``.
    """

    import yaml

    from docket.errors import DocketError

    name = _decision_name(verb, subject)
    document = {"apiVersion": "docket/v1", "kind": kind, "metadata": {"name": name},
                "spec": {k: v for k, v in spec.items() if v is not None}}
    raw = yaml.safe_dump(document, sort_keys=False).encode()
    path = spool_file(home, raw, f"{name}.yaml")
    result: dict[str, Any] = {"document": name, "spooled": str(path), "kind": kind}
    if not wait:
        result["status"] = "spooled"
        return result
    outcome = _await(home, path, lambda: _decision_outcome(home, name, path),
                     f"{kind} {name}", timeout_s)
    result.update(outcome)
    if outcome["status"] == "rejected":
        raise DocketError(f"{kind} {name} was refused: {outcome['reason']}",
                          f"see {outcome['error_file']}")
    return result


def _apply_here(home: Home, filename: str) -> None:
    from docket.watcher import intake_lock

    with intake_lock(home.intake_lock, "docket (applying its own decision)"):
        app = open_home(home)
        try:
            app.prepare()
            app.intake.scan([filename])
        finally:
            app.close()


def _decision_outcome(home: Home, name: str, path: Path, after_event: int = 0
                      ) -> dict[str, Any] | None:
    """Intake's verdict on the decision ``name`` spooled as ``path``, from the events."""
    if path.exists() or not home.database.exists():
        return None
    with open_home(home, readonly=True) as app:
        applied = app.store.first_event(("decision.applied",), name=name)
        rejected = None if applied else app.store.first_event(("document.rejected",),
                                                              after_event, file=path.name)
    if applied is not None:
        return {"status": "applied", "outcome": applied["data"]["outcome"]}
    if rejected is not None:
        return {"status": "rejected", "reason": "; ".join(rejected["data"]["reasons"]),
                "error_file": str(home.rejected / f"{path.name}.error")}
    return None


def mediate(home: Home, name: str, state: str, reason: str, actor: str) -> dict[str, Any]:
    """An operator's destructive fix-up of a request's state, recorded with the old one."""
    from docket.analysts import load_analysts
    from docket.errors import UsageError

    if "operator" not in load_analysts(home.root).roles_of(actor):
        raise UsageError(f"only an analyst with the role 'operator' may mediate; {actor} is "
                         "not one", "ask an operator, or 'docket analysts add' one")
    app = open_home(home)
    store, rules = app.store, app.rules
    try:
        request = store.request(name)
        execution = (store.execution(request.current_execution)
                     if request and request.current_execution else None)
        if execution is None:
            raise NotFound(f"no request named {name!r}", "see 'docket status' for the names")
        machine = rules.machine_for(execution.capability)
        if state not in machine.states:
            raise Invalid(f"{state!r} is not a state of {execution.capability!r}",
                          f"states: {', '.join(machine.states)}")
        store.record("execution.mediated", request=name, version=execution.version,
                     execution=execution.id, actor=actor, to=state, reason=reason,
                     **{"from": execution.state})
        return {"request": name, "execution": execution.id, "from": execution.state,
                "to": state, "reason": reason}
    finally:
        app.close()


def history(home: Home, name: str) -> dict[str, Any]:
    with open_home(home, readonly=True) as app:
        events = app.store.history(name)
    if not events:
        raise NotFound(f"no request named {name!r}", "see 'docket status' for the names")
    return {"request": name, "events": events}


# looking: read-only, so a home is opened read-only and nothing in it changes ---------


def status(home: Home, limit: int, state: str | None) -> dict[str, Any]:
    """Requests by state, and the most recent ones."""
    from docket.report import status as status_of

    with open_home(home, readonly=True) as app:
        return status_of(app.store, limit, state)


def results(home: Home, capability: str | None, status: str | None, tag: str | None,
            since: str | None, limit: int) -> dict[str, Any]:
    """Executions with their results and products."""
    from docket.report import results as results_of

    with open_home(home, readonly=True) as app:
        return results_of(app.store, capability, status, tag, since, limit)


def metrics(home: Home, prometheus: Path | None = None) -> dict[str, Any]:
    """Counts, waits, run times and failures; with ``prometheus``, that file written too."""
    from docket.report import metrics as metrics_of

    with open_home(home, readonly=True) as app:
        result = metrics_of(app.store)
        if prometheus is not None:
            from docket.prometheus import write_prometheus

            write_prometheus(home, app.store, result, prometheus)
        return result


def provenance(home: Home, name: str) -> dict[str, Any]:
    """The lineage of a request's products."""
    from docket.provenance import lineage

    with open_home(home, readonly=True) as app:
        result = lineage(app.store, name)
    if result is None:
        raise NotFound(f"no request named {name!r}", "see 'docket status' for the names")
    return result


def notifications(home: Home, state: str | None, request: str | None,
                  limit: int) -> dict[str, Any]:
    """The outbox, newest first."""
    from docket.notify import list_notifications

    with open_home(home, readonly=True) as app:
        return list_notifications(app.store, state, request, limit)


def retry_notifications(home: Home, ids: list[int] | None) -> dict[str, Any]:
    """Make dead notifications (``ids``, or every one) pending again."""
    from docket.notify import retry_dead

    with open_home(home) as app:
        return {"retried": retry_dead(app.store, ids)}


def record_analysts_change(home: Home, change: Any) -> None:
    """Put an edit of analysts.yaml into the event log too, so 'docket history' shows who
    changed whose roles (a home without a database yet has no log to keep it in)."""
    if not change.changed or not home.database.is_file():
        return
    with open_home(home) as app:
        app.store.record("analysts.changed", actor=change.actor,
                         **{k: v for k, v in change.as_dict().items() if k != "actor"})


# CHIME-style works (docket.work) -------------------------------------------------------


def _works(home: Home, readonly: bool = False) -> Any:
    if not readonly:
        home.ensure()
    return open_home(home, readonly=readonly)


def deposit_works(home: Home, files: list[Path]) -> dict[str, Any]:
    """Queue the works in ``files`` for their pipelines' runners."""
    from docket.work import deposit, load_work_files

    works = load_work_files(files)
    with _works(home) as app:
        return {"deposited": deposit(app.store, works)}


def withdraw_work(home: Home, pipeline: str, runner: str, **filters: Any) -> dict[str, Any]:
    """The next queued work of ``pipeline``, leased to ``runner`` (None when none waits)."""
    from docket.work import withdraw

    with _works(home) as app:
        return {"work": withdraw(app.store, pipeline, runner, **filters)}


def update_work(home: Home, work_id: str, changes: dict[str, Any]) -> dict[str, Any]:
    from docket.work import update

    with _works(home) as app:
        return {"work": update(app.store, work_id, changes)}


def query_works(home: Home, **filters: Any) -> dict[str, Any]:
    """Works with their results, products and bookkeeping, newest first."""
    from docket.work import query

    with _works(home, readonly=True) as app:
        return {"works": query(app.store, **filters)}


def get_work(home: Home, work_id: str) -> dict[str, Any]:
    from docket.work import get

    with _works(home, readonly=True) as app:
        return {"work": get(app.store, work_id)}


def show_request(home: Home, name: str, events: int) -> dict[str, Any]:
    """Everything about one request: versions, executions, nodes, stages, events."""
    from docket.capabilities import CapabilityError, load_capability
    from docket.report import show

    app = open_home(home, readonly=True)
    try:
        request = app.store.request(name)
        stages = None
        if request is not None:
            try:
                stages = list(load_capability(home.templates,
                                              request.capability).definition.stages)
            except CapabilityError:
                stages = []
        result = show(app.store, name, stages, events)
        if result is not None and request is not None and request.capability == "tasks":
            from docket.tasks import add_to_show

            add_to_show(app.store, result)
    finally:
        app.close()
    if result is None:
        raise NotFound(f"no request named {name!r}", "see 'docket status' for the names")
    return result


def hold_execution(home: Home, name: str, reason: str, actor: str,
                   release: bool = False) -> dict[str, Any]:
    """Pause (hold) or resume (release) the running workflow of a request."""
    from docket.records import EngineState
    from docket.render import WORKFLOW_FILE

    app = open_home(home)
    try:
        app.load_sites()  # the execution's site may run on a pool
        request = app.store.request(name)
        row = (app.store.execution(request.current_execution)
               if request and request.current_execution else None)
        if row is None:
            raise NotFound(f"no request named {name!r}", "see 'docket status' for the names")
        if row.engine_state != EngineState.RUNNING:
            raise Invalid(f"{name}: execution {row.id} is not running "
                          f"({row.engine_state})", "only a running workflow can be "
                          "paused or resumed")
        engine = app.engines.for_site(row.site)
        dag = Path(str(row.directory)) / WORKFLOW_FILE
        if release:
            engine.release(dag)
        else:
            engine.hold(dag, reason)
        kind = "execution.released" if release else "execution.held"
        app.store.record(kind, request=name, version=row.version,
                         execution=row.id, actor=actor, reason=reason,
                         engine=engine.name)
        return {"request": name, "execution": row.id,
                "action": "released" if release else "held", "engine": engine.name}
    finally:
        app.close()
