"""``docket inspect``: get into a running (or failed) workflow.

Everything a DA needs at once: where the processing directory is, each node's state with
its engine, site, host, attempts, exit and hold reason, the last lines of every failing
node's stdout and stderr (found through the node's submit file, as HTCondor would name
them), the failure policy's verdict (the one recorded, once the watcher has decided), and
for HTCondor the exact commands to run next: ``condor_q -better-analyze`` and
``condor_ssh_to_job`` while the DAG runs, ``condor_history`` once it has ended (``condor_q``
shows nothing then). The DAGMan cluster named is the one submitted last (after a policy
resubmission, the one running now). It reads the database read-only and the processing
directory's files; it never writes and never contacts a daemon.
"""

from __future__ import annotations

import contextlib
import json
from collections import deque
from pathlib import Path
from typing import Any

from docket.errors import Invalid, NotFound
from docket.home import Home
from docket.policy import attempts_by_rule, decide, failure_from_node, host_name, load_policy
from docket.quoting import quote
from docket.records import EngineState
from schemas.policy import FailurePolicy

__all__ = ["inspect_request", "tail_lines", "condor_commands", "FAILING_STATES"]

FAILING_STATES = ("failed", "held")
WORKFLOW_FILE = "workflow.dag"
MAX_PROCS_SHOWN = 4


def tail_lines(path: Path, lines: int) -> list[str] | None:
    """The last ``lines`` lines of a text file (None when it cannot be read)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 256 * 1024))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    return list(deque(text.splitlines(), maxlen=lines))


def _node_streams(directory: Path, node: str, cluster: int | None) -> tuple[
        str | None, list[tuple[int, Path | None, Path | None]], str | None]:
    """(submit file, [(proc, stdout, stderr)], problem) for ``node``, as its submit file
    names them with the DAG's VARS and the node's cluster applied."""
    from docket.dag import DagError, read_dag
    from docket.submit import expand_submit

    try:
        dag = read_dag(directory / WORKFLOW_FILE)
    except (DagError, OSError) as exc:
        return None, [], f"cannot read the DAG: {exc}"
    spec = dag.nodes.get(node)
    if spec is None:
        return None, [], f"node {node} is not in {WORKFLOW_FILE}"
    folder = directory / spec.directory if spec.directory else directory
    submit = folder / spec.submit_file
    try:
        # as the runner reads it: from the node's directory, inline descriptions too
        procs = expand_submit(submit, node, spec.vars, cluster or 0,
                              append_vars=spec.append_vars, cwd=folder,
                              text=spec.inline_submit)
    except (Invalid, OSError) as exc:
        return str(submit), [], f"cannot read the submit file: {exc}"

    def where(value: str | None, base: Path) -> Path | None:
        if not value or value == "/dev/null":
            return None
        path = Path(value)
        return path if path.is_absolute() else base / path

    streams = [(p.proc, where(p.output, p.initialdir), where(p.error, p.initialdir))
               for p in procs[:MAX_PROCS_SHOWN]]
    return str(submit), streams, None


def _policy(home: Home, capability: str) -> FailurePolicy | None:
    """The capability's failure policy (the default one unless it names another)."""
    from docket.capabilities import CapabilityError, load_capability

    spec = None
    with contextlib.suppress(CapabilityError, OSError):
        spec = getattr(load_capability(home.templates, capability).definition,
                       "failure_policy", None)
    try:
        return load_policy(home.templates, spec)
    except Invalid:
        return None


def _summary(n: dict[str, Any]) -> str:
    """One line on how a node stands: held (code/subcode): reason, killed by signal, ..."""
    if n["hold_reason"] is not None or n["hold_code"] is not None:
        what = "held" if n["state"] == "held" else "held, then removed"
        return f"{what} (code {n['hold_code']}/{n['hold_subcode']}): {n['hold_reason']}"
    if n["signal"] is not None:
        return f"killed by signal {n['signal']}"
    if n["exit_code"] not in (None, 0):
        said = n["reason"] and f"exited with {n['exit_code']}" not in n["reason"]
        return f"exited with {n['exit_code']}" + (f": {n['reason']}" if said else "")
    return n["state"] + (f": {n['reason']}" if n["reason"] else "")


