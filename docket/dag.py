"""The DAGMan language subset docket's templates use, read into a plain model.

Parsing is separate from running so that rendering can check a DAG (undefined nodes,
duplicate names, missing submit files, cycles — things ``htcondor2`` does not check)
before anything is submitted, and the local engine runs exactly what was checked.
Every error names the file and line, as ``condor_submit_dag`` does.
"""

from __future__ import annotations

import re
import shlex
from collections import deque
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
    # VARS given with APPEND: set after the submit file is read, so they override it
    append_vars: set[str] = field(default_factory=set)
    retry: int = 0
    retry_unless_exit: int | None = None
    pre: Script | None = None
    post: Script | None = None
    pre_skip: int | None = None
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
    # the PARENT/CHILD lines as written: (parents, children, "file:line")
    edge_groups: list[tuple[list[str], list[str], str]] = field(default_factory=list)

    def edge_line(self, parent: str, child: str) -> str:
        """"file:line" of the PARENT/CHILD line that made an edge (for error messages)."""
        for parents, children, where in self.edge_groups:
            if parent in parents and child in children:
                return where
        return str(self.path)

    def topological(self) -> list[str]:
        order: list[str] = []
        indegree = {name: len(node.parents) for name, node in self.nodes.items()}
        ready = deque(n for n, d in indegree.items() if d == 0)
        while ready:
            name = ready.popleft()
            order.append(name)
            for child in sorted(self.nodes[name].children):
                indegree[child] -= 1
                if indegree[child] == 0:
                    ready.append(child)
        if len(order) != len(self.nodes):
            cycle = self._find_cycle({n for n, d in indegree.items() if d > 0})
            where = self.edge_line(cycle[0], cycle[1])
            raise DagError(f"{where}: the DAG has a cycle: {' -> '.join(cycle)}")
        return order

    def _find_cycle(self, stuck: set[str]) -> list[str]:
        # every stuck node has a stuck parent, so walking parents must revisit a node
        start = min(stuck)
        seen: list[str] = [start]
        current = start
        while True:
            current = min(p for p in self.nodes[current].parents if p in stuck)
            if current in seen:
                loop = seen[seen.index(current):] + [current]
                return list(reversed(loop))
            seen.append(current)


# A macro name, '=', then a double-quoted value in which \" and \\ are escapes.
_VAR = re.compile(r'\s*([A-Za-z_+][A-Za-z0-9_.+]*)\s*=\s*"((?:[^"\\]|\\.)*)"')
_UNSUPPORTED = {"SUBDAG", "SPLICE", "INCLUDE", "FINAL", "SERVICE", "PROVISIONER",
                "SUBMIT-DESCRIPTION"}
# Accepted and ignored: they change reporting or pool-side behaviour, not what runs.
_IGNORED = {"CONFIG", "DOT", "JOBSTATE_LOG", "SET_JOB_ATTR", "ENV", "REJECT",
            "SAVE_POINT_FILE", "CONNECT", "PIN_IN", "PIN_OUT"}
_PER_NODE = {"VARS", "RETRY", "SCRIPT", "ABORT-DAG-ON", "PRIORITY", "CATEGORY", "PRE_SKIP",
             "DONE"}
_RESERVED_NAMES = {"ALL_NODES", "PARENT", "CHILD"}


def _unescape(value: str) -> str:
    # DAGMan unescapes only \" and \\; any other backslash is kept as written
    if "\\" not in value:
        return value
    return re.sub(r'\\(["\\])', r"\1", value)


def _parse_vars(text: str, where: str) -> dict[str, str]:
    out: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        if not text[pos:].strip():
            break
        match = _VAR.match(text, pos)
        if not match:
            raise DagError(f"{where}: VARS must be name=\"value\" pairs (a value in double "
                           f"quotes, \\\" for a quote), near {text[pos:].strip()[:40]!r}")
        name = match[1]
        if name.lower().startswith("queue"):
            raise DagError(f"{where}: VARS name {name!r} may not begin with 'queue'")
        out[name] = _unescape(match[2])
        pos = match.end()
    if not out:
        raise DagError(f"{where}: VARS needs at least one name=\"value\" after the node")
    return out


def _split2(text: str) -> tuple[str, str]:
    """The first word and the rest (either may be empty)."""
    parts = text.split(None, 1)
    return (parts[0] if parts else "", parts[1] if len(parts) > 1 else "")


def _int(word: str, what: str, where: str) -> int:
    try:
        return int(word)
    except ValueError:
        raise DagError(f"{where}: {what} must be an integer, not {word!r}") from None


