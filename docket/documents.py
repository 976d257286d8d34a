"""Read one spool document: bytes → a validated model, or a reason a DA understands.

PyYAML's C loader builds a node tree first, so the checks that PyYAML itself skips
happen before anything is constructed: exactly one document, no duplicate keys (PyYAML
would keep the last silently), and a cap on the node count with aliases expanded (an
alias bomb is a few hundred bytes that expand to billions of nodes). Every error names
the line and column, or the field path, of what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from docket.fileio import is_disk_error
from schemas.documents import API_VERSION, KINDS, NAME_PATTERN, CapabilityRequest
from schemas.tasks import TaskWorkflow
from schemas.work import WorkDocument

__all__ = ["DocumentError", "Problem", "ParsedDocument", "Outcome", "parse_document",
           "parse_json_document", "load_yaml", "load_model_file", "spec_sha256",
           "capability_request"]

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class Problem:
    message: str
    path: str | None = None
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = []
        if self.line is not None:
            where.append(f"line {self.line}" + (f", column {self.column}" if self.column else ""))
        if self.path:
            where.append(self.path)
        return (": ".join([" ".join(where[:1]) + (f" ({where[1]})" if len(where) > 1 else ""),
                           self.message]) if where else self.message)


class DocumentError(Exception):
    """A document that cannot be accepted; ``problems`` lists every reason found."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


@dataclass
class ParsedDocument:
    kind: str
    model: BaseModel
    data: dict[str, Any]
    marks: dict[tuple[Any, ...], tuple[int, int]] = field(default_factory=dict)

    def where(self, *path: Any) -> tuple[int | None, int | None]:
        """Line and column (1-based) of the value at ``path``, or of its nearest parent."""
        key = tuple(path)
        while key:
            if key in self.marks:
                return self.marks[key]
            key = key[:-1]
        return (None, None)


@dataclass
class Outcome:
    """What became of one document: accepted, duplicate, applied (a decision) or rejected."""

    file: str
    status: str  # accepted, duplicate, applied, rejected
    request: str | None = None
    version: int | None = None
    execution: int | None = None
    reasons: list[str] = field(default_factory=list)
    moved_to: str | None = None
    document: str | None = None  # metadata.name of an applied decision

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in (None, [])}


