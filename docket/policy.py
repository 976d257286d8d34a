"""The failure policy: one table of rules, read by a DA, deciding what a node failure means.

A node failure is an engine-neutral ``Failure`` (built from the nodes table and the files
of the processing directory by ``failure_from_node``). ``decide`` is pure: the first rule
whose match fits gives the action (``retry``, ``retry-with-more-memory``, ``avoid-host``,
``fail``), the wait before the retry and the adjustments to make; a failure that no rule
matches fails. Adjustments are cumulative per node (``merge_adjustments``) and
``apply_adjustments`` writes them into the processing directory for the next attempt —
per-node copies of the submit file with ``request_memory`` raised and ``requirements``
extended, and the DAG's JOB line pointed at the copy — identically for both engines, since
both read the same files.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from docket.errors import Invalid
from docket.fileio import atomic_write, safe_join
from docket.submitedit import classad_string, edit_submit
from schemas.policy import FailurePolicy, Match, PolicyRule

__all__ = ["Failure", "Decision", "PolicyError", "POLICIES_DIR", "DEFAULT_POLICY",
           "ADJUSTMENTS_FILE", "POLICY_TAG", "LOG_TAIL_BYTES", "load_policy", "decide",
           "rule_text", "failure_from_node", "attempts_by_rule", "merge_adjustments",
           "apply_adjustments", "read_adjustments", "size_to_mb", "host_name",
           "node_submit_file"]

log = logging.getLogger("docket.policy")

POLICIES_DIR = "_policies"
DEFAULT_POLICY = "default"
ADJUSTMENTS_FILE = "adjustments.json"
POLICY_TAG = "policy"
# How much of the end of a log file a rule's pattern is searched in.
LOG_TAIL_BYTES = 64 * 1024


class PolicyError(Invalid):
    code = "invalid-policy"


@dataclass(frozen=True)
class Failure:
    """One node's failure, whichever engine ran it."""

    node: str
    exit_code: int | None = None
    signal: int | None = None
    hold_code: int | None = None
    hold_subcode: int | None = None
    host: str | None = None
    reason: str | None = None
    request_memory_mb: int | None = None
    # file name as a rule names it ({node} not yet replaced) -> the end of that file
    logs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    action: str  # retry, retry-with-more-memory, avoid-host, fail
    rule_index: int | None  # 1-based row of the table; None: no row matched
    rule_text: str
    delay_s: float = 0.0
    adjustments: dict[str, Any] = field(default_factory=dict)
    reason: str = ""

    @property
    def retries(self) -> bool:
        return self.action != "fail"

    def as_dict(self) -> dict[str, Any]:
        return {"action": self.action, "rule_index": self.rule_index,
                "rule": self.rule_text, "delay_s": self.delay_s,
                "adjustments": self.adjustments, "reason": self.reason}


# loading ---------------------------------------------------------------------------


def load_policy(templates_dir: Path, spec: str | FailurePolicy | None = None) -> FailurePolicy:
    """A policy by name (``templates/_policies/<name>.yaml``), or the one given inline."""
    if isinstance(spec, FailurePolicy):
        return spec
    name = spec or DEFAULT_POLICY
    folder = templates_dir / POLICIES_DIR
    path = folder / f"{name}.yaml"
    if "/" in name or name.startswith(".") or not path.is_file():
        known = sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []
        raise PolicyError(f"failure policy {name!r} does not exist in {folder}",
                          f"shipped policies: {', '.join(known) or 'none'}")
    from docket.documents import load_model_file

    return load_model_file(path, FailurePolicy, PolicyError,
                           "fix the policy file (see docs/htcondor.md)")


# deciding --------------------------------------------------------------------------


def _as_set(value: int | list[int] | None) -> set[int] | None:
    if value is None:
        return None
    return {value} if isinstance(value, int) else set(value)


def _fits(match: Match, failure: Failure) -> bool:
    if match.node is not None and not fnmatch.fnmatchcase(failure.node, match.node):
        return False
    for name in ("hold_code", "hold_subcode", "exit_code", "signal"):
        wanted = _as_set(getattr(match, name))
        if wanted is not None and getattr(failure, name) not in wanted:
            return False
    if match.reason is not None and not re.search(match.reason, failure.reason or ""):
        return False
    if match.log is not None:
        text = failure.logs.get(match.log.file)
        if text is None or not re.search(match.log.pattern, text, re.MULTILINE):
            return False
    return True


