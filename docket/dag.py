"""DAGMan's DAG language, read into a plain model.

Parsing is separate from running so that rendering can check a DAG (undefined nodes,
duplicate names, missing submit files, cycles — things ``htcondor2`` does not check)
before anything is submitted, and the local engine runs exactly what was checked.
Every error names the file and line, as ``condor_submit_dag`` does. ``check_dag`` is that
check for rendering: the same verdicts as ``parse_dag``, without keeping the model.

What the parser does that DAGMan's parser does (src/condor_dagman/parse.cpp and the
manual's "DAGMan Workflows" chapter): a line ending in ``\\`` continues on the next;
``INCLUDE`` reads another file as if it were inline; ``SPLICE`` reads another DAG and
merges its nodes as ``splice+node`` (a PARENT/CHILD naming a splice means its initial or
final nodes, ``CONNECT`` joins ``PIN_OUT`` to ``PIN_IN``); ``JOB name { ... }`` and
``SUBMIT-DESCRIPTION`` carry a submit description inline; node names with ``+`` and the
reserved words are refused; ``ALL_NODES`` applies a command to every node but the FINAL
one; ``CONFIG`` files are read for the knobs the runner honours.
"""

from __future__ import annotations

import gc
import re
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Dag", "Node", "Script", "DagError", "DagCycle", "DagSummary", "check_dag",
           "parse_dag", "read_dag", "read_dag_text", "read_config", "SCHEDD_ONLY_COMMANDS"]


class DagError(Exception):
    """A DAG file that DAGMan would refuse; the message names the line."""


class DagCycle(DagError):
    """The DAG's dependencies form a cycle."""


@dataclass
class Script:
    executable: str
    arguments: list[str]
    # SCRIPT DEFER status time: an exit with ``status`` runs the script again later
    defer: tuple[int, float] | None = None


@dataclass
class Node:
    name: str
    submit_file: str
    directory: str | None = None
    noop: bool = False
    done: bool = False
    final: bool = False
    # SUBDAG EXTERNAL: the node's job is this DAG file, run by a nested runner
    subdag: str | None = None
    # JOB name { ... } or a SUBMIT-DESCRIPTION: the submit text itself
    inline_submit: str | None = None
    vars: dict[str, str] = field(default_factory=dict)
    # VARS given with APPEND (or by DAGMAN_DEFAULT_APPEND_VARS): set after the submit
    # file is read, so they override it
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
    where: str = ""  # "file:line" of its JOB line
    # VARS mode as written, resolved into append_vars once CONFIG is known
    _var_modes: dict[str, str] = field(default_factory=dict, repr=False)


@dataclass
class Dag:
    path: Path
    nodes: dict[str, Node]
    maxjobs: dict[str, int] = field(default_factory=dict)
    node_status_file: str | None = None
    node_status_interval_s: float = 60.0
    node_status_always: bool = False
    # the PARENT/CHILD lines as written: (parents, children, "file:line")
    edge_groups: list[tuple[list[str], list[str], str]] = field(default_factory=list)
    config: dict[str, str] = field(default_factory=dict)
    config_file: str | None = None
    config_error: str | None = None  # a CONFIG file that cannot be read stops a run
    jobstate_log: str | None = None
    dot_file: str | None = None
    dot_update: bool = False
    job_attrs: dict[str, str] = field(default_factory=dict)
    reject: str | None = None  # "file:line" of a REJECT
    final: str | None = None  # the FINAL node's name
    pins_in: dict[int, list[str]] = field(default_factory=dict)
    pins_out: dict[int, list[str]] = field(default_factory=dict)
    # commands the local engine cannot honour, with where they were: for ``dag check``
    schedd_only: list[str] = field(default_factory=list)

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
            children = self.nodes[name].children
            for child in (sorted(children) if len(children) > 1 else children):
                indegree[child] -= 1
                if indegree[child] == 0:
                    ready.append(child)
        if len(order) != len(self.nodes):
            cycle = self._find_cycle({n for n, d in indegree.items() if d > 0})
            where = self.edge_line(cycle[0], cycle[1])
            raise DagCycle(f"{where}: the DAG has a cycle: {' -> '.join(cycle)}")
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

    def knob(self, name: str, default: str = "") -> str:
        """A DAGMan configuration value from the DAG's CONFIG file."""
        return self.config.get(name.upper(), default)

    def flag(self, name: str, default: bool = False) -> bool:
        value = self.knob(name).strip().lower()
        if not value:
            return default
        return value in ("true", "t", "yes", "1")

    def number(self, name: str, default: int) -> int:
        try:
            return int(self.knob(name).strip())
        except ValueError:
            return default


