"""Drivers: what each ``docket`` command does, between the thin CLI and the library.

Each function takes a resolved ``Home`` and plain arguments, makes the library calls and
returns one plain result dict (the CLI prints it as a table or as ``--json``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from docket.errors import Invalid, NotFound
from docket.home import Home

__all__ = ["submit_files", "validate_files", "cancel_request", "rebuild", "queues",
           "change_queue", "spool_file"]


def spool_file(home: Home, raw: bytes, name: str) -> Path:
    """Write ``raw`` into ``spool/incoming`` atomically, under a name not yet used there."""
    from docket.fileio import atomic_write

    home.incoming.mkdir(parents=True, exist_ok=True)
    stem, dot, suffix = name.rpartition(".")
    if not dot:
        stem, suffix = name, "yaml"
    target = home.incoming / f"{stem}.{suffix}"
    counter = 1
    while target.exists():
        counter += 1
        target = home.incoming / f"{stem}-{counter}.{suffix}"
    # atomic_write's temporary name starts with a dot, which intake never reads
    atomic_write(target, raw)
    return target


def _read(path: Path, limit: int) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(limit + 1)
    except FileNotFoundError:
        raise NotFound(f"{path} does not exist", "check the path") from None
    except IsADirectoryError:
        raise Invalid(f"{path} is a directory", "give a YAML file") from None


def validate_files(home: Home, files: list[Path], templates: Path | None = None) -> dict[
        str, Any]:
    from docket.capabilities import CapabilityCache
    from docket.documents import DocumentError
    from docket.intake import check_document

    caps = CapabilityCache(templates or home.templates)
    documents = []
    for path in files:
        raw = _read(path, home.config.max_document_bytes)
        try:
            checked = check_document(raw, home, caps)
        except DocumentError as exc:
            documents.append({"file": str(path), "valid": False,
                              "problems": [str(p) for p in exc.problems]})
            continue
        model = checked.parsed.model
        documents.append({"file": str(path), "valid": True, "kind": checked.parsed.kind,
                          "name": model.metadata.name})
    return {"valid": all(d["valid"] for d in documents), "documents": documents}


def submit_files(home: Home, files: list[Path]) -> dict[str, Any]:
    """Validate every file first; spool them only if all are valid."""
    checked = validate_files(home, files)
    bad = [d for d in checked["documents"] if not d["valid"]]
    if bad:
        first = bad[0]
        raise Invalid(f"{first['file']} is not a valid request: {first['problems'][0]}"
                      + (f" (and {len(first['problems']) - 1} more)"
                         if len(first["problems"]) > 1 else ""),
                      "run 'docket validate FILE' for every problem; nothing was submitted")
    submitted = []
    for path in files:
        target = spool_file(home, _read(path, home.config.max_document_bytes), path.name)
        submitted.append({"file": str(path), "spooled": str(target)})
    return {"submitted": submitted}


def _watcher_parts(home: Home) -> tuple[Any, Any]:
    from docket.capabilities import CapabilityCache
    from docket.rules import Rules
    from docket.store import Store

    store = Store(home.database)
    return store, Rules(store, CapabilityCache(home.templates), home.work)


def cancel_request(home: Home, name: str, reason: str, actor: str) -> dict[str, Any]:
    store, rules = _watcher_parts(home)
    try:
        if store.one("SELECT 1 FROM requests WHERE name=?", name) is None:
            raise NotFound(f"no request named {name!r}", "see 'docket status' for the names")
        cancelled = []
        with store.transaction():
            for row in store.all("SELECT * FROM executions WHERE request=? ORDER BY id",
                                 name):
                machine = rules.machine_for(row["capability"])
                if row["state"] not in machine.final and rules.feed(
                        row, "cancel", reason=reason, actor=actor):
                    cancelled.append(row["id"])
        return {"request": name, "cancelled": cancelled,
                "reason": reason if cancelled else "every execution has already ended"}
    finally:
        store.close()


def rebuild(home: Home, check: bool) -> dict[str, Any]:
    from docket.store import Store

    if not home.database.is_file():
        raise NotFound(f"no docket database at {home.database}", "nothing to rebuild")
    store = Store(home.database)
    try:
        with store.transaction():
            before = store.snapshot()
            count = store.rebuild()
            after = store.snapshot()
            differences = [t for t in before if before[t] != after[t]]
            if check:
                store.conn.execute("ROLLBACK")
                store.conn.execute("BEGIN")  # the context manager commits this empty one
        return {"events": count, "identical": not differences, "differences": differences,
                "applied": not check}
    finally:
        store.close()


def queues(home: Home) -> dict[str, Any]:
    store, rules = _watcher_parts(home)
    try:
        return {"queues": [q.__dict__ for q in rules.queues()]}
    finally:
        store.close()


def change_queue(home: Home, capability: str, actor: str, **change: Any) -> dict[str, Any]:
    from docket.capabilities import list_capabilities

    if capability not in list_capabilities(home.templates):
        raise NotFound(f"unknown capability {capability!r}",
                       "see 'docket queue list' for the capabilities")
    store, rules = _watcher_parts(home)
    try:
        rules.change_queue(capability, actor=actor, **change)
        return {"capability": capability, "change": change}
    finally:
        store.close()


