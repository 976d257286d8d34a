"""Human decisions as documents: Decision, Cancel, Resubmit, Seal, QueueChange.

Every change a person makes has a file behind it that can be committed, reviewed and
replayed. Applying one checks who made it (the file's owner, never a name written in
it) against the roles in ``analysts.yaml`` and the capability's state machine, then
records events through the rules. A document that cannot be applied is refused with
the reason, like any rejected document.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from docket.capabilities import CapabilityError
from docket.records import ACTIVE_ENGINE_STATES, Execution, Request
from docket.rules import Rules

__all__ = ["Refused", "apply_decision", "cancel_executions", "check_may_change",
           "DECISION_KINDS"]

DECISION_KINDS = ("Decision", "Cancel", "Resubmit", "Seal", "QueueChange")


class Refused(Exception):
    """The document is valid but may not be applied; the message says why."""


def _latest_execution(rules: Rules, request: str, version: int) -> Execution:
    row = rules.store.latest_execution(request, version)
    if row is None:
        raise Refused(f"request {request!r} version {version} has no execution")
    return row


def _request(rules: Rules, name: str) -> Request:
    row = rules.store.request(name)
    if row is None:
        raise Refused(f"spec.request: no request named {name!r}")
    return row


def _version(rules: Rules, request: Request, version: int | None) -> int:
    if version is None:
        return int(request.current_version or 0)
    if rules.store.version(request.name, version) is None:
        raise Refused(f"spec.version: request {request.name!r} has no version {version} "
                      f"(current: {request.current_version})")
    return version


def apply_decision(rules: Rules, kind: str, name: str, spec: Any, actor: str,
                   roles_of: Callable[[str], set[str]]) -> dict[str, Any]:
    """Apply one decision document inside the caller's transaction.

    Returns what it did (request, version, execution, outcome); raises ``Refused``.
    """
    store = rules.store
    if store.decision_applied(name):
        raise Refused(f"metadata.name: a decision named {name!r} was already applied; "
                      "give each decision its own name")
    roles = roles_of(actor)
    result: dict[str, Any]
    if kind == "QueueChange":
        result = _queue_change(rules, spec, actor, roles)
    elif kind == "Decision":
        result = _decision(rules, spec, actor, roles)
    elif kind == "Cancel":
        result = _cancel(rules, spec, actor, roles)
    elif kind == "Resubmit":
        result = _resubmit(rules, spec, actor, roles)
    elif kind == "Seal":
        result = _seal(rules, spec, actor, roles)
    else:  # pragma: no cover - intake only passes the kinds above
        raise Refused(f"unknown decision kind {kind!r}")
    store.record("decision.applied", request=result.get("request"),
                 version=result.get("version"), execution=result.get("execution"),
                 actor=actor, name=name, kind=kind,
                 decision=getattr(spec, "decision", None) or getattr(spec, "action", None),
                 reason=spec.reason, outcome=result["outcome"])
    return result


def _queue_change(rules: Rules, spec: Any, actor: str, roles: set[str]) -> dict[str, Any]:
    if "operator" not in roles:
        raise Refused(f"queue changes need an analyst with the role 'operator'; {actor} has "
                      + (", ".join(sorted(roles)) or "no role"))
    try:
        rules.capabilities.get(spec.capability)
    except CapabilityError as exc:
        raise Refused(f"spec.capability: {exc}") from None
    change: dict[str, Any] = {
        "pause": {"paused": True}, "resume": {"paused": False}, "enable": {"enabled": True},
        "disable": {"enabled": False}}.get(spec.action, {})
    if spec.action == "limit":
        if spec.max_jobs is None:
            raise Refused("spec.max_jobs: action 'limit' needs max_jobs")
        change = {"max_jobs": spec.max_jobs}
    rules.change_queue(spec.capability, actor=actor, reason=spec.reason, **change)
    return {"outcome": f"queue {spec.capability}: " + ", ".join(
        f"{k}={v}" for k, v in change.items())}


def _decision(rules: Rules, spec: Any, actor: str, roles: set[str]) -> dict[str, Any]:
    request = _request(rules, spec.request)
    version = _version(rules, request, spec.version)
    if spec.decision == "qa-pass" and request.sealed:
        raise Refused(f"request {spec.request!r} is sealed (version "
                      f"{request.passed_version} passed QA); nothing more can pass")
    execution = _latest_execution(rules, spec.request, version)
    refusal = rules.transition(execution, spec.decision, reason=spec.reason, actor=actor,
                               roles=roles)
    if refusal is not None:
        raise Refused(f"{spec.decision} for {spec.request} v{version}: {refusal}")
    now = rules.store.execution(execution.id)
    return {"request": spec.request, "version": version, "execution": execution.id,
            "outcome": f"{spec.decision}: {spec.request} v{version} is now "
                       f"{now.state if now else '?'}"}


def cancel_executions(rules: Rules, request: str, version: int | None, reason: str,
                      actor: str) -> list[int]:
    """Give 'cancel' to every execution of the request (or one version) not yet ended."""
    cancelled = []
    for row in rules.store.executions(request):
        if version is not None and row.version != version:
            continue
        machine = rules.machine_for(row.capability)
        if row.state not in machine.final and rules.feed(row, "cancel", reason=reason,
                                                            actor=actor):
            cancelled.append(row.id)
    return cancelled


def check_may_change(rules: Rules, request: str, actor: str, roles: set[str],
                     what: str) -> None:
    """Cancel and Resubmit are for the requester (whoever submitted one of the request's
    versions: they could replace it anyway) and for operators; raise ``Refused`` else."""
    if "operator" in roles:
        return
    submitters = rules.store.submitters(request)
    if actor in submitters:
        return
    raise Refused(f"{what} {request!r} is for its requester ({', '.join(submitters) or 'none'})"
                  f" or an analyst with the role 'operator'; {actor} is neither")


def _cancel(rules: Rules, spec: Any, actor: str, roles: set[str]) -> dict[str, Any]:
    request = _request(rules, spec.request)
    check_may_change(rules, spec.request, actor, roles, "cancelling")
    cancelled = cancel_executions(rules, spec.request, spec.version, spec.reason, actor)
    if not cancelled:
        raise Refused(f"request {spec.request!r} has nothing to cancel (state "
                      f"{request.state})")
    return {"request": spec.request, "version": spec.version,
            "outcome": f"cancelled execution(s) {', '.join(map(str, cancelled))}"}


def _resubmit(rules: Rules, spec: Any, actor: str, roles: set[str]) -> dict[str, Any]:
    request = _request(rules, spec.request)
    check_may_change(rules, spec.request, actor, roles, "resubmitting")
    if request.sealed:
        raise Refused(f"request {spec.request!r} is sealed; it cannot run again")
    version = _version(rules, request, spec.version)
    running = rules.store.executions(spec.request, version=version,
                                     engine_states=ACTIVE_ENGINE_STATES)
    if running:
        raise Refused(f"{spec.request} v{version} is running (execution {running[0].id}); "
                      "cancel it first or wait")
    row = rules.store.version(spec.request, version)
    assert row is not None  # _version checked it
    try:
        capability = rules.capabilities.get(row.capability)
    except CapabilityError as exc:
        raise Refused(str(exc)) from None
    previous = _latest_execution(rules, spec.request, version)
    if getattr(spec, "rescue", False):
        _check_rescue(spec.request, version, previous)
    execution = rules.create_execution(capability, spec.request, version,
                                       previous.parameters, row.spec, actor)
    if getattr(spec, "rescue", False):
        # the launcher copies the failed execution's directory, rescue DAG included
        rules.store.record("execution.rescue_from", request=spec.request, version=version,
                           execution=execution, source=previous.id,
                           directory=previous.directory)
        return {"request": spec.request, "version": version, "execution": execution,
                "outcome": f"resubmitted {spec.request} v{version} as execution "
                           f"{execution}, continuing execution {previous.id} from its "
                           "rescue DAG"}
    return {"request": spec.request, "version": version, "execution": execution,
            "outcome": f"resubmitted {spec.request} v{version} as execution {execution}"}


def _check_rescue(request: str, version: int, previous: Execution | None) -> None:
    from pathlib import Path

    from docket.engines.dagman_files import rescue_files
    from docket.render import WORKFLOW_FILE

    if previous is None or not previous.directory:
        raise Refused(f"{request} v{version} has no execution to continue")
    if not rescue_files(Path(previous.directory) / WORKFLOW_FILE):
        raise Refused(f"execution {previous.id} of {request} v{version} has no rescue "
                      "DAG (only a failed run writes one); resubmit without --rescue")


def _seal(rules: Rules, spec: Any, actor: str, roles: set[str]) -> dict[str, Any]:
    request = _request(rules, spec.request)
    if not roles & {"da", "aod", "operator"}:
        raise Refused(f"sealing a request needs an analyst (da, aod or operator); {actor} "
                      "has no role")
    if request.sealed:
        raise Refused(f"request {spec.request!r} is already sealed")
    rules.store.record("request.sealed", request=spec.request, actor=actor,
                       reason=spec.reason)
    return {"request": spec.request, "outcome": f"sealed {spec.request}"}