# A macro name, '=', then a double-quoted value in which \" and \\ are escapes.
_VAR = re.compile(r'\s*([A-Za-z_+][A-Za-z0-9_.+]*)\s*=\s*"((?:[^"\\]|\\.)*)"')
# The common VARS line: a node, then name="value" pairs with no spaces around '='. Read
# with it, a line means what _parse_vars reads: the first pair cannot be a mode (APPEND
# and PREPEND are followed by a space), and each pair has one way to match.
_PAIR_TEXT = r'\s+([A-Za-z_+][A-Za-z0-9_.+]*)="((?:[^"\\]|\\.)*)"'
_SIMPLE_VARS = re.compile(r'(\S+)((?:' + _PAIR_TEXT + r')+)\s*')
_PAIR = re.compile(_PAIR_TEXT)
# Lines joined by newlines (which no line holds), each of them one _SIMPLE_VARS matches:
# the same pattern with no newline inside a line (not even in a value)
_IN_LINE = r'[^\S\n]+[A-Za-z_+][A-Za-z0-9_.+]*="[^"\\\n]*(?:\\.[^"\\\n]*)*"'
_SIMPLE_VARS_LINES = re.compile(rf"\S+(?:{_IN_LINE})+[^\S\n]*(?:\n\S+(?:{_IN_LINE})+[^\S\n]*)*")
_FIRST_WORDS = re.compile(r"^[^\s]+", re.MULTILINE)
# Need a schedd or a pool: accepted, and 'docket dag check' names them.
_SCHEDD_ONLY = {"SERVICE", "PROVISIONER", "ENV", "SAVE_POINT_FILE"}
SCHEDD_ONLY_COMMANDS = frozenset(_SCHEDD_ONLY)
_PER_NODE = {"VARS", "RETRY", "SCRIPT", "ABORT-DAG-ON", "PRIORITY", "CATEGORY", "PRE_SKIP",
             "DONE"}
# parse.cpp refuses these as node names (DAG::RESERVED), and '+' (the splice separator)
_RESERVED_NAMES = {"ALL_NODES", "PARENT", "CHILD", "SUBDAG", "SPLICE", "FINAL"}
_ILLEGAL_CHAR = "+"


def _unescape(value: str) -> str:
    # DAGMan unescapes only \" and \\; any other backslash is kept as written
    if "\\" not in value:
        return value
    return re.sub(r'\\(["\\])', r"\1", value)


def _parse_vars(text: str, where: str) -> dict[str, str]:
    out: dict[str, str] = {}
    pos = 0
    end = len(text.rstrip())  # what is left after ``end`` is blank
    while pos < end:
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


def read_config(path: Path) -> dict[str, str]:
    """A DAGMan CONFIG file: ``NAME = value`` lines (names case-blind, later lines win)."""
    out: dict[str, str] = {}
    text = path.read_text()
    for raw in text.replace("\\\n", " ").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.partition("=")
        out[name.strip().upper()] = value.strip()
    return out


def _parent_child(rest: str, where: str) -> tuple[list[str], list[str]]:
    """The parents and the children a ``PARENT ... CHILD ...`` line names."""
    upper = rest.upper().split()
    if "CHILD" not in upper:
        raise DagError(f"{where}: PARENT needs CHILD")
    words = rest.split()
    split = upper.index("CHILD")
    parents, children = words[:split], words[split + 1:]
    if not parents or not children:
        raise DagError(f"{where}: PARENT ... CHILD ... needs nodes on both sides")
    return parents, children