def _criteria(match: Match) -> str:
    parts = []
    for name in ("node", "hold_code", "hold_subcode", "exit_code", "signal"):
        value = getattr(match, name)
        if value is not None:
            shown = ",".join(map(str, value)) if isinstance(value, list) else str(value)
            parts.append(f"{name} {shown}")
    if match.reason is not None:
        parts.append(f"reason ~ /{match.reason}/")
    if match.log is not None:
        parts.append(f"{match.log.file} ~ /{match.log.pattern}/")
    return " and ".join(parts) or "any failure"


def rule_text(index: int, rule: PolicyRule) -> str:
    """One line a DA can read: ``#1 hold_code 34 -> retry-with-more-memory (x2, cap ...)``."""
    details = []
    if rule.action != "fail":
        details.append(f"limit {rule.limit}")
    if rule.action == "retry-with-more-memory":
        details.append(f"x{rule.factor or 2:g} up to {rule.cap_mb} MB")
    if rule.backoff_s:
        growth = f" x{rule.growth:g}" if rule.growth != 1 else ""
        details.append(f"backoff {rule.backoff_s:g}s{growth}")
    tail = f" ({', '.join(details)})" if details else ""
    return f"#{index} {_criteria(rule.match)} -> {rule.action}{tail}"


def decide(failure: Failure, policy: FailurePolicy,
           attempts_so_far: Mapping[int, int] | None = None) -> Decision:
    """What to do about ``failure``: the first rule that fits decides.

    ``attempts_so_far`` maps a rule's 1-based index to the retries it has already granted
    this node (see ``attempts_by_rule``); a rule that has used its ``limit`` fails the node.
    """
    attempts_so_far = attempts_so_far or {}
    for index, rule in enumerate(policy.rules, 1):
        if not _fits(rule.match, failure):
            continue
        text = rule_text(index, rule)
        if rule.action == "fail":
            return Decision("fail", index, text, reason=f"rule {text}")
        used = attempts_so_far.get(index, 0)
        if used >= rule.limit:
            return Decision("fail", index, text,
                            reason=f"rule {text} has used its {rule.limit} retr"
                                   f"{'y' if rule.limit == 1 else 'ies'}")
        delay = min(rule.backoff_s * rule.growth ** used, rule.max_backoff_s)
        adjustments: dict[str, Any] = {}
        reason = f"rule {text}: retry {used + 1} of {rule.limit}"
        if rule.action == "retry-with-more-memory":
            assert rule.cap_mb is not None  # the schema requires it for this action
            current = failure.request_memory_mb
            if current is not None and current >= rule.cap_mb:
                return Decision("fail", index, text,
                                reason=f"rule {text}: request_memory is already "
                                       f"{current} MB, at its cap of {rule.cap_mb} MB")
            wanted = (rule.cap_mb if current is None
                      else min(rule.cap_mb, math.ceil(current * (rule.factor or 2.0))))
            adjustments["request_memory_mb"] = wanted
            was = f"{current} MB" if current is not None else "unknown"
            reason += f", request_memory {was} -> {wanted} MB"
        elif rule.action == "avoid-host":
            host = host_name(failure.host)
            if host:
                adjustments["avoid_hosts"] = [host]
                reason += f", avoiding {host}"
            else:
                reason += ", but the host is unknown so none is avoided"
        return Decision(rule.action, index, text, delay, adjustments, reason)
    return Decision("fail", None, "no rule matched",
                    reason="no rule of the failure policy matched this failure")


def attempts_by_rule(decisions: Iterable[Mapping[str, Any]], node: str) -> dict[int, int]:
    """Count the retries each rule granted ``node``, from recorded decisions
    (dicts with ``node``, ``action`` and ``rule_index``, as ``Decision.as_dict`` plus node)."""
    counts: dict[int, int] = {}
    for d in decisions:
        if d.get("node") == node and d.get("action") != "fail" and d.get("rule_index"):
            counts[int(d["rule_index"])] = counts.get(int(d["rule_index"]), 0) + 1
    return counts


# building a failure from what the engines left -------------------------------------


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B?)\s*$", re.IGNORECASE)
_TO_MB = {"": 1.0, "K": 1 / 1024, "M": 1.0, "G": 1024.0, "T": 1024.0 * 1024}


