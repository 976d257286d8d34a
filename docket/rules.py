"""Version, state and queue rules: what an accepted document or an engine result does.

- Versions: the same request name with a different spec is version N+1; identical
  content is a duplicate and changes nothing; a new version supersedes a still-queued
  execution of an older one.
- State: every change of an execution's state goes through its capability's machine;
  an event the current state does not accept is refused and the refusal recorded.
- Queues: executions wait in their capability's queue and start in priority order,
  then arrival order, while the queue is enabled, not paused and under ``max_jobs``.

Each function runs inside the caller's transaction and only records events: rendering
and engines act afterwards, on what was committed, so a crash between the two is
recovered by looking at the state (``engine_state='starting'`` means "launch me").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from docket.capabilities import Capability, CapabilityCache, CapabilityError, load_machine
from docket.documents import capability_request, spec_sha256
from docket.handoffs import HANDOFFS
from docket.records import ACTIVE_ENGINE_STATES, EngineState, Execution, Request
from docket.sites import engine_name
from docket.statemachine import Machine
from docket.store import Store

__all__ = ["Accepted", "Duplicate", "Rules", "QueueView"]


@dataclass(frozen=True)
class Accepted:
    request: str
    version: int
    execution: int
    superseded: list[int]


@dataclass(frozen=True)
class Duplicate:
    request: str
    version: int
    accepted_at: str


@dataclass(frozen=True)
class QueueView:
    capability: str
    max_jobs: int
    paused: bool
    enabled: bool
    running: int
    waiting: int
    oldest_wait: str | None


class Rules:
    def __init__(self, store: Store, capabilities: CapabilityCache, work_dir: Path,
                 sites: Any = None) -> None:
        self.store = store
        self.capabilities = capabilities
        self.work_dir = work_dir
        self.sites = sites  # a SitesFile; None means only the local site
        self._default_machine: Machine | None = None

    # machines -----------------------------------------------------------------

    def machine_for(self, capability: str) -> Machine:
        """The capability's machine; the default one if the capability has since gone."""
        try:
            return self.capabilities.get(capability).machine
        except CapabilityError:
            if self._default_machine is None:
                templates = self.capabilities.templates_dir
                self._default_machine = load_machine(templates, "simple", templates)
            return self._default_machine

    # versions -------------------------------------------------------------------

    def find_duplicate(self, request: str, sha256: str) -> Duplicate | None:
        found = self.store.version_with(request, sha256)
        return Duplicate(request, found.number, str(found.created)) if found else None

    def assess(self, capability: Capability, request: str, sha256: str, actor: str
               ) -> tuple[Request | None, Duplicate | None, str | None]:
        """What this home says to a new version of ``request`` with spec hash ``sha256``:
        the request as it stands (None: a new one), the version it duplicates, and why it
        is refused (``refusal``). Intake and ``docket submit`` ask the same."""
        existing = self.store.request(request)
        # every version has its request's row: a new request has no duplicate to look for
        duplicate = None if existing is None else self.find_duplicate(request, sha256)
        return existing, duplicate, self.refusal(capability, request, actor, existing,
                                                 duplicate is not None)

    def refusal(self, capability: Capability, request: str, actor: str,
                existing: Request | None, duplicate: bool = False) -> str | None:
        """Why this home's state refuses a new version of ``request`` from ``actor``, or
        None. Intake rejects with it; ``docket submit`` asks it before spooling. A
        duplicate changes nothing, so only the checks before it apply to one.
        ``existing`` is the request as the caller read it (None for a new request): the
        caller needs it too, and one read serves both."""
        definition = capability.definition
        if existing is not None and existing.capability != capability.name:
            return (f"spec.capability: request {request!r} is a {existing.capability!r} "
                    f"request; a new version cannot change it to {capability.name!r} (use a "
                    "new metadata.name)")
        _max_jobs, _paused, enabled = self.queue_settings(capability.name)
        if not enabled or not definition.enabled:
            return (f"spec.capability: capability {capability.name!r} is disabled; ask an "
                    "operator to enable its queue")
        if definition.submitters is not None:
            from docket.analysts import may_submit

            if not may_submit(actor, definition.submitters):
                return (f"spec.capability: {actor} may not submit {capability.name!r} "
                        f"requests (allowed: {', '.join(definition.submitters) or 'nobody'})")
        if duplicate or existing is None:
            return None
        if existing.sealed:
            passed = existing.passed_version
            return (f"metadata.name: request {request!r} is sealed"
                    + (f" (version {passed} passed QA)" if passed else "")
                    + "; it takes no new versions — submit a new request name")
        if definition.single_version_only:
            return (f"metadata.name: capability {capability.name!r} allows one version per "
                    f"request and {request!r} exists; use a new name")
        return None

    def accept(self, capability: Capability, request: str, spec: dict[str, Any],
               parameters: dict[str, Any], sha256: str, document: str,
               source_file: str | None, source_identity: str | None,
               actor: str | None, new_request: bool = False, **source: Any) -> Accepted:
        """Record a new version and its first execution, superseding queued older ones.
        ``new_request``: the caller found no such request, so this is its version 1."""
        store = self.store
        number = 1 if new_request else store.last_version_number(request) + 1
        store.record("version.accepted", request=request, version=number, actor=actor,
                     capability=capability.name, sha256=sha256, spec=spec, document=document,
                     source_file=source_file, source_identity=source_identity, **source)
        superseded = []
        older = [] if number == 1 else store.executions(
            request, before_version=number, engine_states=(EngineState.NONE,))
        for row in older:
            if self.feed(row, "supersede", reason=f"superseded by version {number}",
                         actor=actor):
                superseded.append(row.id)
        if number > 1 and capability.definition.on_new_version == "cancel":
            for row in store.executions(request, before_version=number,
                                        engine_states=ACTIVE_ENGINE_STATES):
                self.feed(row, "cancel", reason=f"cancelled: version {number} arrived",
                          actor=actor)
        execution = self.create_execution(capability, request, number, parameters, spec,
                                          actor, first_of_version=True)
        return Accepted(request, number, execution, superseded)

    def create_execution(self, capability: Capability, request: str, version: int,
                         parameters: dict[str, Any], spec: dict[str, Any],
                         actor: str | None, attempt: int | None = None,
                         first_of_version: bool = False) -> int:
        store = self.store
        execution = store.next_execution_id()
        count = 0 if first_of_version else store.execution_count(request, version)
        definition = capability.definition
        event = store.record(
            "execution.created", request=request, version=version, execution=execution,
            actor=actor, number=count + 1, capability=capability.name,
            state=definition.start_state or capability.machine.initial,
            priority=spec.get("priority", 0), parameters=parameters,
            tags=spec.get("tags", []), group=spec.get("group"),
            events=spec.get("events", []),
            timeout_s=spec.get("timeout_s") or definition.timeout_s, attempt=attempt or 1)
        self.feed(Execution.from_created(event), "accept", actor=actor)
        return execution

    # state machine --------------------------------------------------------------

    def feed(self, execution: Execution, event: str, *, reason: str | None = None,
             actor: str | None = None, roles: set[str] | None = None,
             **fields: Any) -> bool:
        """Give ``event`` to the execution's machine; record the transition or the refusal.

        ``roles`` are the actor's analyst roles when a person caused the event; a
        transition marked ``@role`` refuses anyone without it. System events pass None.
        """
        return self.transition(execution, event, reason=reason, actor=actor, roles=roles,
                               **fields) is None

    def transition(self, execution: Execution, event: str, *, reason: str | None = None,
                   actor: str | None = None, roles: set[str] | None = None,
                   **fields: Any) -> str | None:
        """Like ``feed``, but returns the reason of a refusal (None when it was taken)."""
        machine = self.machine_for(execution.capability)
        state = execution.state
        common = {"request": execution.request, "version": execution.version,
                  "execution": execution.id, "actor": actor}
        transition = machine.on(state, event, fields)
        refusal = None
        if transition is None:
            accepted = ", ".join(machine.accepts(state)) or "nothing (final state)"
            refusal = f"state {state!r} does not accept {event!r}; it accepts {accepted}"
        elif transition.role and roles is not None and transition.role not in roles:
            refusal = (f"{event!r} in state {state!r} needs an analyst with the role "
                       f"{transition.role!r}; {actor or 'this user'} has "
                       + (", ".join(sorted(roles)) or "no role"))
        if refusal is not None:
            self.store.record("event.refused", **common, event=event, state=state,
                              reason=refusal, **fields)
            return refusal
        assert transition is not None
        final = transition.target in machine.final
        self.store.record("execution.transition", **common, event=event, to=transition.target,
                          reason=reason, actions=list(transition.actions), final=final,
                          **{"from": state}, **fields)
        for action in transition.actions:
            word, _, argument = action.partition(" ")
            if word == "run":
                site = fields.get("site") or "local"
                self.store.record("execution.starting", **common,
                                  directory=str(self.processing_dir(execution)),
                                  engine=engine_name(site),
                                  site=site, site_reason=fields.get("site_reason"))
            elif word == "notify":
                self.store.record("notification", **common,
                                  message=f"{execution.request} v{execution.version} "
                                          f"is now {transition.target}")
            elif word == "run-workflow":
                self._follow_up(execution, argument, actor)
            elif word in HANDOFFS and execution.directory:
                # run after the commit by docket.handoffs.run_pending
                self.store.record("handoff.requested", **common, action=action,
                                  directory=execution.directory,
                                  output_dir=self.output_dir(execution))
            # enqueue: waiting is the state itself; kill: see Launcher.stop_cancelled
        if (transition.target in machine.waiting_states()
                and execution.engine_state == EngineState.DONE):
            self.store.record("execution.requeued", **common, reason=reason)
        if event == "qa-pass":
            self._seal_on_pass(execution, actor)
        return None

    def _seal_on_pass(self, execution: Execution, actor: str | None) -> None:
        """Workspaces' rule: one version passes; the others fail; the request is sealed."""
        request, version = execution.request, execution.version
        self.store.record("request.sealed", request=request, version=version, actor=actor,
                          passed_version=version, execution=execution.id,
                          reason=f"version {version} passed QA")
        for row in self.store.executions(request):
            if row.id == execution.id:
                continue
            machine = self.machine_for(row.capability)
            if row.state in machine.final or "failed" not in machine.states:
                continue
            self.store.record("execution.transition", request=request, version=row.version,
                              execution=row.id, actor=actor, event="version-passed",
                              to="failed", final=True, actions=["kill"],
                              reason=f"version {version} passed QA",
                              **{"from": row.state})

    def _follow_up(self, execution: Execution, capability_name: str, actor: str | None) -> None:
        """``run-workflow X``: a new request of capability X about this execution's work."""
        from docket.capabilities import resolve_parameters

        capability = self.capabilities.get(capability_name)
        offered = {"source_request": execution.request,
                   "source_version": execution.version,
                   "source_directory": str(self.processing_dir(execution))}
        wanted = {k: v for k, v in offered.items() if k in capability.definition.parameters}
        parameters, problems = resolve_parameters(capability, wanted)
        name = f"{execution.request}-{capability_name}"[:63].rstrip("-._")
        if problems:
            self.store.record("notification", request=execution.request,
                              version=execution.version, execution=execution.id,
                              actor=actor, message=f"run-workflow {capability_name} not "
                              f"started: {problems[0]}")
            return
        # built as a spool document is: dropped in the spool, the same follow-up is a
        # duplicate of this version, not a new one
        model, document = capability_request(
            name, {"capability": capability_name, "parameters": wanted},
            labels={"follow-up-of": execution.request})
        spec = model.spec.model_dump(mode="json")
        sha = spec_sha256(spec)
        if self.find_duplicate(name, sha) is None:
            self.accept(capability, name, spec, parameters, sha, document,
                        f"run-workflow from execution {execution.id}", None, actor)

    def output_dir(self, execution: Execution) -> str | None:
        """Where the request wants its delivered results (absolute), or None."""
        version = self.store.version(execution.request, execution.version)
        output_dir = (version.spec if version else {}).get("output_dir")
        if not output_dir:
            return None
        path = Path(output_dir)
        return str(path if path.is_absolute() else self.work_dir / path)

    def processing_dir(self, execution: Execution) -> Path:
        """A fresh directory under the work area for each attempt of each execution: a
        request's output_dir receives its delivered products, never the processing
        itself (a reused directory would hand an old run's files to the new one)."""
        attempt = int(execution.attempt or 1)
        leaf = f"e{self._number(execution)}" + (f".{attempt}" if attempt > 1 else "")
        return self.work_dir / execution.request / f"v{execution.version}" / leaf

    def _number(self, execution: Execution) -> int:
        return int(execution.number)

    # queues -----------------------------------------------------------------

    def queue_settings(self, capability: str) -> tuple[int, bool, bool]:
        try:
            q = self.capabilities.get(capability).definition.queue
            max_jobs, paused, enabled = q.max_jobs, q.paused, q.enabled
        except CapabilityError:
            max_jobs, paused, enabled = 0, True, False
        set_max_jobs, set_paused, set_enabled = self.store.queue_override(capability)
        return (max_jobs if set_max_jobs is None else set_max_jobs,
                paused if set_paused is None else set_paused,
                enabled if set_enabled is None else set_enabled)

    def schedule(self) -> list[int]:
        """Start what the queues allow: priority first, then arrival. Returns started ids."""
        started: list[int] = []
        for capability in self.store.waiting_capabilities():
            max_jobs, paused, enabled = self.queue_settings(capability)
            if paused or not enabled:
                continue
            slots = max_jobs - self.store.active_count(capability)
            if slots <= 0:
                continue
            states = self.machine_for(capability).waiting_states()
            for row in self.store.startable(capability, states, slots):
                site, why = self._choose_site(row)
                if site is None:
                    continue
                if self.feed(row, "start", site=site, site_reason=why):
                    started.append(row.id)
        return started

    def _choose_site(self, row: Execution) -> tuple[str | None, str]:
        """The site an execution goes to: the first enabled one under its limit among the
        request's (or capability's) cluster_locations. None leaves it waiting."""
        if self.sites is None:
            return "local", "no sites.yaml: the local engine"
        from docket.sites import NoSite, choose_site

        version = self.store.version(row.request, row.version)
        wanted = version.spec.get("cluster_locations") if version else None
        if not wanted:
            try:
                wanted = list(self.capabilities.get(row.capability).definition
                              .cluster_locations)
            except CapabilityError:
                wanted = []
        choice = choose_site(wanted, self.sites, self.store.active_by_site())
        if isinstance(choice, NoSite):
            said = self.store.last_event_of(row.id, "site.unavailable")
            if said is None or said.get("reason") != choice.reason:
                self.store.record("site.unavailable", request=row.request,
                                  version=row.version, execution=row.id,
                                  reason=choice.reason, wait=choice.wait)
            return None, choice.reason
        order = ", ".join(wanted) if wanted else "the default sites"
        return choice.name, f"first enabled site under its limit of: {order}"

    def change_queue(self, capability: str, actor: str | None = None, **changes: Any) -> None:
        self.store.record("queue.changed", actor=actor, capability=capability, **changes)

    def queues(self) -> list[QueueView]:
        names = self.store.known_queues()
        from docket.capabilities import list_capabilities

        names |= set(list_capabilities(self.capabilities.templates_dir))
        views = []
        for name in sorted(names):
            max_jobs, paused, enabled = self.queue_settings(name)
            running, waiting, oldest = self.store.queue_counts(
                name, self.machine_for(name).waiting_states())
            views.append(QueueView(name, max_jobs, paused, enabled, running, waiting, oldest))
        return views
