"""CHIME-style work in the home's database: deposit, withdraw (a lease), update, query.

A work waits as ``queued``; ``withdraw`` takes the highest-priority queued work of a
pipeline (then the oldest) and leases it to one runner for the work's ``timeout``, in one
``BEGIN IMMEDIATE`` transaction, so two runners never take the same work. ``attempt``
counts withdrawals. A lease that outlives its timeout (the runner was killed, or its node
lost) is put back with the attempt counted, until ``retries`` retries are used; then the
work fails. ``update`` from a runner is taken only while its lease holds (the same runner
and attempt): a runner that lost its lease and finishes late changes nothing.

The ``works`` table holds every field of CHIME's Work as JSON (``body``) beside the
columns queries use. It is bookkeeping of its own, not derived from the event log.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from docket.errors import Invalid, NotFound
from docket.store import Store
from schemas.work import WORK_STATUSES, Work

__all__ = ["deposit", "withdraw", "update", "finish", "query", "get", "expire_leases",
           "deposit_document", "Stale"]


class Stale(Invalid):
    code = "stale-lease"


def _row_to_work(row: Any) -> dict[str, Any]:
    body = json.loads(row["body"])
    body.update({"id": row["id"], "status": row["status"], "attempt": row["attempt"],
                 "start": row["start"], "stop": row["stop"], "creation": row["creation"]})
    extra = {"runner": row["runner"], "checksums": json.loads(row["checksums"] or "{}"),
             "error": row["error"], "lease_until": row["lease_until"]}
    return {**body, "docket": extra}


def deposit(store: Store, works: list[Work]) -> list[str]:
    """Queue works; returns their ids (given ones kept, others made)."""
    ids = []
    now = time.time()
    with store.transaction():
        for work in works:
            body = work.model_dump(mode="json")
            work_id = body.get("id") or uuid.uuid4().hex
            if store.work_row(work_id) is not None:
                raise Invalid(f"work {work_id} was deposited before",
                              "leave id out to deposit a new work, or use 'docket work "
                              "update'")
            status = body["status"] if body["status"] != "created" else "queued"
            body.update(id=work_id, status=status, creation=body.get("creation") or now)
            store.insert_work(body)
            ids.append(work_id)
    return ids


def expire_leases(store: Store, now: float) -> int:
    """Running works past their timeout go back to the queue, or fail after the last try."""
    with store.transaction():
        return store.expire_work_leases(now)


def withdraw(store: Store, pipeline: str, runner: str, *, site: str | None = None,
             user: str | None = None, tags: list[str] | None = None,
             event: list[int] | None = None, priority: int | None = None
             ) -> dict[str, Any] | None:
    """Lease the next work of ``pipeline`` to ``runner``; None when nothing waits."""
    filters = {column: value for column, value in (("site", site), ("user", user),
                                                   ("priority", priority))
               if value is not None}
    leased = store.lease_work(pipeline.lower().replace("_", "-"), runner, time.time(),
                              filters=filters, tags=tags or [], events=event or [])
    return _row_to_work(leased) if leased is not None else None


def finish(store: Store, work_id: str, runner: str, attempt: int, status: str, *,
           results: dict[str, Any] | None = None, products: list[str] | None = None,
           plots: list[str] | None = None, checksums: dict[str, Any] | None = None,
           error: str | None = None) -> None:
    """A runner deposits its outcome; ``Stale`` if its lease is no longer held."""
    if status not in ("success", "failure"):
        raise Invalid(f"status {status!r}: a runner deposits success or failure")
    now = time.time()
    with store.transaction():
        row = store.work_row(work_id)
        if row is None:
            raise NotFound(f"no work {work_id}")
        if row["status"] != "running" or row["runner"] != runner or row["attempt"] != attempt:
            store.stale_work_attempt(work_id, attempt, runner, now)
            raise Stale(f"work {work_id} attempt {attempt} is no longer leased to {runner} "
                        f"(now {row['status']}, attempt {row['attempt']})",
                        "its timeout passed; the result was not recorded")
        body = json.loads(row["body"])
        body.update(results=results, products=products, plots=plots, stop=now,
                    status=status)
        store.finish_work(work_id, attempt, status, now, body, checksums or {}, error)


_UPDATABLE = {"results", "products", "plots", "tags", "status", "priority", "parameters",
              "group", "event", "path", "timeout", "retries", "config", "notify", "archive"}


def update(store: Store, work_id: str, changes: dict[str, Any]) -> dict[str, Any]:
    """A person's change to a work (CHIME's ``Work.update``), checked as a Work."""
    unknown = set(changes) - _UPDATABLE
    if unknown:
        raise Invalid(f"cannot update {', '.join(sorted(unknown))}",
                      f"updatable fields: {', '.join(sorted(_UPDATABLE))}")
    if "status" in changes and changes["status"] not in WORK_STATUSES:
        raise Invalid(f"status {changes['status']!r} is not one of {', '.join(WORK_STATUSES)}")
    now = time.time()
    with store.transaction():
        row = store.work_row(work_id)
        if row is None:
            raise NotFound(f"no work {work_id}", "see 'docket work list'")
        body = json.loads(row["body"])
        body.update(changes)
        from pydantic import ValidationError

        try:
            work = Work.model_validate({k: v for k, v in body.items()})
        except ValidationError as exc:
            err = exc.errors()[0]
            raise Invalid(f"{'.'.join(map(str, err['loc']))}: {err['msg']}") from None
        body = work.model_dump(mode="json")
        stop = now if body["status"] in ("success", "failure") else row["stop"]
        store.change_work(work_id, body, stop)
        row = store.work_row(work_id)
    return _row_to_work(row)


def get(store: Store, work_id: str) -> dict[str, Any]:
    row = store.work_row(work_id)
    if row is None:
        raise NotFound(f"no work {work_id}", "see 'docket work list'")
    work = _row_to_work(row)
    work["docket"]["attempts"] = store.work_attempts(work_id)
    return work


def query(store: Store, *, pipeline: str | None = None, status: str | None = None,
          tag: str | None = None, group: str | None = None, event: int | None = None,
          site: str | None = None, user: str | None = None, since: float | None = None,
          until: float | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Works by pipeline, tag, group, event, status, site, user and creation time."""
    if pipeline is not None:  # spelt as the user writes it, found as deposited (hyphen-case)
        pipeline = pipeline.lower().replace(" ", "-").replace("_", "-")
    rows = store.work_rows(filters={"pipeline": pipeline, "status": status, "grp": group,
                                    "site": site, "user": user},
                           tag=tag, event=event, since=since, until=until, limit=limit)
    return [_row_to_work(r) for r in rows]


