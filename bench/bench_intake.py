"""Intake throughput: ``docket tick`` over N queued request documents.

The baseline does only the work every intake must do per document: read it, parse it with
``yaml.CSafeLoader``, validate it with ``schemas.documents.CapabilityRequest``, insert one
row per document into SQLite in batches (WAL, ``synchronous=FULL``: one durable commit per
batch, as docket's batches), write the archive copy ``accepted/<name>/v1.yaml`` and remove
the file from ``incoming`` (a document still in incoming is not accepted yet; on this disk
an unlink of a synced file costs ~0.25 ms, a quarter of the baseline's time). Both
run as a fresh process of the same venv over a spool of the same freshly written files, so
interpreter start-up and imports count on both sides.

Every capability's queue limit is 0 in the benchmark home, so ``tick`` accepts and queues
every request but starts none: this measures intake, not execution.

The disk here slows down over successive runs and does not recover within a minute: the
baseline alone, five runs in a row, took 4.8, 6.8, 10.4, 13.0, 13.4 s; after 30 s idle
and with the dentry and inode caches dropped, still 14-18 s (a rate-limited virtual
disk, by the look of it). So the runs are an even number of rounds: each side runs first
in half of them (interleave reverses the order every round), and the medians of the two
sides come from the same places in the sequence. With an odd number, the middle run of
one side comes later than the other's and pays more of the slide (3 rounds: docket's
median was the 4th run of 6, the baseline's the 3rd).

Run ``python bench/bench_intake.py baseline SPOOL_DIR`` to run the baseline alone.
"""

from __future__ import annotations

import itertools
import os
import shutil
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (
    DOCKET,
    PYTHON,
    interleave,
    log,
    make_home,
    median,
    request_document,
    row,
    scratch,
    timed_run,
)

__all__ = ["run", "baseline"]

BENCH = "Intake throughput"
BATCH = 500  # docket's intake batch size (docket.intake.BATCH_SIZE)


def _fill(incoming: Path, count: int) -> None:
    incoming.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (incoming / f"req-{i:06d}.yaml").write_text(request_document(f"bench-{i:06d}", "null", i))
    os.sync()  # the writeback of the fill must not land inside the timed run


def baseline(spool: Path) -> int:
    """The unavoidable work per document; returns how many were accepted."""
    import yaml

    from schemas.documents import CapabilityRequest

    incoming, accepted = spool / "incoming", spool / "accepted"
    conn = sqlite3.connect(spool / "baseline.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS versions (request TEXT, number INTEGER, "
                 "document TEXT, PRIMARY KEY (request, number))")
    names = sorted(os.listdir(incoming))
    done = 0
    for start in range(0, len(names), BATCH):
        batch = []
        for name in names[start:start + BATCH]:
            with open(incoming / name, "rb") as fh:
                raw = fh.read()
            model = CapabilityRequest.model_validate(yaml.load(raw, Loader=yaml.CSafeLoader))
            batch.append((model.metadata.name, 1, raw.decode()))
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO versions VALUES (?, ?, ?)", batch)
        conn.execute("COMMIT")
        for request, _number, text in batch:
            folder = accepted / request
            folder.mkdir(parents=True, exist_ok=True)
            with open(folder / "v1.yaml", "w") as fh:
                fh.write(text)
        for name in names[start:start + BATCH]:
            os.unlink(incoming / name)
        done += len(batch)
    conn.close()
    return done


def _count_accepted(spool: Path) -> int:
    accepted = spool / "accepted"
    return sum(1 for d in accepted.iterdir() if (d / "v1.yaml").is_file())


def _remove(path: Path) -> None:
    # removing 10,000 synced files takes ~3-9 s here: finish it before the next timed run
    shutil.rmtree(path)
    os.sync()


