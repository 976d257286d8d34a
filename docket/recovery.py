"""Rebuild a lost database from what the home keeps on disk: the archive and the work.

``state/docket.db`` holds the event log that every state table is derived from. When it
is lost, two sets of files still say most of what happened:

- ``spool/accepted/<request>/v<N>.yaml``: every accepted version, exactly as submitted;
- each processing directory's ``metadata.json`` (request, version, execution, parameters,
  who submitted it from which file and when), its node event log and its result.

``rebuild_from_archive`` writes a new database from them, as events, through the same
rules and the same follow-up code the watcher uses, so the rebuilt state reads like the
lost one: each version accepted again, each execution created with its own id, started
in its directory, its node events read from its log and, if it ended, finished with its
result. What the files cannot say is listed, never guessed.

The new database is written under a temporary name and renamed into place at the end: a
crash leaves the home as it was (no database), and running it again starts over.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from docket.capabilities import CapabilityCache, CapabilityError, resolve_parameters
from docket.documents import DocumentError, parse_document, spec_sha256
from docket.engines.registry import Engines
from docket.errors import DocketError, Invalid
from docket.home import Home
from docket.intake import DECISIONS_DIR
from docket.launch import Launcher
from docket.records import EngineState, Execution
from docket.render import WORKFLOW_FILE
from docket.rules import Rules
from docket.sites import LOCAL_SITE
from docket.store import Store

__all__ = ["Recovered", "rebuild_from_archive"]


@dataclass
class Recovered:
    database: str
    requests: int = 0
    versions: int = 0
    executions: int = 0
    ended: int = 0
    running: int = 0
    waiting: int = 0
    not_recovered: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class _Replaying(Launcher):
    """The watcher's follow-up of an ended execution, without deciding anything anew:
    what the failure policy decided back then is already in the directory."""

    def _policy_retry(self, row: Any, directory: Path, dag: Path, reason: str | None) -> bool:
        return False

    def _pending_retry(self, row: Any, engine: Any, dag: Path) -> bool:
        return False

    def _check_timeout(self, row: Any, engine: Any, dag: Path) -> None:
        return None


def _mtime(path: Path) -> str:
    stamp = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _attempt_of(directory: Path) -> int:
    """``e3`` is attempt 1 of the third execution; ``e3.2`` its second attempt."""
    _, dot, attempt = directory.name.partition(".")
    return int(attempt) if dot and attempt.isdigit() else 1


def _output_dirs(home: Home, versions: dict[str, list[tuple[int, Path]]]) -> list[Path]:
    """The processing directories that requests named themselves (``spec.output_dir``)."""
    from docket.documents import load_yaml

    found = []
    for archived in versions.values():
        for _number, path in archived:
            with contextlib.suppress(Exception):  # unreadable ones are reported later
                data, _ = load_yaml(path.read_bytes())
                value = (data.get("spec") or {}).get("output_dir")
                if value:
                    found.append(Path(value) if Path(value).is_absolute()
                                 else home.work / value)
    return found


def _directories(home: Home, problems: list[str], named: list[Path]
                 ) -> dict[int, tuple[Path, dict[str, Any]]]:
    """Execution id -> (its latest attempt's directory, metadata), from every
    ``metadata.json`` under the work area and in the directories requests named."""
    found: dict[int, tuple[Path, dict[str, Any]]] = {}
    candidates = sorted(home.work.glob("*/v*/e*/metadata.json")) if home.work.is_dir() else []
    candidates += [d / "metadata.json" for d in named if (d / "metadata.json").is_file()]
    for meta_path in dict.fromkeys(candidates):
        try:
            meta = json.loads(meta_path.read_text())
            execution = int(meta["execution"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            problems.append(f"{meta_path}: unreadable ({exc}); that execution is not rebuilt")
            continue
        directory = meta_path.parent
        kept = found.get(execution)
        if kept is None or _attempt_of(directory) > _attempt_of(kept[0]):
            found[execution] = (directory, meta)
    return found


def _versions(home: Home, problems: list[str]) -> dict[str, list[tuple[int, Path]]]:
    requests: dict[str, list[tuple[int, Path]]] = {}
    if not home.accepted.is_dir():
        return requests
    for folder in sorted(home.accepted.iterdir()):
        if folder.name == DECISIONS_DIR or not folder.is_dir():
            continue
        for path in folder.glob("v*.yaml"):
            number = path.stem[1:]
            if number.isdigit():
                requests.setdefault(folder.name, []).append((int(number), path))
            else:
                problems.append(f"{path}: not an archived version (v<N>.yaml); skipped")
    return {name: sorted(found) for name, found in requests.items()}


def rebuild_from_archive(home: Home) -> Recovered:
    """Write ``state/docket.db`` anew from the archive and the processing directories.

    Refuses when a database exists: this is for a lost one, never a second opinion.
    """
    target = home.database
    if target.exists():
        raise Invalid(f"{target} exists; --from-archive only rebuilds a lost database",
                      "'docket rebuild-state' re-derives state from its event log; move the "
                      "database aside first if it is really beyond repair")
    problems: list[str] = []
    partial = target.with_name(f".{target.name}.rebuilding")
    for leftover in (partial, *(partial.with_name(partial.name + s) for s in ("-wal", "-shm"))):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()  # an earlier rebuild that did not finish
    store = Store(partial)
    try:
        report = _rebuild(home, store, problems)
    except BaseException:
        store.close()
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise
    store.close()
    os.replace(partial, target)
    report.database = str(target)
    report.not_recovered = problems
    return report


def _rebuild(home: Home, store: Store, problems: list[str]) -> Recovered:
    """Replay, in the order they happened, what the files show: versions accepted (and
    their executions created), executions started in their directories (and followed to
    their end), decisions applied."""
    capabilities = CapabilityCache(home.templates)
    rules = Rules(store, capabilities, home.work)
    found = _versions(home, problems)
    directories = _directories(home, problems, _output_dirs(home, found))
    by_version: dict[tuple[str, int], list[int]] = {}
    for execution, (_directory, meta) in directories.items():
        by_version.setdefault((str(meta.get("request")), int(meta.get("version") or 0)),
                              []).append(execution)
    replay = _Replay(home, store, rules, capabilities, directories, problems)
    replay.next_id = max(directories, default=0) + 1
    replay.report.requests = len(found)
    timeline: list[tuple[str, int, Any]] = []  # (time, order on a tie, what)
    for request, versions in found.items():
        for number, path in versions:
            mine = sorted(by_version.pop((request, number), []))
            source = next((directories[e][1].get("version_source") for e in mine
                           if directories[e][1].get("version_source")), None) or {}
            timeline.append((source.get("accepted") or _mtime(path), 0,
                             (request, number, path, mine, source)))
            # metadata.json is written when the execution starts
            timeline.extend((_mtime(directories[e][0] / "metadata.json"), 1, e) for e in mine)
    folder = home.accepted / DECISIONS_DIR
    for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
        timeline.append((_mtime(path), 2, path))
    for (request, number), executions in sorted(by_version.items()):
        problems.append(f"{request} v{number}: no archived version, so its executions "
                        f"({', '.join(map(str, executions))}) are not rebuilt")
    for _when, order, what in sorted(timeline, key=lambda t: (t[0], t[1], str(t[2]))):
        if order == 0:
            replay.version(*what)
        elif order == 1:
            replay.start(what)
        else:
            replay.decision(what)
    report = replay.report
    if replay.unknown_source:
        problems.append(f"who submitted {replay.unknown_source} version(s) and from which "
                        "file: nothing on disk says (versions that never ran, or ran before "
                        "metadata.json recorded it)")
    if report.waiting:
        problems.append(f"{report.waiting} version(s) never started and wait in their queue "
                        "again: cancel any that had been cancelled before they started")
    if replay.decisions:
        problems.append(f"the authors of the {replay.decisions} archived decision(s): not on "
                        "disk (recorded as unknown)")
    if replay.skipped:
        problems.append(f"{len(replay.skipped)} Cancel/Resubmit decision(s) not applied again "
                        "(their effect is in the processing directories): "
                        + ", ".join(replay.skipped))
    problems.append("what the failure policy decided about failed attempts ('attempt N "
                    "failed' in 'docket show'), refused and duplicate documents, and the "
                    "times of node events and of each end: not on disk (times are the "
                    "rebuild's)")
    return report


class _Replay:
    """The steps of a rebuild, each in its own transaction."""

    def __init__(self, home: Home, store: Store, rules: Rules, capabilities: CapabilityCache,
                 directories: dict[int, tuple[Path, dict[str, Any]]],
                 problems: list[str]) -> None:
        self.home, self.store, self.rules = home, store, rules
        self.capabilities = capabilities
        self.directories = directories
        self.problems = problems
        # a rebuilt execution ran here: the engine of the site 'local'
        self.engine = Engines(home.config).for_site(LOCAL_SITE)
        self.launcher = _Replaying(home, store, rules, lambda _site: self.engine)
        self.report = Recovered(str(home.database))
        self.next_id = 1
        self.unknown_source = 0
        self.decisions = 0
        self.skipped: list[str] = []
        self.specs: dict[int, tuple[Any, dict[str, Any]]] = {}  # execution -> capability, spec
        self._roles: frozenset[str] | None = None

    def version(self, request: str, number: int, path: Path, mine: list[int],
                source: dict[str, Any]) -> None:
        """A version accepted again, with its executions created (a version that never
        started gets one new execution, which waits in its queue)."""
        store, home = self.store, self.home
        try:
            raw = path.read_bytes()
            model = parse_document(raw, max_bytes=max(home.config.max_document_bytes,
                                                      len(raw))).model
            capability = self.capabilities.get(model.spec.capability)
        except (OSError, DocumentError, CapabilityError) as exc:
            self.problems.append(f"{request} v{number}: {path} cannot be read back ({exc}); "
                                 "it and its executions are not rebuilt")
            for execution in mine:
                self.directories.pop(execution, None)
            return
        spec = model.spec.model_dump(mode="json")
        if not source:
            self.unknown_source += 1
        with store.transaction():
            store.record("version.accepted", request=request, version=number,
                         actor=source.get("actor"), at=source.get("accepted") or _mtime(path),
                         capability=capability.name, sha256=spec_sha256(spec), spec=spec,
                         document=raw.decode(), source_file=source.get("source_file"),
                         source_identity=None, recovered_from=str(path))
            for row in store.executions(request, before_version=number,
                                        engine_states=(EngineState.NONE,)):
                self.rules.feed(row, "supersede", reason=f"superseded by version {number}")
            self.report.versions += 1
            if not mine:
                parameters, _ = resolve_parameters(capability, dict(spec["parameters"]))
                _create(store, self.rules, capability, request, number, self.next_id, 1,
                        parameters, spec, None, 1, source.get("accepted"))
                self.next_id += 1
                self.report.executions += 1
                self.report.waiting += 1
            for ordinal, execution in enumerate(mine, start=1):
                directory, meta = self.directories[execution]
                _create(store, self.rules, capability, request, number, execution,
                        int(meta.get("execution_number") or ordinal),
                        meta.get("parameters") or {}, spec, source.get("actor"),
                        _attempt_of(directory), meta.get("created"))
                self.specs[execution] = (capability, spec)
                self.report.executions += 1

    def start(self, execution: int) -> None:
        """An execution started in its directory, its node events read, its end followed."""
        if execution not in self.specs:
            return  # its version could not be read back (reported)
        store = self.store
        directory, _meta = self.directories[execution]
        row = _execution(store, execution)
        with store.transaction():
            refusal = self.rules.transition(row, "start", site="local",
                                            site_reason="rebuilt from its directory")
            if refusal is None:
                store.record("execution.submitted", request=row.request,
                             version=row.version, execution=execution, engine="local",
                             engine_id="recovered")
        if refusal is not None:
            self.problems.append(f"execution {execution} ran in {directory}, but its state "
                                 f"machine does not start it now ({refusal}); left as it is")
            return
        row = _execution(store, execution)
        if Path(str(row.directory)) != directory:
            self.problems.append(f"execution {execution} ran in {directory}, but this home "
                                 f"would use {row.directory} (work_dir or output_dir "
                                 "changed?); it is recorded there, so its files are not found")
        dag = directory / WORKFLOW_FILE
        if self.engine.result(dag) is None:
            # still running, or its runner died with the database: the watcher follows it
            # (and resumes a dead one) as after any crash
            with contextlib.suppress(DocketError, OSError):
                self.launcher._read_events(row, dag, self.engine)
            self.report.running += 1
            return
        self.launcher.follow(row)
        self.report.ended += 1

    def decision(self, path: Path) -> None:
        """An archived decision applied again; its roles were checked when it was first."""
        from docket.decisions import Refused, apply_decision

        try:
            parsed = parse_document(path.read_bytes())
        except (OSError, DocumentError) as exc:
            self.problems.append(f"decision {path.name}: cannot be read back ({exc})")
            return
        if parsed.kind not in _REAPPLIED:
            self.skipped.append(path.stem)
            return
        self.decisions += 1
        if self._roles is None:
            self._roles = _every_role(self.home, self.rules)
        roles = self._roles
        model = parsed.model
        actor = model.metadata.submitter or "unknown (rebuilt from the archive)"
        store = self.store
        try:
            with store.transaction():
                store.conn.execute("SAVEPOINT decision")
                try:
                    apply_decision(self.rules, parsed.kind, model.metadata.name, model.spec,
                                   actor, lambda _user: roles)
                except BaseException:
                    store.conn.execute("ROLLBACK TO decision")
                    raise
                finally:
                    store.conn.execute("RELEASE decision")
        except Refused as exc:
            self.problems.append(f"decision {path.name} could not be applied again: {exc}")


def _every_role(home: Home, rules: Rules) -> frozenset[str]:
    """Every role this home knows: an archived decision passed intake's role check when it
    was first applied, so applying it again checks nothing more."""
    from docket.analysts import load_analysts
    from docket.capabilities import list_capabilities

    roles = {"da", "aod", "operator"}
    with contextlib.suppress(DocketError):
        analysts = load_analysts(home.root)
        for user in analysts.users():
            roles |= analysts.roles_of(user)
    for name in list_capabilities(home.templates):
        with contextlib.suppress(CapabilityError):
            roles |= {t.role for t in rules.machine_for(name).transitions if t.role}
    return frozenset(roles)


# Decisions whose effect the directories do not already show: QA and AOD decisions,
# seals, queue changes. A Cancel shows as the workflow's removal and a Resubmit as its
# own processing directory, so applying those again would do them twice.
_REAPPLIED = ("Decision", "Seal", "QueueChange")


def _create(store: Store, rules: Rules, capability: Any, request: str, version: int,
            execution: int, number: int, parameters: dict[str, Any], spec: dict[str, Any],
            actor: str | None, attempt: int, at: str | None) -> Any:
    """``Rules.create_execution`` with the execution's own id (it names its directory)."""
    definition = capability.definition
    store.record("execution.created", request=request, version=version, execution=execution,
                 actor=actor, at=at, number=number, capability=capability.name,
                 state=definition.start_state or capability.machine.initial,
                 priority=spec.get("priority", 0), parameters=parameters,
                 tags=spec.get("tags", []), group=spec.get("group"),
                 events=spec.get("events", []),
                 timeout_s=spec.get("timeout_s") or definition.timeout_s, attempt=attempt)
    rules.feed(_execution(store, execution), "accept", actor=actor)
    return _execution(store, execution)


def _execution(store: Store, execution: int) -> Execution:
    found = store.execution(execution)
    assert found is not None  # recorded by this rebuild
    return found