def deposit_document(intake: Any, name: str, parsed: Any, raw: bytes, identity: str,
                     actor: str, source: dict[str, Any] | None = None) -> Any:
    """Intake of a ``kind: Work`` document (or a CHIME work JSON): one deposited work."""
    from docket.documents import Outcome

    work: Work = parsed.model.spec
    try:
        (work_id,) = deposit(intake.store, [work])
    except Invalid as exc:
        return intake._reject(name, [exc.what], actor)
    intake.store.record("work.deposited", actor=actor, file=name, work=work_id,
                        pipeline=work.pipeline)
    return Outcome(name, "applied", reasons=[f"work {work_id} deposited for pipeline "
                                             f"{work.pipeline}"],
                   document=f"work-{work_id}")


def load_work_files(paths: list[Any]) -> list[Work]:
    """Works from files: ``kind: Work`` YAML documents, or CHIME work JSON (one object or a
    list of them). ``DocumentError``-style problems become one ``Invalid`` naming the file."""
    from pydantic import ValidationError

    from docket.documents import DocumentError, load_yaml, validate_data

    works: list[Work] = []
    for path in paths:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise NotFound(f"{path}: cannot read: {exc.strerror}") from None
        try:
            if path.suffix == ".json":
                data = json.loads(raw)
                items = data if isinstance(data, list) else [data]
                for i, item in enumerate(items):
                    try:
                        works.append(Work.model_validate(item))
                    except ValidationError as exc:
                        err = exc.errors()[0]
                        where = "/".join(str(p) for p in ((i,) if isinstance(data, list)
                                                          else ()) + tuple(err["loc"]))
                        raise Invalid(f"{path}: /{where}: {err['msg']}") from None
            else:
                data, marks = load_yaml(raw)
                parsed = validate_data(data, marks)
                if parsed.kind != "Work":
                    raise Invalid(f"{path}: a {parsed.kind} document, not a Work")
                works.append(parsed.model.spec)
        except json.JSONDecodeError as exc:
            raise Invalid(f"{path}: line {exc.lineno}: invalid JSON: {exc.msg}") from None
        except DocumentError as exc:
            raise Invalid(f"{path}: {exc.problems[0]}") from None
    return works