def _check_name(name: str, where: str) -> None:
    if name.upper() in _RESERVED_NAMES:
        raise DagError(f"{where}: node name {name!r} is a reserved word")
    if _ILLEGAL_CHAR in name:
        raise DagError(f"{where}: node name {name!r} contains illegal character '+'")


class _Parser:
    """One DAG file (with its INCLUDEs); a SPLICE is parsed by a parser of its own."""

    def __init__(self, path: Path, base: Path, depth: int = 0, keep_vars: bool = True) -> None:
        self.path = path
        self.base = base  # the directory relative paths in the DAG are read from
        self.depth = depth
        self.keep_vars = keep_vars  # False: VARS lines are checked, their values may go
        self.dag = Dag(path, {})
        self.edges: list[tuple[list[str], list[str], str]] = []
        self.pending: list[tuple[str, str, str]] = []  # per-node commands, applied last
        self.descriptions: dict[str, str] = {}  # SUBMIT-DESCRIPTION name -> text
        # splice name -> (initial nodes, final nodes, pins in, pins out)
        self.splices: dict[str, tuple[list[str], list[str], dict[int, list[str]],
                                      dict[int, list[str]]]] = {}
        self.connects: list[tuple[str, str, str]] = []

    # lines -------------------------------------------------------------------

    def lines(self, path: Path, text: str, seen: tuple[Path, ...] = ()):  # noqa: ANN201
        """(where, KEYWORD, rest, inline) for each command line, continuations joined
        and INCLUDEs read in place; ``inline`` is the body of a ``{ ... }`` block."""
        raw_lines = text.splitlines()
        count = len(raw_lines)
        prefix = f"{path}:"  # "file:line" is made for every line: keep it cheap
        i = 0
        while i < count:
            number = i + 1
            line = raw_lines[i]
            while line.endswith("\\") and i + 1 < count:
                i += 1
                line = line[:-1] + " " + raw_lines[i]
            i += 1
            stripped = line.strip()
            if not stripped or stripped[0] == "#":
                continue
            where = prefix + str(number)
            keyword, rest = _split2(stripped)
            keyword = keyword.upper()
            if keyword == "INCLUDE":
                target = self._file(rest.strip(), where, "INCLUDE")
                if target in seen or target == self.path:
                    raise DagError(f"{where}: INCLUDE {rest.strip()} includes itself")
                yield from self.lines(target, _read_text(target, where),
                                      (*seen, path))
                continue
            if stripped[-1] == "{" and keyword in ("JOB", "NODE", "FINAL",
                                                   "SUBMIT-DESCRIPTION"):
                body = []
                while i < len(raw_lines) and raw_lines[i].strip() != "}":
                    body.append(raw_lines[i])
                    i += 1
                if i >= len(raw_lines):
                    raise DagError(f"{where}: the inline submit description has no "
                                   "closing '}' line")
                i += 1
                _, rest = _split2(stripped[:-1].rstrip() + " {")
                yield where, keyword, rest, "\n".join(body) + "\n"
                continue
            yield where, keyword, rest, None

    def _file(self, name: str, where: str, what: str) -> Path:
        if not name:
            raise DagError(f"{where}: {what} needs a file name")
        path = Path(name)
        return path if path.is_absolute() else self.base / path

    # the parse ---------------------------------------------------------------

    def parse(self, text: str) -> Dag:
        dag = self.dag
        # the most common commands first: a big DAG is mostly JOB and VARS lines
        for where, keyword, rest, inline in self.lines(self.path, text):
            if keyword in ("JOB", "NODE", "FINAL"):
                self._node(keyword, rest, where, inline)
            elif keyword in _PER_NODE:
                self.pending.append((keyword, rest, where))
            elif keyword == "SUBDAG":
                self._subdag(rest, where)
            elif keyword == "SPLICE":
                self._splice(rest, where)
            elif keyword == "SUBMIT-DESCRIPTION":
                name = rest.split()[0] if rest.split() else ""
                if not name or inline is None:
                    raise DagError(f"{where}: SUBMIT-DESCRIPTION needs a name and "
                                   "{ ... }")
                self.descriptions[name] = inline
            elif keyword == "PARENT":
                self.edges.append((*_parent_child(rest, where), where))
            elif keyword == "MAXJOBS":
                words = rest.split()
                if len(words) != 2 or not words[1].isdigit():
                    raise DagError(f"{where}: MAXJOBS needs a category and a number")
                dag.maxjobs[words[0]] = int(words[1])
            elif keyword == "NODE_STATUS_FILE":
                words = rest.split()
                if not words:
                    raise DagError(f"{where}: NODE_STATUS_FILE needs a file name")
                dag.node_status_file = words[0]
                for word in words[1:]:
                    if word.upper() == "ALWAYS-UPDATE":
                        dag.node_status_always = True
                    else:
                        dag.node_status_interval_s = float(
                            _int(word, "the NODE_STATUS_FILE update time", where))
            elif keyword == "CONFIG":
                target = self._file(rest, where, "CONFIG")
                dag.config_file = str(target)
                try:
                    dag.config.update(read_config(target))
                except OSError as exc:
                    # checking a rendered DAG needs no CONFIG file; running it does
                    dag.config_error = (f"{where}: cannot read the CONFIG file {target}: "
                                        f"{exc.strerror}")
            elif keyword == "JOBSTATE_LOG":
                dag.jobstate_log = rest.split()[0] if rest else None
            elif keyword == "DOT":
                words = rest.split()
                if not words:
                    raise DagError(f"{where}: DOT needs a file name")
                dag.dot_file = words[0]
                dag.dot_update = any(w.upper() == "UPDATE" for w in words[1:])
            elif keyword == "SET_JOB_ATTR":
                name, _, value = rest.partition("=")
                if not name.strip() or not _:
                    raise DagError(f"{where}: SET_JOB_ATTR needs name = value")
                dag.job_attrs[name.strip()] = value.strip()
            elif keyword == "REJECT":
                dag.reject = dag.reject or where
            elif keyword in ("PIN_IN", "PIN_OUT"):
                words = rest.split()
                if len(words) != 2:
                    raise DagError(f"{where}: {keyword} needs a node and a pin number")
                pins = dag.pins_in if keyword == "PIN_IN" else dag.pins_out
                pins.setdefault(_int(words[1], "the pin number", where), []).append(
                    words[0])
            elif keyword == "CONNECT":
                words = rest.split()
                if len(words) != 2:
                    raise DagError(f"{where}: CONNECT needs two splice names")
                self.connects.append((words[0], words[1], where))
            elif keyword in _SCHEDD_ONLY:
                dag.schedd_only.append(f"{where}: {keyword}")
            else:
                raise DagError(f"{where}: unknown DAG command {keyword!r}")
        self._finish()
        return dag

    def _node(self, keyword: str, rest: str, where: str, inline: str | None) -> None:
        words = rest.split()
        if inline is not None:
            if words and words[-1] == "{":
                words = words[:-1]
            if len(words) < 1:
                raise DagError(f"{where}: {keyword} needs a node name")
            words = [words[0], "{inline}", *words[1:]]
        if len(words) < 2:
            raise DagError(f"{where}: {keyword} needs a node name and a submit file")
        name, submit = words[0], words[1]
        _check_name(name, where)
        node = Node(name, submit, where=where)
        if inline is not None:
            node.inline_submit = inline
        elif submit in self.descriptions:
            node.inline_submit = self.descriptions[submit]
        if len(words) > 2:
            self._options(node, words[2:], where, keyword)
        if keyword == "FINAL":
            if self.depth:
                raise DagError(f"{where}: a FINAL node cannot be in a splice")
            if self.dag.final is not None:
                raise DagError(f"{where}: the DAG already has a FINAL node "
                               f"({self.dag.final})")
            node.final = True
            self.dag.final = name
        self._add(node, where)

    def _options(self, node: Node, words: list[str], where: str, keyword: str) -> None:
        i = 0
        while i < len(words):
            word = words[i].upper()
            if word == "DIR" and i + 1 < len(words):
                node.directory = words[i + 1]
                i += 2
            elif word in ("NOOP", "DONE"):
                setattr(node, word.lower(), True)
                i += 1
            else:
                raise DagError(f"{where}: unknown {keyword} option {words[i]!r}")

    def _add(self, node: Node, where: str) -> None:
        if node.name in self.dag.nodes or node.name in self.splices:
            raise DagError(f"{where}: node {node.name!r} is defined twice")
        self.dag.nodes[node.name] = node

    def _subdag(self, rest: str, where: str) -> None:
        words = rest.split()
        if len(words) < 3 or words[0].upper() != "EXTERNAL":
            raise DagError(f"{where}: SUBDAG needs EXTERNAL, a node name and a DAG file")
        name, dag_file = words[1], words[2]
        _check_name(name, where)
        node = Node(name, dag_file, subdag=dag_file, where=where)
        self._options(node, words[3:], where, "SUBDAG")
        self._add(node, where)

    def _splice(self, rest: str, where: str) -> None:
        words = rest.split()
        if len(words) not in (2, 4) or (len(words) == 4 and words[2].upper() != "DIR"):
            raise DagError(f"{where}: SPLICE needs a name, a DAG file and optionally "
                           "DIR directory")
        name, dag_file = words[0], words[1]
        _check_name(name, where)
        if name in self.splices or name in self.dag.nodes:
            raise DagError(f"{where}: splice {name!r} is defined twice")
        directory = words[3] if len(words) == 4 else None
        base = self.base / directory if directory else self.base
        target = Path(dag_file) if Path(dag_file).is_absolute() else base / dag_file
        if self.depth > 20:
            raise DagError(f"{where}: splices nested too deep (does {dag_file} splice "
                           "itself?)")
        inner = _Parser(target, base, self.depth + 1, self.keep_vars)
        sub = inner.parse(_read_text(target, where))
        if sub.final:
            raise DagError(f"{where}: a FINAL node cannot be in a splice")
        prefix = f"{name}+"
        for old in sub.nodes.values():
            new = Node(**{**old.__dict__})
            new.name = prefix + old.name
            new.parents = {prefix + p for p in old.parents}
            new.children = {prefix + c for c in old.children}
            if directory:
                new.directory = str(Path(directory) / old.directory) if old.directory \
                    else directory
            if new.name in self.dag.nodes:
                raise DagError(f"{where}: node {new.name!r} is defined twice")
            self.dag.nodes[new.name] = new
        for category, limit in sub.maxjobs.items():
            self.dag.maxjobs.setdefault(category, limit)
        initial = [prefix + n for n, node in sub.nodes.items() if not node.parents]
        final = [prefix + n for n, node in sub.nodes.items() if not node.children]
        self.splices[name] = (
            initial, final,
            {k: [prefix + n for n in v] for k, v in sub.pins_in.items()},
            {k: [prefix + n for n in v] for k, v in sub.pins_out.items()})
        self.dag.schedd_only += sub.schedd_only

    # after every line ------------------------------------------------------

    def _resolve_all(self, names: list[str], where: str, as_parent: bool) -> list[str]:
        """The nodes ``names`` mean on one side of a PARENT/CHILD line."""
        if not self.splices:  # the common case, one check per name (fan-outs are wide)
            nodes = self.dag.nodes
            for name in names:
                if name not in nodes:
                    raise DagError(f"{where}: node {name!r} is not defined by a JOB line")
            return list(names)
        return [n for name in names for n in self._resolve(name, where, as_parent)]

    def _resolve(self, name: str, where: str, as_parent: bool) -> list[str]:
        if name in self.splices:
            initial, final, _, _ = self.splices[name]
            return final if as_parent else initial
        if name not in self.dag.nodes:
            raise DagError(f"{where}: node {name!r} is not defined by a JOB line")
        return [name]

    def _node_of(self, name: str, where: str, all_nodes: bool = True) -> list[Node]:
        nodes = self.dag.nodes
        if name == "ALL_NODES" and all_nodes:
            # parse.cpp: ALL_NODES does not include the FINAL node
            return [n for n in nodes.values() if not n.final]
        if name not in nodes:
            raise DagError(f"{where}: node {name!r} is not defined by a JOB line")
        return [nodes[name]]

    def _link(self, parents: list[str], children: list[str], where: str) -> None:
        """Every parent to every child."""
        nodes = self.dag.nodes
        final = self.dag.final  # the one node with .final (a splice can have none)
        if (final is None or (final not in parents and final not in children)) \
                and set(parents).isdisjoint(children):
            # nothing to refuse: whole sets at a time (a fan-out line names 100,000 nodes)
            for parent in parents:
                nodes[parent].children.update(children)
            for child in children:
                nodes[child].parents.update(parents)
            return
        for parent in parents:  # the same edges one at a time, to name the first problem
            up = nodes[parent]
            for child in children:
                if parent == child:
                    raise DagCycle(f"{where}: the DAG has a cycle: {parent} -> {parent}")
                down = nodes[child]
                if up.final or down.final:
                    raise DagError(f"{where}: a FINAL node cannot have parents or children")
                up.children.add(child)
                down.parents.add(parent)

    def _finish(self) -> None:
        dag = self.dag
        for parents, children, where in self.edges:
            ps = self._resolve_all(parents, where, True)
            cs = self._resolve_all(children, where, False)
            self._link(ps, cs, where)
            dag.edge_groups.append((ps, cs, where))
        for out_name, in_name, where in self.connects:
            if out_name not in self.splices or in_name not in self.splices:
                raise DagError(f"{where}: CONNECT joins two splices; "
                               f"{out_name if out_name not in self.splices else in_name!r}"
                               " is not one")
            pins_out = self.splices[out_name][3]
            pins_in = self.splices[in_name][2]
            if sorted(pins_out) != sorted(pins_in):
                raise DagError(f"{where}: CONNECT {out_name} {in_name}: the pins do not "
                               f"match (PIN_OUT {sorted(pins_out)}, PIN_IN "
                               f"{sorted(pins_in)})")
            for pin, outs in pins_out.items():
                self._link(outs, pins_in[pin], where)
                dag.edge_groups.append((outs, pins_in[pin], where))
        pending = self.pending
        if not self.keep_vars and _vars_cannot_fail(
                [rest for keyword, rest, _ in pending if keyword == "VARS"], dag.nodes):
            pending = [command for command in pending if command[0] != "VARS"]
        modes = {_apply(keyword, rest, where, self._node_of)
                 for keyword, rest, where in pending}
        default_append = dag.flag("DAGMAN_DEFAULT_APPEND_VARS")
        # VARS modes decide append_vars; with no APPEND written, no default to append
        # and no splice's nodes (which come with theirs), every node has none
        resolve = default_append or "append" in modes or bool(self.splices)
        for node in dag.nodes.values() if resolve else ():
            for key, mode in node._var_modes.items():
                if mode == "append" or (mode == "" and default_append):
                    node.append_vars.add(key)
                elif node.append_vars:  # (only a splice's nodes arrive with some)
                    node.append_vars.discard(key)
        if not dag.nodes:
            raise DagError(f"{self.path}: the DAG has no JOB lines")