def condor_commands(engine_id: str | None, nodes: list[dict[str, Any]],
                    schedd: str | None = None, collector: str | None = None,
                    ended: bool = False) -> list[dict[str, str]]:
    """The commands to run next against the pool, exact and ready to paste: the queue's
    while the DAG runs, the schedd's history once it has ended."""
    from docket.engines.htcondor import parse_engine_id

    target = ""
    dagman = None
    if engine_id:
        with contextlib.suppress(Invalid):
            name, dagman = parse_engine_id(engine_id)
            schedd = schedd or (None if name == "local" else name)
    if schedd:
        target += f" -name {quote(schedd, 'shell')}"
    if collector:
        target += f" -pool {quote(collector, 'shell')}"
    out = []
    if ended:
        if dagman is not None:
            out.append({"what": "the DAGMan job, from the schedd's history",
                        "command": f"condor_history{target} {dagman}"})
            constraint = quote(f"DAGManJobId == {dagman}", "shell")
            out.append({"what": "the DAG's node jobs, from the schedd's history",
                        "command": f"condor_history{target} -constraint {constraint}"})
        for n in nodes:
            if n.get("cluster") is not None and n["state"] in FAILING_STATES:
                out.append({"node": n["node"],
                            "what": f"node {n['node']}'s job as it ended (exit, hold reason)",
                            "command": f"condor_history{target} -l {n['cluster']}"})
        return out
    if dagman is not None:
        out.append({"what": "the DAG's jobs, node by node",
                    "command": f"condor_q{target} -nobatch -dag {dagman}"})
    for n in nodes:
        cluster = n.get("cluster")
        if cluster is None:
            continue
        if n["state"] in ("held", "idle"):
            out.append({"node": n["node"],
                        "what": f"why node {n['node']} is {n['state']}",
                        "command": f"condor_q{target} -better-analyze {cluster}"})
        if n["state"] == "held":
            out.append({"node": n["node"], "what": f"release node {n['node']} as it is",
                        "command": f"condor_release{target} {cluster}"})
        if n["state"] == "running":
            out.append({"node": n["node"], "what": f"a shell beside node {n['node']}'s job",
                        "command": f"condor_ssh_to_job{target} {cluster}.0"})
    return out


def _current_engine_id(directory: Path | None, recorded: str | None) -> str | None:
    """The DAGMan job the HTCondor engine submitted last (its ``<dag>.condor.json``): a
    policy retry or a resume submits a new one, which the execution row does not name."""
    if directory is None:
        return recorded
    with contextlib.suppress(OSError, ValueError):
        record = json.loads((directory / f"{WORKFLOW_FILE}.condor.json").read_text())
        if record.get("engine_id"):
            return str(record["engine_id"])
    return recorded