def spec_sha256(spec: dict[str, Any]) -> str:
    """The identity of a request's content: the same spec is the same version."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def capability_request(name: str, spec: dict[str, Any],
                       labels: dict[str, str] | None = None) -> tuple[CapabilityRequest, str]:
    """A request made by docket itself (a follow-up), through the same model as a spool
    document's: the validated model and its YAML text, so that the same document dropped
    in the spool hashes the same (``spec_sha256(model.spec.model_dump(mode="json"))``)."""
    document = {"apiVersion": API_VERSION, "kind": "CapabilityRequest",
                "metadata": {"name": name, "labels": labels or {}}, "spec": spec}
    model = CapabilityRequest.model_validate(document)
    return model, yaml.safe_dump(document, sort_keys=False)


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


# How deep a document may nest (with aliases expanded). Requests nest a handful of
# levels; far deeper input crashes PyYAML's C composer (a segfault, at ~100k levels) or
# exhausts Python's recursion limit while it is constructed.
MAX_DEPTH = 64

# The YAML types a document may hold: JSON's. Others are refused because they have no
# one canonical form (a !!set comes back in a different order each time, so identical
# content would hash differently) or no place in a request (!!binary, !!python/...).
_PLAIN_TAGS = frozenset(f"tag:yaml.org,2002:{t}" for t in (
    "str", "int", "float", "bool", "null", "seq", "map", "merge"))
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_STR = "tag:yaml.org,2002:str"


def _check_depth(text: str, what: str) -> None:
    """Refuse flow or block nesting deeper than ``MAX_DEPTH`` before anything is composed.

    Only documents with more opening brackets or dashes than that could nest so deep, so
    most documents skip the extra (event-only, non-recursive) parse.
    """
    if text.count("[") + text.count("{") + text.count("-") <= MAX_DEPTH:
        return
    depth = 0
    try:
        for event in yaml.parse(text, Loader=_Loader):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    line, col = event.start_mark.line + 1, event.start_mark.column + 1
                    raise DocumentError([Problem(
                        f"the {what} nests more than {MAX_DEPTH} levels deep; a request "
                        "needs a few", line=line, column=col)])
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError:
        return  # composing reports the syntax error with its line and column


def _check_tree(root: yaml.Node, max_nodes: int) -> dict[tuple[Any, ...], tuple[int, int]]:
    """Count nodes with aliases expanded, refuse duplicate keys, types that are not
    plain data and nesting deeper than ``MAX_DEPTH``, and map paths to marks."""
    sizes: dict[int, tuple[int, int]] = {}  # node -> (nodes below, height)

    def size(node: yaml.Node, active: set[int], depth: int) -> tuple[int, int]:
        nid = id(node)
        if nid in sizes:
            total, height = sizes[nid]
            if depth + height > MAX_DEPTH:
                too_deep(node)
            return sizes[nid]
        if nid in active:  # a recursive alias: infinite when expanded
            raise DocumentError([Problem("the document refers to itself through an alias",
                                         line=_mark(node)[0], column=_mark(node)[1])])
        if depth > MAX_DEPTH:  # deep through aliases: the text alone did not show it
            too_deep(node)
        if node.tag == _TIMESTAMP:
            node.tag = _STR  # a date is kept as written: one text, one hash
        elif node.tag not in _PLAIN_TAGS:
            line, col = _mark(node)
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            hint = " (write a list instead)" if tag == "!!set" else ""
            raise DocumentError([Problem(
                f"the YAML type {tag} is not allowed{hint}; a document holds text, "
                "numbers, true/false, null, lists and mappings", line=line, column=col)])
        active.add(nid)
        total, height = 1, 0
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, yaml.Node] = {}  # the node, not its mark: made only for an error
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    first = seen.setdefault(key.value, key)
                    if first is not key:
                        line, col = _mark(key)
                        raise DocumentError([Problem(
                            f"duplicate key {key.value!r} (first on line {_mark(first)[0]})",
                            line=line, column=col)])
                children += (key, value)
        elif isinstance(node, yaml.SequenceNode):
            children = node.value
        for child in children:
            count, below = size(child, active, depth + 1)
            total += count
            height = max(height, below + 1)
            if total > max_nodes:
                break
        active.discard(nid)
        if total > max_nodes:
            line, col = _mark(node)
            raise DocumentError([Problem(
                f"the document expands to more than {max_nodes} YAML nodes "
                "(an alias bomb, or far too large for a request)", line=line, column=col)])
        sizes[nid] = (total, height)
        return total, height

    def too_deep(node: yaml.Node) -> None:
        line, col = _mark(node)
        raise DocumentError([Problem(f"the document nests more than {MAX_DEPTH} levels "
                                     "deep (through aliases); a request needs a few",
                                     line=line, column=col)])

    size(root, set(), 0)
    return _Marks(root)


class _Marks(dict):  # type: ignore[type-arg]
    """Path -> (line, column) of a document's values, worked out only when an error
    message needs one (most documents are valid, and the walk costs as much as parsing)."""

    def __init__(self, root: yaml.Node) -> None:
        super().__init__()
        self._root: yaml.Node | None = root

    def _fill(self) -> None:
        if self._root is not None:
            root, self._root = self._root, None
            self.update(_walk_marks(root))

    def __contains__(self, key: object) -> bool:
        self._fill()
        return super().__contains__(key)

    def __getitem__(self, key: Any) -> Any:
        self._fill()
        return super().__getitem__(key)

    def get(self, key: Any, default: Any = None) -> Any:
        self._fill()
        return super().get(key, default)

    def __len__(self) -> int:
        self._fill()
        return super().__len__()

    def __iter__(self) -> Any:
        self._fill()
        return super().__iter__()

    def items(self) -> Any:
        self._fill()
        return super().items()


def _walk_marks(root: yaml.Node) -> dict[tuple[Any, ...], tuple[int, int]]:
    marks: dict[tuple[Any, ...], tuple[int, int]] = {}

    def walk(node: yaml.Node, path: tuple[Any, ...], depth: int) -> None:
        marks[path] = _mark(node)
        if depth > 6:  # deep enough for every field path a model reports
            return
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    marks[(*path, key.value)] = _mark(key)
                    walk(value, (*path, key.value), depth + 1)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*path, i), depth + 1)

    walk(root, (), 0)
    return marks


def load_yaml(raw: bytes, *, max_bytes: int = 1_048_576, max_nodes: int = 100_000,
              what: str = "document") -> tuple[Any, dict[tuple[Any, ...], tuple[int, int]]]:
    """Decode and parse exactly one YAML document with the checks above."""
    if len(raw) > max_bytes:
        raise DocumentError([Problem(f"the {what} is {len(raw)} bytes, over the limit of "
                                     f"{max_bytes} bytes")])
    if not raw.strip():
        raise DocumentError([Problem(f"the {what} is empty")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DocumentError([Problem(f"the {what} is not UTF-8 text (byte {exc.start} is "
                                     f"0x{raw[exc.start]:02x}); is it a binary file?")]) from None
    if "\x00" in text:
        offset = text.index("\x00")
        line = text.count("\n", 0, offset) + 1
        raise DocumentError([Problem(f"the {what} contains a NUL byte; is it a binary file?",
                                     line=line)])
    _check_depth(text, what)
    try:
        nodes = list(yaml.compose_all(text, Loader=_Loader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        raise DocumentError([Problem(f"invalid YAML: {message}",
                                     line=mark.line + 1 if mark else None,
                                     column=mark.column + 1 if mark else None)]) from None
    except yaml.YAMLError as exc:
        raise DocumentError([Problem(f"invalid YAML: {exc}")]) from None
    nodes = [n for n in nodes if n is not None]
    if not nodes:
        raise DocumentError([Problem(f"the {what} holds no YAML document")])
    if len(nodes) > 1:
        line, _ = _mark(nodes[1])
        raise DocumentError([Problem(f"the {what} holds {len(nodes)} YAML documents; a spool "
                                     "file holds exactly one", line=line)])
    marks = _check_tree(nodes[0], max_nodes)
    try:
        data = yaml.constructor.SafeConstructor.construct_document(_Loader(""), nodes[0])
    except yaml.YAMLError as exc:
        raise DocumentError([Problem(f"invalid YAML value: {exc}")]) from None
    except RecursionError:  # the checks above should make this unreachable
        raise DocumentError([Problem(f"the {what} nests too deeply")]) from None
    return data, marks


def _path_text(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _explain(err: dict[str, Any], loc: tuple[Any, ...]) -> str:
    typ, msg, value = err["type"], err["msg"], err.get("input")
    if typ == "missing":
        return "this field is required"
    if typ == "extra_forbidden":
        return "unknown field (check the spelling)"
    if loc and loc[-1] == "capability" and value is None:
        return "is null; a capability named null must be quoted: capability: \"null\""
    if typ == "string_pattern_mismatch" and loc and loc[-1] in ("name", "capability"):
        return (f"{value!r} is not a valid name: use lower-case letters, digits, '.', '_' "
                "and '-', starting and ending with a letter or digit, at most 63 characters")
    return msg


def validate_data(data: Any, marks: dict[tuple[Any, ...], tuple[int, int]]) -> ParsedDocument:
    """Check ``apiVersion`` and ``kind``, then validate against the kind's model."""

    def at(*path: Any) -> tuple[int | None, int | None]:
        key = tuple(path)
        while key:
            if key in marks:
                return marks[key]
            key = key[:-1]
        return marks.get((), (None, None))

    if not isinstance(data, dict):
        line, col = at()
        raise DocumentError([Problem(
            f"the document must be a mapping with apiVersion, kind, metadata and spec, "
            f"not a {type(data).__name__}", line=line, column=col)])
    problems: list[Problem] = []
    api = data.get("apiVersion")
    if api != API_VERSION:
        line, col = at("apiVersion")
        problems.append(Problem(
            "apiVersion is missing" if api is None else
            f"apiVersion {api!r} is not supported; use {API_VERSION!r}",
            path="apiVersion", line=line, column=col))
    kind = data.get("kind")
    if kind not in KINDS:
        line, col = at("kind")
        known = ", ".join(sorted(KINDS))
        problems.append(Problem(
            f"kind is missing; known kinds: {known}" if kind is None else
            f"unknown kind {kind!r}; known kinds: {known}", path="kind", line=line, column=col))
    if problems:
        raise DocumentError(problems)
    model_cls = KINDS[str(kind)]
    try:
        model = model_cls.model_validate(data)
    except ValidationError as exc:
        seen: set[tuple[Any, ...]] = set()
        for err in exc.errors():
            loc = tuple(err["loc"])
            if loc[:2] == ("spec", "parameters") and len(loc) > 3:
                # pydantic reports one error per union member; one reason is enough
                loc = loc[:3]
                if loc in seen:
                    continue
                err = {"type": "parameter", "msg": "a parameter value must be a string, a "
                       "number, true/false, or a list of those"}
            seen.add(loc)
            line, col = at(*loc)
            problems.append(Problem(_explain(err, loc), path=_path_text(loc), line=line,
                                    column=col))
        raise DocumentError(problems) from None
    return ParsedDocument(kind=str(kind), model=model, data=data, marks=marks)


