"""The DAGMan language subset docket's templates use, read into a plain model.

Parsing is separate from running so that rendering can check a DAG (undefined nodes,
duplicate names, missing submit files, cycles — things ``htcondor2`` does not check)
before anything is submitted, and the local engine runs exactly what was checked.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Dag", "Node", "Script", "DagError", "parse_dag", "read_dag"]


class DagError(Exception):
    """A DAG file that DAGMan would refuse; the message names the line."""


@dataclass
class Script:
    executable: str
    arguments: list[str]


@dataclass
class Node:
    name: str
    submit_file: str
    directory: str | None = None
    noop: bool = False
    done: bool = False
    vars: dict[str, str] = field(default_factory=dict)
    retry: int = 0
    retry_unless_exit: int | None = None
    pre: Script | None = None
    post: Script | None = None
    abort_on: tuple[int, int | None] | None = None  # (exit value, DAG return value)
    priority: int = 0
    category: str | None = None
    parents: set[str] = field(default_factory=set)
    children: set[str] = field(default_factory=set)


@dataclass
class Dag:
    path: Path
    nodes: dict[str, Node]
    maxjobs: dict[str, int] = field(default_factory=dict)
    node_status_file: str | None = None

    def topological(self) -> list[str]:
        order: list[str] = []
        indegree = {name: len(node.parents) for name, node in self.nodes.items()}
        ready = sorted(n for n, d in indegree.items() if d == 0)
        while ready:
            name = ready.pop(0)
            order.append(name)
            for child in sorted(self.nodes[name].children):
                indegree[child] -= 1
                if indegree[child] == 0:
                    ready.append(child)
        if len(order) != len(self.nodes):
            stuck = sorted(n for n, d in indegree.items() if d > 0)
            raise DagError(f"{self.path}: the DAG has a cycle through {', '.join(stuck[:5])}")
        return order


_VAR = re.compile(r'\s*([A-Za-z_+][A-Za-z0-9_.+]*)\s*=\s*"((?:[^"\\]|\\.)*)"')
_IGNORED = {"CONFIG", "DOT", "JOBSTATE_LOG", "SET_JOB_ATTR", "ENV", "REJECT", "SAVE_POINT_FILE",
            "INCLUDE", "SPLICE", "SUBDAG", "FINAL", "PROVISIONER", "SERVICE", "CONNECT",
            "PIN_IN", "PIN_OUT", "PRE_SKIP", "DONE"}


def _parse_vars(text: str, where: str) -> dict[str, str]:
    out: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        if not text[pos:].strip():
            break
        match = _VAR.match(text, pos)
        if not match:
            raise DagError(f"{where}: VARS must be key=\"value\" pairs, near {text[pos:][:40]!r}")
        out[match[1]] = re.sub(r"\\(.)", r"\1", match[2])
        pos = match.end()
    return out


def parse_dag(text: str, path: Path) -> Dag:
    nodes: dict[str, Node] = {}
    edges: list[tuple[list[str], list[str], str]] = []
    maxjobs: dict[str, int] = {}
    status_file = None
    pending: list[tuple[str, str, str]] = []  # keyword, rest, where: applied after JOBs

    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        where = f"{path}:{number}"
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "JOB":
            words = rest.split()
            if len(words) < 2:
                raise DagError(f"{where}: JOB needs a node name and a submit file")
            name, submit = words[0], words[1]
            if name in nodes:
                raise DagError(f"{where}: node {name!r} is defined twice")
            node = Node(name, submit)
            extra = [w.upper() for w in words[2:]]
            i = 0
            while i < len(extra):
                if extra[i] == "DIR" and i + 1 < len(extra):
                    node.directory = words[2 + i + 1]
                    i += 2
                elif extra[i] in ("NOOP", "DONE"):
                    setattr(node, extra[i].lower(), True)
                    i += 1
                else:
                    raise DagError(f"{where}: unknown JOB option {words[2 + i]!r}")
            nodes[name] = node
        elif keyword == "PARENT":
            upper = rest.upper().split()
            if "CHILD" not in upper:
                raise DagError(f"{where}: PARENT needs CHILD")
            words = rest.split()
            split = upper.index("CHILD")
            parents, children = words[:split], words[split + 1:]
            if not parents or not children:
                raise DagError(f"{where}: PARENT ... CHILD ... needs nodes on both sides")
            edges.append((parents, children, where))
        elif keyword in ("VARS", "RETRY", "SCRIPT", "ABORT-DAG-ON", "PRIORITY", "CATEGORY"):
            pending.append((keyword, rest, where))
        elif keyword == "MAXJOBS":
            words = rest.split()
            if len(words) != 2 or not words[1].isdigit():
                raise DagError(f"{where}: MAXJOBS needs a category and a number")
            maxjobs[words[0]] = int(words[1])
        elif keyword == "NODE_STATUS_FILE":
            status_file = rest.split()[0] if rest else None
        elif keyword in _IGNORED:
            if keyword in ("SUBDAG", "SPLICE", "INCLUDE", "FINAL", "SERVICE", "PROVISIONER"):
                raise DagError(f"{where}: {keyword} is not supported by docket's engines")
        else:
            raise DagError(f"{where}: unknown DAG command {keyword!r}")

    def node_of(name: str, where: str) -> list[Node]:
        if name == "ALL_NODES":
            return list(nodes.values())
        if name not in nodes:
            raise DagError(f"{where}: node {name!r} is not defined by a JOB line")
        return [nodes[name]]

    for parents, children, where in edges:
        for p in parents:
            for c in children:
                node_of(p, where)
                node_of(c, where)
                nodes[p].children.add(c)
                nodes[c].parents.add(p)
    for keyword, rest, where in pending:
        if keyword == "VARS":
            name, _, assignments = rest.partition(" ")
            for node in node_of(name, where):
                node.vars.update(_parse_vars(assignments, where))
        elif keyword == "RETRY":
            words = rest.split()
            if len(words) < 2 or not words[1].isdigit():
                raise DagError(f"{where}: RETRY needs a node and a number")
            unless = None
            if len(words) >= 4 and words[2].upper() == "UNLESS-EXIT":
                unless = int(words[3])
            elif len(words) > 2:
                raise DagError(f"{where}: RETRY options are 'UNLESS-EXIT value'")
            for node in node_of(words[0], where):
                node.retry, node.retry_unless_exit = int(words[1]), unless
        elif keyword == "SCRIPT":
            words = shlex.split(rest)
            if words and words[0].upper() == "DEFER":
                words = words[3:]
            if len(words) < 3 or words[0].upper() not in ("PRE", "POST"):
                raise DagError(f"{where}: SCRIPT needs PRE or POST, a node and an executable")
            for node in node_of(words[1], where):
                setattr(node, words[0].lower(), Script(words[2], words[3:]))
        elif keyword == "ABORT-DAG-ON":
            words = rest.split()
            try:
                value = int(words[1])
                ret = int(words[3]) if len(words) >= 4 and words[2].upper() == "RETURN" else None
            except (IndexError, ValueError):
                raise DagError(f"{where}: ABORT-DAG-ON needs a node and an exit value") from None
            for node in node_of(words[0], where):
                node.abort_on = (value, ret)
        elif keyword == "PRIORITY":
            words = rest.split()
            try:
                prio = int(words[1])
            except (IndexError, ValueError):
                raise DagError(f"{where}: PRIORITY needs a node and a number") from None
            for node in node_of(words[0], where):
                node.priority = prio
        elif keyword == "CATEGORY":
            words = rest.split()
            if len(words) != 2:
                raise DagError(f"{where}: CATEGORY needs a node and a category name")
            for node in node_of(words[0], where):
                node.category = words[1]
    if not nodes:
        raise DagError(f"{path}: the DAG has no JOB lines")
    dag = Dag(path, nodes, maxjobs, status_file)
    dag.topological()  # raises on a cycle
    return dag


def read_dag(path: Path) -> Dag:
    return parse_dag(path.read_text(), path)