def _read_text(path: Path, where: str) -> str:
    try:
        return path.read_text()
    except UnicodeDecodeError as exc:
        raise DagError(f"{path}: not a text file ({exc.reason} at byte {exc.start})") \
            from None
    except OSError as exc:
        raise DagError(f"{where}: cannot read {path}: {exc.strerror}") from None


def parse_dag(text: str, path: Path) -> Dag:
    """The DAG in ``text`` (read from ``path``), checked as DAGMan would."""
    with _collector_paused():
        dag = _Parser(path, path.parent).parse(text)
        dag.topological()  # raises on a cycle
    return dag


@dataclass(frozen=True)
class DagSummary:
    """What checking a rendered DAG needs to keep of it."""
    nodes: int
    # (DIR or None, submit file) of every node whose job condor_submit reads from a file
    submit_files: frozenset[tuple[str | None, str]]


def check_dag(text: str, path: Path) -> DagSummary:
    """``parse_dag``'s checks, every one, for a DAG that is then thrown away.

    Faster, because nothing is kept that the check does not need. A plain DAG (the
    shape templates render: see ``_plain_summary``) is checked in a few passes of the
    regex engine over the whole text. Any other goes through the parser, but when every
    VARS line is a plain ``node name="value" ...`` line naming a defined node (checked for
    all of them at once), their values are not read into the nodes; and the DAG is freed
    before the garbage collector is back on, so the collector never walks it."""
    plain = _plain_summary(text)
    if plain is not None:
        return plain
    with _collector_paused():
        dag = _Parser(path, path.parent, keep_vars=False).parse(text)
        dag.topological()  # raises on a cycle
        summary = DagSummary(len(dag.nodes), frozenset(
            (n.directory, n.submit_file) for n in dag.nodes.values()
            if not n.noop and n.inline_submit is None and n.subdag is None))
        del dag
    return summary


@contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while a DAG is read.

    A parse makes a few containers a node and no reference cycles, so the collector has
    nothing to free; left on, it walks the growing heap again and again (~40 % of the
    parse of a 100,000-node DAG). Memory is freed by reference counting as usual; the
    collector is back on (if it was on) as soon as the parse ends, error or not."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def _vars_cannot_fail(lines: list[str], nodes: dict[str, Node]) -> bool:
    """True if none of these VARS lines (each the text after ``VARS``) can be refused:
    every one is the common form ``_SIMPLE_VARS`` reads, names a node a JOB line
    defined, and no name begins with 'queue'. Checked for all the lines at once, in the
    regex engine; False (any doubt) means: apply them one by one."""
    text = "\n".join(lines)
    if "queue" in text.lower() or not _SIMPLE_VARS_LINES.fullmatch(text):
        return False
    return nodes.keys() >= set(_FIRST_WORDS.findall(text))


def _apply(keyword: str, rest: str, where: str, node_of) -> str:  # noqa: ANN001
    """Apply one per-node command (VARS, RETRY, SCRIPT, ...) once every JOB is known;
    return the mode a VARS line gave ("append", "prepend"), else ""."""
    if keyword == "VARS":  # one a node in most DAGs: no need to split all of it
        simple = _SIMPLE_VARS.fullmatch(rest)
        if simple and "queue" not in simple[2].lower():
            # the common line, read in two passes of the regex engine; anything else
            # (a mode, spaces around '=', a bad pair, a 'queue' name) takes the full way
            name, written = simple[1], ""
            pairs = _PAIR.findall(simple[2])
            values = dict(pairs) if "\\" not in rest else {
                key: _unescape(value) for key, value in pairs}
        else:
            name, assignments = _split2(rest)
            if not name:
                raise DagError(f"{where}: {keyword} needs a node name")
            mode, tail = _split2(assignments)
            written = mode.lower() if mode.upper() in ("APPEND", "PREPEND") else ""
            if written:
                assignments = tail
            values = _parse_vars(assignments, where)
        for node in node_of(name, where):
            node.vars.update(values)
            node._var_modes.update(dict.fromkeys(values, written))
        return written
    words = rest.split()
    if not words:
        raise DagError(f"{where}: {keyword} needs a node name")
    if keyword == "RETRY":
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
        # DAGMan splits a SCRIPT line on spaces and tabs and passes every word through
        # as written: no shell quoting, no backslash escapes
        defer = None
        while words and words[0].upper() in ("DEFER", "DEBUG"):
            if words[0].upper() == "DEFER":
                if len(words) < 3:
                    raise DagError(f"{where}: SCRIPT DEFER needs a status and a time")
                defer = (_int(words[1], "the DEFER status", where),
                         float(_int(words[2], "the DEFER time", where)))
            words = words[3:]  # DEBUG file type: script output is not captured here
        if len(words) < 3 or words[0].upper() not in ("PRE", "POST", "HOLD"):
            raise DagError(f"{where}: SCRIPT needs PRE, POST or HOLD, a node and an "
                           "executable")
        kind = words[0].lower()
        for node in node_of(words[1], where):
            if kind != "hold":  # HOLD scripts are best-effort notices; holds end a local job
                setattr(node, kind, Script(words[2], words[3:], defer))
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
    return ""