def size_to_mb(value: str | None) -> int | None:
    """A submit-file size (``request_memory = 2GB``; a bare number is MB) in MB, or None
    for an expression docket cannot evaluate."""
    if value is None:
        return None
    match = _SIZE.match(value)
    if not match:
        return None
    return math.ceil(float(match[1]) * _TO_MB[match[2].upper()])


def host_name(execute_host: str | None) -> str | None:
    """The machine name in an execute-host address (``<1.2.3.4:9618?...&alias=node7...>``)
    as HTCondor reports it; a plain name is returned as it is."""
    if not execute_host:
        return None
    text = execute_host.strip()
    if text.startswith("<"):
        alias = re.search(r"[?&]alias=([^&>]+)", text)
        if alias:
            return alias[1]
        address = re.match(r"<\[?([^\]:>?]+)", text)
        return address[1] if address else None
    return text.split("@")[-1] or None  # slot1_2@node7 -> node7


def _job_lines(dag_text: str) -> dict[str, tuple[int, str, str | None]]:
    """node -> (line index, submit file, DIR) for every JOB line."""
    out = {}
    for number, line in enumerate(dag_text.splitlines()):
        words = line.split()
        if len(words) >= 3 and words[0].upper() == "JOB":
            directory = None
            upper = [w.upper() for w in words]
            if "DIR" in upper[3:]:
                at = upper.index("DIR", 3)
                directory = words[at + 1] if at + 1 < len(words) else None
            out[words[1]] = (number, words[2], directory)
    return out


def node_submit_file(directory: Path, node: str, dag_name: str = "workflow.dag") -> Path | None:
    """The submit file the DAG runs for ``node`` now (an adjusted copy once there is one)."""
    try:
        jobs = _job_lines((directory / dag_name).read_text())
    except OSError:
        return None
    if node not in jobs:
        return None
    _, submit, subdir = jobs[node]
    return (directory / subdir / submit) if subdir else directory / submit


def _htcondor():  # noqa: ANN202 - module object
    os.environ.setdefault("CONDOR_CONFIG", "/dev/null")
    import htcondor2

    return htcondor2


def _tail(path: Path) -> str | None:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - LOG_TAIL_BYTES))
            return fh.read().decode("utf-8", errors="replace")
    except OSError:
        return None


def failure_from_node(row: Mapping[str, Any], directory: Path,
                      policy: FailurePolicy | None = None,
                      dag_name: str = "workflow.dag") -> Failure:
    """A ``Failure`` from one row of the nodes table (or a dict with its columns), with the
    node's current request_memory and the ends of the log files the policy's rules name."""
    node = str(row["node"])
    memory = None
    submit = node_submit_file(directory, node, dag_name)
    if submit is not None and submit.is_file():
        try:
            description = _htcondor().Submit(submit.read_text())
            memory = size_to_mb(description.get("request_memory"))
        except Exception:  # an unreadable submit file: memory stays unknown
            memory = None
    logs: dict[str, str] = {}
    for rule in (policy.rules if policy else []):
        if rule.match.log is None or rule.match.log.file in logs:
            continue
        name = rule.match.log.file.replace("{node}", node)
        try:
            path = safe_join(directory, name)
        except Invalid:
            continue
        text = _tail(path)
        if text is not None:
            logs[rule.match.log.file] = text

    def column(name: str) -> Any:
        try:
            return row[name]
        except (KeyError, IndexError):
            return None

    exit_code, signal = column("exit_code"), column("signal")
    hold_code, hold_subcode = column("hold_code"), column("hold_subcode")
    if exit_code is not None or signal is not None:
        # the job ended by itself, so a hold code left from an earlier attempt is stale
        hold_code = hold_subcode = None
    return Failure(node=node, exit_code=exit_code, signal=signal,
                   hold_code=hold_code, hold_subcode=hold_subcode,
                   host=column("host"), reason=column("reason"), request_memory_mb=memory,
                   logs=logs)


# adjusting the next attempt ---------------------------------------------------------