def inspect_request(home: Home, name: str, execution: int | None = None,
                    lines: int = 20) -> dict[str, Any]:
    """Everything ``docket inspect NAME`` shows, as one plain dict."""
    from docket.store import Store

    store = Store.open_readonly(home.database)
    try:
        request = store.request(name)
        if request is None:
            raise NotFound(f"no request named {name!r}", "see 'docket status' for the names")
        row = store.execution_for(name, execution, request.current_execution)
        if row is None:
            raise NotFound(f"request {name!r} has no execution"
                           + (f" {execution}" if execution is not None else ""),
                           "see 'docket show NAME' for its executions")
        nodes = store.node_rows(row.id, cluster=True)
        # the nodes table keeps the latest reason (a removal's, after a hold); the hold's
        # own words are in its event
        held_reasons = {}
        decisions = []  # recorded as 'policy.decided' events: {node, action, rule_index, ...}
        # the watcher's own verdict on the failure a node shows now (made at the DAG's end)
        decided: dict[str, dict[str, Any]] = {}
        for event in store.events(executions=[e.id for e in store.executions(name)],
                                  types=("node.held", "policy.decided")):
            data = event["data"]
            if event["type"] == "policy.decided":
                decisions.append(data)
                if (event["execution"] == row.id and data.get("attempt") is not None
                        and int(data["attempt"]) >= int(row.retries or 0)):
                    decided[data.get("node")] = data
            elif event["execution"] == row.id:
                held_reasons[data.get("node")] = data.get("reason")
    finally:
        store.close()
    directory = Path(row.directory) if row.directory else None
    engine = row.engine or None
    for n in nodes:
        n["engine"] = engine
        n["site"] = row.site
        n["host_name"] = host_name(n["host"])
        # a hold explains the node only if the job did not end by itself afterwards
        holds = n["hold_code"] is not None and (
            n["state"] == "held" or (n["state"] == "failed" and n["exit_code"] is None
                                     and n["signal"] is None))
        n["hold_reason"] = (held_reasons.get(n["node"]) or n["reason"]) if holds else None
        if not holds:
            n["hold_code"] = n["hold_subcode"] = None
        n["summary"] = _summary(n)
    policy = _policy(home, request.capability)
    failing = []
    for n in nodes:
        if n["state"] not in FAILING_STATES and not (n["exit_code"] or n["signal"]):
            continue
        item: dict[str, Any] = {"node": n["node"], "state": n["state"], "reason": n["reason"],
                                "summary": n["summary"]}
        if directory is None:
            item["problem"] = "the execution has no processing directory yet"
        else:
            submit, streams, problem = _node_streams(directory, n["node"], n["cluster"])
            item["submit_file"] = submit
            if problem:
                item["problem"] = problem
            item["procs"] = [
                {"proc": proc,
                 "stdout": {"path": str(out) if out else None,
                            "lines": tail_lines(out, lines) if out else None},
                 "stderr": {"path": str(err) if err else None,
                            "lines": tail_lines(err, lines) if err else None}}
                for proc, out, err in streams]
        if n["node"] in decided:
            keys = ("action", "rule_index", "rule", "delay_s", "adjustments", "reason")
            item["policy"] = {k: decided[n["node"]].get(k) for k in keys}
            item["policy"]["decided"] = True
        elif directory is not None and policy is not None:
            failure = failure_from_node({**n, "reason": n["hold_reason"] or n["reason"]},
                                        directory, policy)
            item["policy"] = {**decide(failure, policy,
                                       attempts_by_rule(decisions, n["node"])).as_dict(),
                              "decided": False}
        failing.append(item)
    commands: list[dict[str, str]] = []
    collector = schedd = None
    dagman: dict[str, Any] | None = None
    engine_id = row.engine_id
    if engine == "htcondor":
        engine_id = _current_engine_id(directory, row.engine_id)
        with contextlib.suppress(Invalid):
            from docket.sites import load_sites
            from schemas.sites import ScheddLocation

            for site in load_sites(home.root).sites:
                if site.name == row.site and isinstance(site.schedd, ScheddLocation):
                    collector, schedd = site.schedd.collector, site.schedd.name
        if directory is not None:
            from docket.engines.htcondor import HTCondorEngine

            with contextlib.suppress(Exception):  # a log caught mid-write: shown next time
                dagman = HTCondorEngine().job_state(directory / WORKFLOW_FILE)
                # docket pause: DAGMan's halt file (no new node job; running ones finish)
                dagman["paused"] = (directory / f"{WORKFLOW_FILE}.halt").exists()
        ended = row.engine_state == EngineState.DONE or (
            dagman is not None and dagman["state"] in ("terminated", "aborted"))
        commands = condor_commands(engine_id, nodes, schedd, collector, ended)
    files = {}
    if directory is not None:
        dag = directory / WORKFLOW_FILE
        for label, suffix in (("dagman_out", "dagman.out"), ("nodes_log", "nodes.log"),
                              ("dagman_log", "dagman.log"),
                              ("metrics", "metrics"), ("node_status", "status"),
                              ("adjustments", None)):
            path = (directory / "adjustments.json" if suffix is None
                    else dag.with_name(f"{dag.name}.{suffix}"))
            if path.exists():
                files[label] = str(path)
    adjustments = None
    if directory is not None:
        with contextlib.suppress(OSError, ValueError):
            adjustments = json.loads((directory / "adjustments.json").read_text())
    return {"request": name, "capability": request.capability,
            "request_state": request.state,
            "execution": {"id": row.id, "number": row.number, "version": row.version,
                          "state": row.state, "engine": engine, "site": row.site,
                          "engine_id": engine_id, "engine_state": row.engine_state.value,
                          "directory": str(directory) if directory else None,
                          "started": row.started, "stopped": row.stopped,
                          "exit_code": row.exit_code, "reason": row.reason},
            "dagman": dagman, "nodes": nodes, "failing": failing, "commands": commands,
            "files": files,
            "adjustments": adjustments}