def _durable_write_cost(count: int, repeats: int) -> dict[str, list[float]]:
    """Seconds per small file: atomic durable write (docket.fileio.atomic_write) vs plain."""
    from docket.fileio import atomic_write

    root = scratch("fsync")
    serial = itertools.count()
    text = request_document("bench-fsync", "null", 0)

    def durable() -> float:
        folder = root / f"d{next(serial)}"
        folder.mkdir()
        start = time.perf_counter()
        for i in range(count):
            atomic_write(folder / f"f{i}.yaml", text, mode=0o444)
        return (time.perf_counter() - start) / count

    def plain() -> float:
        folder = root / f"p{next(serial)}"
        folder.mkdir()
        start = time.perf_counter()
        for i in range(count):
            with open(folder / f"f{i}.yaml", "w") as fh:
                fh.write(text)
        return (time.perf_counter() - start) / count

    try:
        return interleave({"durable": durable, "plain": plain}, repeats, warmup=0,
                          label="durable small-file write")
    finally:
        _remove(root)


def run(quick: bool = False) -> list[dict[str, Any]]:
    count = 1_000 if quick else 10_000
    repeats = 2 if quick else 4  # even: see the module's docstring
    root = scratch("intake")
    try:
        template = make_home(root / "template")
        serial = itertools.count()

        def docket_tick() -> float:
            home = root / f"home-{next(serial)}"
            shutil.copytree(template, home)
            _fill(home / "spool" / "incoming", count)
            elapsed = timed_run([str(DOCKET), "tick", "--home", str(home)])
            got = _count_accepted(home / "spool")
            left = os.listdir(home / "spool" / "incoming")
            if got != count or left:
                raise RuntimeError(f"docket tick accepted {got} of {count} documents; "
                                   f"{len(left)} left in incoming")
            _remove(home)
            return elapsed

        def base() -> float:
            spool = root / f"base-{next(serial)}"
            _fill(spool / "incoming", count)
            elapsed = timed_run([str(PYTHON), __file__, "baseline", str(spool)])
            got = _count_accepted(spool)
            if got != count or os.listdir(spool / "incoming"):
                raise RuntimeError(f"the baseline wrote {got} of {count} archive copies")
            _remove(spool)
            return elapsed

        log(f"{BENCH}: {count} documents, {repeats} interleaved runs each")
        # no warm-up round: 10,000 documents take long enough that start-up is noise
        times = interleave({"docket tick": docket_tick, "baseline": base}, repeats,
                           warmup=0, label=BENCH)
        writes = _durable_write_cost(200, repeats)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    docket_rate = count / median(times["docket tick"])
    base_rate = count / median(times["baseline"])
    ratio = docket_rate / base_rate
    # each round's two runs sit side by side in time: their own ratios show the spread
    rounds = ", ".join(f"{b / d:.2f}" for d, b in zip(times["docket tick"], times["baseline"],
                                                        strict=True))
    durable_ms, plain_ms = median(writes["durable"]) * 1e3, median(writes["plain"]) * 1e3
    return [
        row(BENCH, f"`docket tick`, {count:,} queued documents (whole command)", docket_rate,
            "documents/s", baseline="read + CSafeLoader + pydantic + batched SQLite insert + "
            "archive write + unlink (fresh process)", baseline_value=base_rate, ratio=ratio,
            ratio_note="of baseline throughput", target="≥ 60 % of baseline",
            met=ratio >= 0.6, runs=repeats, digits=0,
            note=f"each round's own ratio, in order (docket ran first in rounds 1, 3, ...): "
                 f"{rounds}"),
        row(BENCH, "one small file written durably (`atomic_write`: fsync file, rename, "
            "fsync dir)", durable_ms, "ms/file", baseline="plain open/write/close",
            baseline_value=plain_ms, ratio_note="× plain write", runs=repeats, digits=3,
            note="for reading the intake figure: what one fsync'd small file costs on this "
                 "disk (each fsync per document costs about this much throughput)"),
    ]


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "baseline":
        print(baseline(Path(sys.argv[2])))
    else:
        for r in run(quick="--quick" in sys.argv):
            print(r)