def merge_adjustments(current: Mapping[str, Any], node: str,
                      decision: Decision) -> dict[str, Any]:
    """The cumulative adjustments after ``decision`` about ``node``:
    ``{"nodes": {node: {"request_memory_mb": int, "avoid_hosts": [..]}}}``."""
    merged = json.loads(json.dumps(dict(current))) if current else {}
    nodes = merged.setdefault("nodes", {})
    mine = nodes.setdefault(node, {})
    change = decision.adjustments
    if "request_memory_mb" in change:
        mine["request_memory_mb"] = max(int(change["request_memory_mb"]),
                                        int(mine.get("request_memory_mb") or 0))
    for host in change.get("avoid_hosts", []):
        hosts = mine.setdefault("avoid_hosts", [])
        if host not in hosts:
            hosts.append(host)
    if not mine:
        del nodes[node]
    return merged


def read_adjustments(directory: Path) -> dict[str, Any]:
    try:
        return json.loads((directory / ADJUSTMENTS_FILE).read_text())
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as exc:
        raise Invalid(f"{directory / ADJUSTMENTS_FILE} is not valid JSON: {exc}",
                      "restore it from the execution's events or remove it") from None


def _copy_name(submit: str, node: str) -> str:
    stem = submit[:-4] if submit.endswith(".sub") else submit
    return f"{stem}.{node}.adjusted.sub"


def _point_job_at(line: str, submit: str) -> str:
    """A JOB line with its submit file (the third word) replaced, the rest kept as written."""
    return re.sub(r"^(\s*\S+\s+\S+\s+)(\S+)", lambda m: m[1] + submit, line, count=1)


def apply_adjustments(directory: Path, adjustments: Mapping[str, Any],
                      dag_name: str = "workflow.dag") -> list[Path]:
    """Write cumulative ``adjustments`` into ``directory`` for the next attempt.

    For each adjusted node: a copy of its original submit file with a policy block
    (``request_memory`` raised, ``requirements`` excluding the avoided hosts), and its DAG
    JOB line pointed at the copy. The original submit file is never changed (other nodes
    share it). Also writes ``adjustments.json``, which remembers each node's original
    submit file, so applying again gives the same files. Returns the files written.
    """
    dag_path = directory / dag_name
    dag_lines = dag_path.read_text().splitlines(keepends=True)
    jobs = _job_lines("".join(dag_lines))
    state = {"nodes": {}}
    previous = read_adjustments(directory).get("nodes", {})
    written: list[Path] = []
    for node, wanted in sorted((adjustments.get("nodes") or {}).items()):
        if node not in jobs:
            raise Invalid(f"{dag_path}: no JOB line for node {node!r} to adjust",
                          "the DAG changed since the adjustment was decided")
        number, submit, subdir = jobs[node]
        original = (previous.get(node) or {}).get("original_submit") or submit
        folder = directory / subdir if subdir else directory
        copy_name = _copy_name(original, node)
        attributes: dict[str, object] = {}
        if wanted.get("request_memory_mb"):
            attributes["request_memory"] = int(wanted["request_memory_mb"])
        requirements = [f"TARGET.Machine =!= {classad_string(h)}"
                        for h in wanted.get("avoid_hosts", [])]
        text = edit_submit((folder / original).read_text(), POLICY_TAG, attributes,
                           requirements, comment=f"failure policy adjustments for node {node}")
        atomic_write(folder / copy_name, text, durable=False)
        written.append(folder / copy_name)
        if submit != copy_name:
            dag_lines[number] = _point_job_at(dag_lines[number], copy_name)
        state["nodes"][node] = {**wanted, "original_submit": original,
                                "submit": copy_name}
    # nodes no longer adjusted go back to their original submit file
    for node, old in previous.items():
        if node in state["nodes"] or node not in jobs:
            continue
        number, submit, _ = jobs[node]
        if old.get("original_submit") and submit == old.get("submit"):
            dag_lines[number] = _point_job_at(dag_lines[number], old["original_submit"])
    new_dag = "".join(dag_lines)
    if new_dag != dag_path.read_text():
        atomic_write(dag_path, new_dag, durable=False)
        written.append(dag_path)
    atomic_write(directory / ADJUSTMENTS_FILE, json.dumps(state, indent=2, sort_keys=True))
    written.append(directory / ADJUSTMENTS_FILE)
    if state["nodes"]:
        log.info("%s: adjusted nodes %s", directory, ", ".join(sorted(state["nodes"])))
    return written
