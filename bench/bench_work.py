"""``docket run``: withdraw → deposit round trips per second, next to bare SQLite.

N works of a function that does nothing are deposited in a fresh home; one ``docket run
PIPELINE noop.nothing --until-empty`` withdraws each (one ``BEGIN IMMEDIATE`` transaction
that leases it), calls the function and deposits the result (a second transaction), with
the home's durability (WAL, ``synchronous=FULL``). Baseline, interleaved with it: the same
two transactions per item (an UPDATE each) through ``sqlite3`` on a bare table, in one
process: what any durable queue on SQLite costs.
"""

from __future__ import annotations

import itertools
import shutil
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import DOCKET, REPO, interleave, log, median, row, scratch, timed_run

__all__ = ["run"]

BENCH = "`docket run`: withdraw → deposit round trips"


def run(quick: bool = False) -> list[dict[str, Any]]:
    works = 200 if quick else 1_000
    repeats = 3
    root = scratch("work")
    serial = itertools.count()
    (root / "noop.py").write_text("def nothing():\n    return {}\n")
    sys.path.insert(0, str(REPO))
    from docket.home import resolve_home
    from docket.store import Store
    from docket.work import deposit
    from schemas.work import Work

    def runner() -> float:
        home = resolve_home(root / f"home-{next(serial)}")
        home.ensure()
        store = Store(home.database)
        deposit(store, [Work(pipeline="bench", site="local", user="bench")
                        for _ in range(works)])
        store.close()
        elapsed = timed_run([str(DOCKET), "run", "bench", "noop.nothing", "--until-empty",
                             "--quiet", "--sleep-s", "0.1", "--home", str(home.root)],
                            cwd=root)
        store = Store(home.database)
        done = store.one("SELECT count(*) AS n FROM works WHERE status='success'")["n"]
        store.close()
        if done != works:
            raise RuntimeError(f"docket run did {done} of {works} works")
        shutil.rmtree(home.root)
        return elapsed

    def bare() -> float:
        path = root / f"bare-{next(serial)}.sqlite"
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE q (id INTEGER PRIMARY KEY, status TEXT)")
        conn.executemany("INSERT INTO q (status) VALUES ('queued')", [()] * works)
        start = time.perf_counter()
        for i in range(1, works + 1):
            for status in ("running", "success"):
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("UPDATE q SET status=? WHERE id=?", (status, i))
                conn.execute("COMMIT")
        elapsed = time.perf_counter() - start
        conn.close()
        path.unlink()
        return elapsed

    try:
        log(f"{BENCH}: {works} works, {repeats} interleaved runs each")
        times = interleave({"docket run": runner, "bare sqlite": bare}, repeats, warmup=1,
                           label=BENCH)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    t_run, t_bare = median(times["docket run"]), median(times["bare sqlite"])
    return [
        row(BENCH, f"one `docket run` over {works:,} works (whole run, start-up included)",
            works / t_run, "works/s",
            baseline="two durable sqlite3 UPDATE transactions per item",
            baseline_value=works / t_bare, ratio_note="× baseline rate", runs=repeats,
            digits=1),
    ]


if __name__ == "__main__":
    for r in run(quick="--quick" in sys.argv):
        print(r)