def parse_document(raw: bytes, *, max_bytes: int = 1_048_576,
                   max_nodes: int = 100_000, filename: str | None = None) -> ParsedDocument:
    """Parse and validate one spool document; raise ``DocumentError`` with every reason."""
    if filename is not None and filename.endswith(".json"):
        # an EWMS workflow request or CHIME work, as their users write them
        return parse_json_document(raw, filename, max_bytes=max_bytes, max_nodes=max_nodes)
    data, marks = load_yaml(raw, max_bytes=max_bytes, max_nodes=max_nodes)
    return validate_data(data, marks)


def _pointer(loc: tuple[Any, ...]) -> str:
    return "/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in loc)


def parse_json_document(raw: bytes, filename: str, *, max_bytes: int = 1_048_576,
                        max_nodes: int = 100_000) -> ParsedDocument:
    """An EWMS workflow request JSON; the request is named after the file."""
    if len(raw) > max_bytes:
        raise DocumentError([Problem(f"the document is {len(raw)} bytes, over the limit of "
                                     f"{max_bytes} bytes")])
    try:
        data = json.loads(raw)
    except UnicodeDecodeError:
        raise DocumentError([Problem("the document is not UTF-8 text")]) from None
    except json.JSONDecodeError as exc:
        raise DocumentError([Problem(f"invalid JSON: {exc.msg}", line=exc.lineno,
                                     column=exc.colno)]) from None
    except RecursionError:
        raise DocumentError([Problem("the JSON is nested too deeply to be a request")]
                            ) from None
    try:  # JSON is YAML: the YAML reader gives line numbers and refuses duplicate keys
        _, marks = load_yaml(raw, max_bytes=max_bytes, max_nodes=max_nodes)
    except DocumentError as exc:
        if any("duplicate key" in p.message or "YAML nodes" in p.message
               for p in exc.problems):
            raise
        marks = {}
    except RecursionError:
        raise DocumentError([Problem("the JSON is nested too deeply to be a request")]
                            ) from None
    if not isinstance(data, dict):
        raise DocumentError([Problem("a .json spool file is an EWMS workflow request (an "
                                     "object with 'tasks' and 'public_queue_aliases'), a "
                                     "CHIME work (an object with 'pipeline') or a docket "
                                     "document (apiVersion, kind, metadata, spec)", path="/")])
    if "apiVersion" in data and "kind" in data:
        # a docket document written as JSON (JSON is YAML): the checks any .yaml gets
        return validate_data(*load_yaml(raw, max_bytes=max_bytes, max_nodes=max_nodes))
    kind, model_cls = ("Work", WorkDocument) if "pipeline" in data else (
        "TaskWorkflow", TaskWorkflow)
    stem = Path(filename).name.rsplit(".", 1)[0].lower().replace(" ", "-")
    if not re.match(NAME_PATTERN, stem):
        raise DocumentError([Problem(
            f"the request is named after its file, and {stem!r} is not a valid name: rename "
            "the file to lower-case letters, digits, '.', '_' and '-' (at most 63 "
            "characters) with .json at the end")])
    document = {"apiVersion": "docket/v1", "kind": kind, "metadata": {"name": stem},
                "spec": data}
    try:
        model = model_cls.model_validate(document)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])[1:]  # drop "spec": the JSON is the spec
            key = loc
            while key and key not in marks:
                key = key[:-1]
            line, col = marks.get(key, (None, None))
            message = ("this field is required" if err["type"] == "missing" else
                       "unknown field (check the spelling)" if err["type"] ==
                       "extra_forbidden" else err["msg"].removeprefix("Value error, "))
            problems.append(Problem(message, path=_pointer(loc), line=line, column=col))
        raise DocumentError(problems) from None
    return ParsedDocument(kind=kind, model=model, data=document, marks=marks)


def load_model_file(path: Any, model: type[BaseModel], error: type[Exception],
                    hint: str) -> Any:
    """A settings file (YAML) validated by ``model``, or ``error`` naming file:line and field.

    ``error`` is a ``DocketError`` subclass, raised as ``error(message, hint)``.
    """
    try:
        data, marks = load_yaml(path.read_bytes(), what="file")
    except DocumentError as exc:
        first = exc.problems[0]
        where = f"{path}:{first.line}" if first.line else str(path)
        raise error(f"{where}: {first.message}", hint) from None
    except OSError as exc:
        if is_disk_error(exc):
            raise  # the disk's trouble: whoever reads the file must not blame the file
        raise error(f"{path}: cannot read: {exc.strerror}", "check its permissions") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        key = loc
        while key and key not in marks:
            key = key[:-1]
        line = marks.get(key, (None, None))[0]
        where = f"{path}:{line}" if line else str(path)
        field = ".".join(map(str, loc))
        message = err["msg"].removeprefix("Value error, ")
        raise error(f"{where}: {field + ': ' if field else ''}{message}", hint) from None