def parse_dag(text: str, path: Path) -> Dag:
    nodes: dict[str, Node] = {}
    edges: list[tuple[list[str], list[str], str]] = []
    maxjobs: dict[str, int] = {}
    status_file = None
    pending: list[tuple[str, str, str]] = []  # keyword, rest, where: applied after JOBs

    pathname = str(path)
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        where = f"{pathname}:{number}"
        if not line or line.startswith("#"):
            continue
        keyword, rest = _split2(line)
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "JOB":
            words = rest.split()
            if len(words) < 2:
                raise DagError(f"{where}: JOB needs a node name and a submit file")
            name, submit = words[0], words[1]
            if submit == "{" or submit.endswith("{"):
                raise DagError(f"{where}: inline submit descriptions are not supported by "
                               "docket's engines; put the description in a .sub file")
            if name.upper() in _RESERVED_NAMES:
                raise DagError(f"{where}: {name!r} is a reserved word, not a node name")
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
        elif keyword in _PER_NODE:
            pending.append((keyword, rest, where))
        elif keyword == "MAXJOBS":
            words = rest.split()
            if len(words) != 2 or not words[1].isdigit():
                raise DagError(f"{where}: MAXJOBS needs a category and a number")
            maxjobs[words[0]] = int(words[1])
        elif keyword == "NODE_STATUS_FILE":
            status_file = rest.split()[0] if rest else None
        elif keyword in _UNSUPPORTED:
            raise DagError(f"{where}: {keyword} is not supported by docket's engines")
        elif keyword in _IGNORED:
            continue
        else:
            raise DagError(f"{where}: unknown DAG command {keyword!r}")

    def node_of(name: str, where: str, all_nodes: bool = True) -> list[Node]:
        if name == "ALL_NODES" and all_nodes:
            return list(nodes.values())
        if name not in nodes:
            raise DagError(f"{where}: node {name!r} is not defined by a JOB line")
        return [nodes[name]]

    for parents, children, where in edges:
        for p in parents:
            node_of(p, where, all_nodes=False)
        for c in children:
            node_of(c, where, all_nodes=False)
        for p in parents:
            for c in children:
                if p == c:
                    raise DagError(f"{where}: the DAG has a cycle: {p} -> {p}")
                nodes[p].children.add(c)
                nodes[c].parents.add(p)
    for keyword, rest, where in pending:
        _apply(keyword, rest, where, node_of)
    if not nodes:
        raise DagError(f"{path}: the DAG has no JOB lines")
    dag = Dag(path, nodes, maxjobs, status_file, edges)
    dag.topological()  # raises on a cycle
    return dag


def _apply(keyword: str, rest: str, where: str, node_of) -> None:  # noqa: ANN001
    """Apply one per-node command (VARS, RETRY, SCRIPT, ...) once every JOB is known."""
    words = rest.split()
    if not words:
        raise DagError(f"{where}: {keyword} needs a node name")
    if keyword == "VARS":
        name, assignments = _split2(rest)
        mode, tail = _split2(assignments)
        append = mode.upper() == "APPEND"
        if mode.upper() in ("APPEND", "PREPEND"):
            assignments = tail
        values = _parse_vars(assignments, where)
        for node in node_of(name, where):
            node.vars.update(values)
            if append:
                node.append_vars.update(values)
            else:
                node.append_vars.difference_update(values)
    elif keyword == "RETRY":
        if len(words) < 2:
            raise DagError(f"{where}: RETRY needs a node and a number")
        count = _int(words[1], "the RETRY count", where)
        unless = None
        if len(words) == 4 and words[2].upper() == "UNLESS-EXIT":
            unless = _int(words[3], "the UNLESS-EXIT value", where)
        elif len(words) > 2:
            raise DagError(f"{where}: RETRY options are 'UNLESS-EXIT value'")
        for node in node_of(words[0], where):
            node.retry, node.retry_unless_exit = count, unless
    elif keyword == "SCRIPT":
        try:
            words = shlex.split(rest)
        except ValueError as exc:
            raise DagError(f"{where}: SCRIPT line cannot be read: {exc}") from None
        while words and words[0].upper() in ("DEFER", "DEBUG"):
            words = words[3:]  # DEFER status time / DEBUG file type: not used locally
        if len(words) < 3 or words[0].upper() not in ("PRE", "POST", "HOLD"):
            raise DagError(f"{where}: SCRIPT needs PRE, POST or HOLD, a node and an "
                           "executable")
        kind = words[0].lower()
        for node in node_of(words[1], where):
            if kind != "hold":  # HOLD scripts are best-effort notices; holds end a local job
                setattr(node, kind, Script(words[2], words[3:]))
    elif keyword == "PRE_SKIP":
        if len(words) != 2:
            raise DagError(f"{where}: PRE_SKIP needs a node and an exit code")
        value = _int(words[1], "the PRE_SKIP exit code", where)
        for node in node_of(words[0], where):
            node.pre_skip = value
    elif keyword == "ABORT-DAG-ON":
        if len(words) not in (2, 4) or (len(words) == 4 and words[2].upper() != "RETURN"):
            raise DagError(f"{where}: ABORT-DAG-ON needs a node, an exit value and "
                           "optionally RETURN value")
        value = _int(words[1], "the ABORT-DAG-ON exit value", where)
        ret = _int(words[3], "the RETURN value", where) if len(words) == 4 else None
        for node in node_of(words[0], where):
            node.abort_on = (value, ret)
    elif keyword == "PRIORITY":
        if len(words) != 2:
            raise DagError(f"{where}: PRIORITY needs a node and a number")
        prio = _int(words[1], "PRIORITY", where)
        for node in node_of(words[0], where):
            node.priority = prio
    elif keyword == "CATEGORY":
        if len(words) != 2:
            raise DagError(f"{where}: CATEGORY needs a node and a category name")
        for node in node_of(words[0], where):
            node.category = words[1]
    elif keyword == "DONE":  # as written in a rescue DAG
        for name in words:
            for node in node_of(name, where, all_nodes=False):
                node.done = True


def read_dag(path: Path) -> Dag:
    try:
        text = path.read_text()
    except UnicodeDecodeError as exc:
        raise DagError(f"{path}: not a text file ({exc.reason} at byte {exc.start})") from None
    return parse_dag(text, path)