# A plain DAG: every line blank, a comment, or one of these four, keyword in capitals,
# words apart by spaces or tabs. (No continuation and no line separator but '\n': the
# parser would read other lines than these patterns see.)
_PLAIN_LINE = "|".join((  # the most common first
    r"VARS[ \t]+\S+(?:" + _IN_LINE.replace(r"[^\S\n]", r"[ \t]") + r")+[ \t]*",
    r"JOB[ \t]+\S+[ \t]+\S*[^\s{][ \t]*",  # a last '{' would open an inline description
    r"RETRY[ \t]+\S+[ \t]+[0-9]+[ \t]*",
    r"PARENT[ \t][^\n]*",  # read by _parent_child
    r"[ \t]*(?:#[^\n]*)?"))
_PLAIN_DAG = re.compile(rf"(?:{_PLAIN_LINE})(?:\n(?:{_PLAIN_LINE}))*")
_OTHER_BREAKS = "\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"  # str.splitlines splits at these too
# found after a newline: the text is searched with one put in front
_JOB_LINES = re.compile(r"\nJOB[ \t]+(\S+)[ \t]+(\S+)")
_NODE_NAMED = re.compile(r"\n(?:VARS|RETRY)[ \t]+(\S+)")
_PARENT_LINES = re.compile(r"\nPARENT[ \t]([^\n]*)")
_QUEUE_NAME = re.compile(r'[ \t][Qq][Uu][Ee][Uu][Ee][A-Za-z0-9_.+]*="')
_RESERVED_LINE = re.compile("^(?:" + "|".join(sorted(_RESERVED_NAMES)) + ")$", re.MULTILINE)


