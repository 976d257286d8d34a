"""Act on what the rules committed: render and submit, follow, and stop executions.

Everything here is driven by the recorded state, so a crash at any point is finished by
the next pass: an execution in ``engine_state='starting'`` is (re)launched unless its
engine already has it; one whose state is final while its engine still runs is stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from docket.attachments import AttachmentError, copy_attachments
from docket.capabilities import CapabilityError
from docket.engines.base import DagResult, DagState, Engine, NodeLogUnreadable, RunStatus
from docket.errors import DocketError
from docket.fileio import is_disk_error, safe_join
from docket.home import ACTIVE_MARKER, Home
from docket.records import ACTIVE_ENGINE_STATES, EngineState, Execution, NodeState
from docket.render import WORKFLOW_FILE, bytecode_cache_dir, render_execution
from docket.rules import Rules
from docket.store import Store

__all__ = ["Launcher", "collect_results", "RESULTS_FILE", "MAX_RESULTS_BYTES"]

# A workflow reports its results (CHIME's "results") as a JSON object in this file.
RESULTS_FILE = "results.json"
MAX_RESULTS_BYTES = 65_536
_PLOT_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".svg")

log = logging.getLogger("docket.launch")

# A runner that dies this often is broken, not unlucky.
MAX_RESUMES = 3
# A schedd that refused to remove a held job is asked again after this long (not on
# every 0.5 s pass, which would fill the log).
REMOVAL_RETRY_S = 30.0


def collect_results(directory: Path, hashed: list[dict[str, Any]] | None = None
                    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]],
                               list[dict[str, Any]], str | None]:
    """What an ended execution left: results.json, products and plots (with sha256).

    ``hashed`` are entries already made (declared outputs): products can be large, so
    no file is read twice.
    """
    known = {item["path"]: item for item in hashed or []}
    from docket.fileio import sha256_file

    results: dict[str, Any] | None = None
    problem = None
    path = directory / RESULTS_FILE
    if path.is_file():
        if path.stat().st_size > MAX_RESULTS_BYTES:
            problem = f"{RESULTS_FILE} is over {MAX_RESULTS_BYTES} bytes"
        else:
            try:
                loaded = json.loads(path.read_text())
                if isinstance(loaded, dict):
                    results = loaded
                else:
                    problem = f"{RESULTS_FILE} must hold a JSON object"
            except (ValueError, UnicodeDecodeError) as exc:
                problem = f"{RESULTS_FILE} is not valid JSON: {exc}"
    products: list[dict[str, Any]] = []
    plots: list[dict[str, Any]] = []
    root = directory / "products"
    if root.is_dir():
        for file in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
            relative = str(file.relative_to(directory))
            seen = known.get(relative)
            entry = {"path": relative,
                     "size_bytes": seen["size_bytes"] if seen else file.stat().st_size,
                     "sha256": seen["sha256"] if seen else sha256_file(file)}
            (plots if file.suffix.lower() in _PLOT_SUFFIXES else products).append(entry)
    return results, products, plots, problem


def _tool_error(directory: Path, node: str) -> str:
    """A docket tool's own ``Error: ...`` line from the node's error file, for the reason
    (casa-envoy says there why CASA failed)."""
    path = directory / f"{node}.err"
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, path.stat().st_size - 4096))
            lines = fh.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    last = next((line.strip() for line in reversed(lines) if line.strip()), "")
    return f" ({last[:500]})" if last.startswith("Error: ") else ""


def _merge_products(*lists: list[dict[str, Any]]) -> list[dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for items in lists:
        for item in items:
            merged.setdefault(item["path"], item)
    return [merged[k] for k in sorted(merged)]


def _labels(document: str) -> dict[str, str]:
    from docket.documents import load_yaml

    with contextlib.suppress(Exception):
        data, _ = load_yaml(document.encode())
        return dict((data.get("metadata") or {}).get("labels") or {})
    return {}


class Launcher:
    def __init__(self, home: Home, store: Store, rules: Rules,
                 engines: Callable[[str | None], Engine]) -> None:
        self.home = home
        self.store = store
        self.rules = rules
        self.engine_for_site = engines
        # (execution, cluster) of held node jobs this watcher has had removed
        self._removals_asked: set[tuple[int, int]] = set()
        self._removal_retry_at: dict[tuple[int, int], float] = {}

    def engine_for(self, row: Execution) -> Engine:
        return self.engine_for_site(row.site)

    # starting -------------------------------------------------------------------

    def launch_pending(self) -> list[int]:
        launched = []
        for row in self.store.executions(engine_states=(EngineState.STARTING,),
                                         order="priority"):
            if self.launch(row):
                launched.append(row.id)
        return launched

    def launch(self, row: Execution) -> bool:
        directory = Path(row.directory)
        dag = directory / WORKFLOW_FILE
        common = {"request": row.request, "version": row.version,
                  "execution": row.id}
        engine = self.engine_for(row)
        if engine.started(dag):
            engine_id = "recovered"
        else:
            try:
                if not self._copy_attachments(row, directory):
                    return False  # a big copy goes on in the next pass, after intake
                self._render(row, directory)
                self._apply_site(row, directory)
                self._copy_rescue(row, directory)
                engine_id = engine.submit(dag)
            except (DocketError, CapabilityError, OSError, AttachmentError) as exc:
                if isinstance(exc, OSError) and is_disk_error(exc):
                    # a full or failing disk is not the request's fault: try again later
                    log.error("execution %s: cannot write its processing directory yet "
                              "(%s); retrying next pass", row.id, exc)
                    return False
                reason = f"could not start: {exc}"
                log.warning("execution %s: %s", row.id, reason)
                with self.store.transaction():
                    self.store.record("execution.finished", **common, exit_code=None,
                                      reason=reason)
                    self.rules.feed(self._row(row.id), "fail", reason=reason)
                self._clear_marker(directory)
                return False
        self.store.record("execution.submitted", **common, engine=engine.name,
                          engine_id=engine_id)
        return True

    def _copy_rescue(self, row: Execution, directory: Path) -> None:
        """``resubmit --rescue``: the failed execution's files (its finished nodes'
        outputs and its rescue DAGs) are copied in, so the new run skips what it did."""
        event = self.store.last_event_of(row.id, "execution.rescue_from")
        if event is None:
            return
        import shutil

        source = Path(event["directory"])
        # the old run's engine bookkeeping stays behind; the rescue DAG says what is done
        skip = {f"{WORKFLOW_FILE}.{s}" for s in ("metrics", "progress", "lock", "lib.err",
                                                 "nodes.log", "dagman.out")}
        for item in source.iterdir():
            if item.name in skip or item.name in ("metadata.json", ACTIVE_MARKER):
                continue
            target = directory / item.name
            if item.is_dir() and not item.is_symlink():
                shutil.copytree(item, target, symlinks=True, dirs_exist_ok=True)
            elif not target.exists() or item.name.startswith(f"{WORKFLOW_FILE}.rescue"):
                shutil.copy2(item, target, follow_symlinks=False)

    def _apply_site(self, row: Execution, directory: Path) -> None:
        sites = self.rules.sites
        if sites is None or not row.site:
            return
        from docket.sites import apply_site

        for site in sites.sites:
            if site.name == row.site:
                apply_site(directory, site)

    def _copy_attachments(self, row: Execution, directory: Path) -> bool:
        """Copy for at most ``copy_slice_s``; True once every attachment is in rawdata/."""
        version = self.store.version(row.request, row.version)
        files = version.spec.get("files", []) if version else []
        if not files:
            return True
        sources = [safe_join(self.home.attachments, f) for f in files]
        return copy_attachments(sources, directory / "rawdata",
                                budget_s=self.home.config.copy_slice_s)

    def _render(self, row: Execution, directory: Path) -> None:
        meta = directory / "metadata.json"
        if meta.exists():
            with contextlib.suppress(ValueError, OSError):
                other = json.loads(meta.read_text()).get("execution")
                if other not in (None, row.id):
                    raise DocketError(f"processing directory {directory} already holds "
                                      f"execution {other}",
                                      "name a new output_dir or remove the old one")
        capability = self.rules.capabilities.get(row.capability)
        version = self.store.version(row.request, row.version)
        if version is None:
            raise DocketError(f"execution {row.id}: its version {row.version} is not recorded")
        spec = version.spec
        request = {"name": row.request, "version": row.version, "execution": row.id,
                   "number": row.number, "capability": row.capability,
                   "priority": row.priority, "output_dir": self.rules.output_dir(row),
                   "created": row.created,
                   "labels": _labels(version.document),
                   # so 'rebuild-state --from-archive' can say who and when without the db
                   "version_source": {"actor": version.actor,
                                      "source_file": version.source_file,
                                      "accepted": version.created}}
        attachments = [safe_join(self.home.attachments, f) for f in spec.get("files", [])]
        if request["output_dir"]:
            # deliver puts the products into output_dir; intake checked where it is
            Path(request["output_dir"]).parent.mkdir(parents=True, exist_ok=True)
        site = self._site(row.site)
        render_execution(capability, directory, request=request,
                         parameters=row.parameters,
                         document=version.document, tools_dir=self.home.tools_dir,
                         attachments=attachments, home_dir=self.home.root,
                         cache_dir=bytecode_cache_dir(self.home.state_dir),
                         shared_filesystem=site.shared_filesystem if site else True,
                         pex_dir=Path(site.pex_dir) if site and site.pex_dir else None)

    def _site(self, name: str | None) -> Any:
        """The site an execution runs at, as sites.yaml says (None without one)."""
        sites = self.rules.sites
        return next((s for s in (sites.sites if sites else []) if s.name == name), None)

    def _row(self, execution: int) -> Execution:
        row = self.store.execution(execution)
        assert row is not None  # executions are never deleted
        return row

    # following ----------------------------------------------------------------

    def follow_running(self) -> list[int]:
        """Read new node events and results of running executions; return the ended ones."""
        ended = []
        for row in self.store.executions(engine_states=(EngineState.RUNNING,)):
            try:
                if self.follow(row):
                    ended.append(row.id)
            except NodeLogUnreadable as exc:  # this execution only; the next pass reads on
                log.warning("execution %s: %s; trying again next pass", row.id, exc)
        return ended

    def follow(self, row: Execution) -> bool:
        engine = self.engine_for(row)
        directory = Path(row.directory)
        dag = directory / WORKFLOW_FILE
        if self._pending_retry(row, engine, dag):
            return False
        self._check_timeout(row, engine, dag)
        # read before the log: once it says ended, the log is complete
        now = engine.status(dag)
        self._read_events(row, dag, engine)
        if now.state == DagState.RUNNING:
            return False
        result = now.result
        if result is None and self._stopped_on_purpose(row):
            # cancelled or timed out, and the runner gone without a result: a SIGTERM that
            # came while it was still starting (before it could write one). It is
            # removed, as asked; resuming it would run what was cancelled
            engine.cancel(dag)  # with no runner: stops any job left, writes the removal
            result = engine.result(dag) or DagResult(
                engine.name, RunStatus.REMOVED, None, reason="removed; its runner was gone")
        if result is None:  # DagState.LOST
            resumed = len(self.store.events_of(row.id, "execution.resumed"))
            if resumed < MAX_RESUMES:
                log.warning("execution %s: the runner is gone; resuming its DAG", row.id)
                # recorded (and counted towards the limit) before the runner starts: a
                # watcher killed in between resumes again on its next pass, within the
                # limit, and never loses the record of a resume that happened
                self.store.record("execution.resumed", request=row.request,
                                  version=row.version, execution=row.id,
                                  attempt=resumed + 1)
                log.info("execution %s: resumed as %s", row.id, engine.resume(dag))
                return False
            result = DagResult(engine.name, RunStatus.FAILED, None,
                               reason=f"the workflow's runner died {resumed + 1} times; see "
                                      f"{dag.name}.lib.err and {dag.name}.dagman.out")
        exit_code = result.exit_code
        failed = result.failed_nodes
        status = result.status
        if exit_code == 0:
            reason = None
        elif status == RunStatus.REMOVED:
            reason = "the workflow was removed"
        elif failed:
            reason = "; ".join(f"node {n}: {r}{_tool_error(directory, n)}"
                               for n, r in sorted(failed.items()))
        else:
            reason = result.reason or f"the workflow ended with exit code {exit_code}"
        missing, declared = (self._verify_outputs(row, directory) if exit_code == 0
                             else (None, []))
        results, products, plots, problem = collect_results(directory, declared)
        if problem and exit_code == 0:
            reason = problem
        if exit_code == 0:
            products = _merge_products(products, declared)
            if missing:
                exit_code, status, reason = None, RunStatus.FAILED, missing
        elif (status != RunStatus.REMOVED and not self._stopped_on_purpose(row)
              and self._policy_retry(row, directory, dag, reason)):
            return False
        with self.store.transaction():
            self.store.record("execution.finished", request=row.request,
                              version=row.version, execution=row.id,
                              exit_code=exit_code, status=status, reason=reason,
                              results=results, products=products, plots=plots)
            current = self._row(row.id)
            machine = self.rules.machine_for(row.capability)
            if current.state not in machine.final:
                # a reason recorded earlier (a timeout's) says more than "removed"
                self.rules.feed(current, "succeed" if exit_code == 0 else "fail",
                                reason=current.reason or reason,
                                exit_code=exit_code)
        self._clear_marker(directory)
        return True

    # output verification and the failure policy ------------------------------------

    def _verify_outputs(self, row: Execution, directory: Path) -> tuple[str | None,
                                                                   list[dict[str, Any]]]:
        """Declared outputs (the capability's stages' and the request's): problems, found."""
        from docket.outputs import missing_reason, verify

        specs: list[Any] = []
        with contextlib.suppress(CapabilityError):
            capability = self.rules.capabilities.get(row.capability)
            specs = [o for stage in capability.definition.stages for o in stage.outputs]
        version = self.store.version(row.request, row.version)
        if version is not None:
            specs += version.spec.get("outputs") or []
        if not specs:
            return None, []
        ok, problems, found = verify(directory, specs)
        return (None if ok else missing_reason(problems)), found

    def _stopped_on_purpose(self, row: Execution) -> bool:
        current = self._row(row.id)
        machine = self.rules.machine_for(row.capability)
        timed_out = self.store.last_event_of(row.id, "execution.timed_out")
        return current.state in machine.final or timed_out is not None

    def _policy_retry(self, row: Execution, directory: Path, dag: Path, reason: str | None) -> bool:
        """Judge each failed node by the failure policy; True when the DAG will run again."""
        from docket.policy import (
            attempts_by_rule,
            decide,
            failure_from_node,
            merge_adjustments,
            read_adjustments,
        )

        try:
            policy = self.rules.capabilities.get(row.capability).policy
        except CapabilityError:
            return False
        if policy is None:
            return False
        nodes = self.store.nodes(row.id, states=(NodeState.FAILED, NodeState.HELD))
        if not nodes:
            return False
        previous = self.store.events_of(row.id, "policy.decided")
        attempt = int(row.retries or 0) + 1
        decisions = []
        for node in nodes:
            failure = failure_from_node(dataclasses.asdict(node), directory, policy)
            decision = decide(failure, policy, attempts_by_rule(previous, node.node))
            decisions.append((node.node, decision))
        adjustments = read_adjustments(directory)
        for node, decision in decisions:
            if decision.retries:
                adjustments = merge_adjustments(adjustments, node, decision)
        retry = all(d.retries for _n, d in decisions)
        delay_s = max((d.delay_s for _n, d in decisions), default=0.0)
        with self.store.transaction():
            for node, decision in decisions:
                self.store.record("policy.decided", request=row.request,
                                  version=row.version, execution=row.id, node=node,
                                  attempt=attempt, **decision.as_dict())
            if retry:
                self.store.record("execution.retrying", request=row.request,
                                  version=row.version, execution=row.id,
                                  attempt=attempt + 1, failure=reason,
                                  retry_at=time.time() + delay_s, adjustments=adjustments)
        return retry

    def _pending_retry(self, row: Execution, engine: Engine, dag: Path) -> bool:
        """Carry out a retry the policy decided: set the files for the next attempt, wait
        out the backoff, run the DAG again. True while a retry is pending."""
        data = self.store.last_event_of(row.id, "execution.retrying")
        if data is None:
            return False
        attempt = data["attempt"]
        if any(e.get("attempt") == attempt
               for e in self.store.events_of(row.id, "execution.retry_started")):
            return False
        from docket.policy import apply_adjustments

        # the finished attempt's files are kept beside, one set per attempt
        for suffix in ("metrics", "nodes.log"):
            current = dag.with_name(f"{dag.name}.{suffix}")
            if current.exists():
                os.replace(current, dag.with_name(f"{dag.name}.{suffix}.attempt{attempt - 1}"))
        if data.get("adjustments", {}).get("nodes"):
            apply_adjustments(dag.parent, data["adjustments"])
        if time.time() < data["retry_at"]:
            return True
        try:
            engine_id = engine.resume(dag)
        except DocketError as exc:
            # a schedd that cannot be reached now must not stop this pass: ask next pass
            log.warning("execution %s: could not start attempt %s: %s", row.id, attempt,
                        exc)
            return True
        with self.store.transaction():
            self.store.forget_cursor(row.id)
            self.store.record("execution.retry_started", request=row.request,
                              version=row.version, execution=row.id, attempt=attempt,
                              engine_id=engine_id)
        return True

    def _read_events(self, row: Execution, dag: Path, engine: Engine) -> None:
        previous = self.store.cursor_position(row.id)
        events, cursor = engine.read_events(dag, previous)
        moved = cursor is not None and cursor != previous
        if events or moved:
            with self.store.transaction():
                for event in events:
                    kind = event.pop("type")
                    self.store.record(kind, request=row.request, version=row.version,
                                      execution=row.id, **event)
                # saved even when no event was mapped, so nothing is read (or warned
                # about) twice; not saved when nothing moved, so an idle pass writes nothing
                if moved:
                    self.store.save_cursor(row.id, cursor)
        self._remove_held(row, dag, engine)

    def _remove_held(self, row: Execution, dag: Path, engine: Engine) -> None:
        """A held job waits forever on a pool: remove it, so DAGMan sees its node fail and
        the failure policy decides (the local engine removes held jobs itself). Driven by
        the nodes table, so a removal the schedd refused is asked again (after
        REMOVAL_RETRY_S), also by a restarted watcher."""
        if engine.removes_held_jobs:
            return
        for node in self.store.nodes(row.id, states=(NodeState.HELD,)):
            if node.cluster is None:
                continue
            key = (row.id, node.cluster)
            if key in self._removals_asked or (
                    time.monotonic() < self._removal_retry_at.get(key, 0.0)):
                continue
            reason = (f"docket: node {node.node} was held (code {node.hold_code}/"
                      f"{node.hold_subcode}); its failure policy decides what next")
            try:
                engine.remove_node_job(dag, int(node.cluster), reason=reason)
            except (DocketError, OSError) as exc:
                log.warning("execution %s: could not remove held job %s of node %s (asked "
                            "again in %g s): %s", row.id, node.cluster, node.node,
                            REMOVAL_RETRY_S, exc)
                self._removal_retry_at[key] = time.monotonic() + REMOVAL_RETRY_S
                continue
            self._removals_asked.add(key)
            log.info("execution %s: removed held job %s of node %s", row.id,
                     node.cluster, node.node)

    def _check_timeout(self, row: Execution, engine: Engine, dag: Path) -> None:
        limit = row.timeout_s
        if not limit or not row.started:
            return
        started = datetime.strptime(row.started, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
            tzinfo=UTC)
        ran_s = (datetime.now(UTC) - started).total_seconds()
        if ran_s <= limit:
            return
        if self.store.last_event_of(row.id, "execution.timed_out") is None:
            self.store.record("execution.timed_out", request=row.request,
                              version=row.version, execution=row.id,
                              reason=f"timed out: ran longer than {limit:g} s")
        engine.cancel(dag)

    # stopping -------------------------------------------------------------------

    def stop_cancelled(self) -> list[int]:
        """Stop engines still running executions whose state is already final."""
        stopped = []
        for row in self.store.executions(engine_states=ACTIVE_ENGINE_STATES):
            machine = self.rules.machine_for(row.capability)
            if row.state in machine.final and row.directory:
                dag = Path(row.directory) / WORKFLOW_FILE
                engine = self.engine_for(row)
                if row.engine_state == EngineState.STARTING and not engine.started(dag):
                    self.store.record("execution.finished", request=row.request,
                                      version=row.version, execution=row.id,
                                      exit_code=None, status="removed",
                                      reason="cancelled before it started")
                    self._clear_marker(Path(row.directory))
                else:
                    engine.cancel(dag)
                    if row.engine_state == EngineState.STARTING:
                        self.store.record("execution.submitted", request=row.request,
                                          version=row.version, execution=row.id,
                                          engine=engine.name, engine_id="recovered")
                stopped.append(row.id)
        return stopped

    @staticmethod
    def _clear_marker(directory: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            (directory / ACTIVE_MARKER).unlink()