def _plain_summary(text: str) -> DagSummary | None:
    """The summary of a plain DAG that nothing in the parser would refuse; None when
    the text is not plain or anything might be refused (the parser then says what).

    What the parser checks, here for the whole text at once: JOB names unique, not
    reserved and without '+'; VARS and RETRY naming defined nodes, no VARS name
    beginning with 'queue'; PARENT/CHILD lines naming defined nodes. There is no cycle
    when every PARENT comes before its CHILDs in the order of the JOB lines (a template
    writes them so); anything else is left to the parser's full check."""
    if "\\\n" in text or text.endswith("\\") or any(c in text for c in _OTHER_BREAKS) \
            or not _PLAIN_DAG.fullmatch(text):
        return None
    lines = "\n" + text
    jobs = _JOB_LINES.findall(lines)
    names = [name for name, _ in jobs]
    position = dict(zip(names, range(len(names)), strict=True))
    joined = "\n".join(names)
    if not jobs or len(position) != len(names) or "+" in joined \
            or _RESERVED_LINE.search(joined.upper()) \
            or ("queue" in text.lower() and _QUEUE_NAME.search(text)) \
            or not position.keys() >= set(_NODE_NAMED.findall(lines)):
        return None
    for rest in _PARENT_LINES.findall(lines):
        try:
            parents, children = _parent_child(rest, "")
            if max(map(position.__getitem__, parents)) >= min(
                    map(position.__getitem__, children)):
                return None
        except (DagError, KeyError):
            return None
    return DagSummary(len(names), frozenset((None, submit) for _, submit in jobs))


def read_dag(path: Path) -> Dag:
    return parse_dag(read_dag_text(path), path)


def read_dag_text(path: Path) -> str:
    try:
        return path.read_text()
    except UnicodeDecodeError as exc:
        raise DagError(f"{path}: not a text file ({exc.reason} at byte {exc.start})") from None
