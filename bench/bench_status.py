"""``docket status`` on a home with 100,000 executions: the whole command's wall time.

The home is built fast but realistically: the schema is the one ``docket.store.Store``
creates, filled in one transaction with 80,000 requests (20,000 of them with a second
version), 100,000 versions and executions in a realistic mix of states, one to five nodes
per execution and ~6 events per execution. The baseline is ``python -c pass`` of the same
venv: the floor of any Python command.

The first, untimed ``docket status`` (it checks the output) runs as a user's first run
does: Python writes the bytecode of the modules it imports into ``__pycache__``. Before,
whether the timed runs found bytecode depended on the shell: with
``PYTHONDONTWRITEBYTECODE=1`` (this sandbox sets it) an editable checkout never gets any,
and every run compiles ~200 KB of docket's own source again, a cost that no installed
docket pays (pip byte-compiles on install; a default Python writes the cache on the first
run). That case is its own row: the same command on a fresh copy of the packages, with
``PYTHONDONTWRITEBYTECODE=1``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import DOCKET, PYTHON, REPO, interleave, log, median, row, scratch, timed_run

__all__ = ["run", "build_home"]

BENCH = "docket status"

_STATES = [("complete", 85), ("failed", 8), ("cancelled", 3), ("queued", 3),
           ("executing", 1)]


def _stamp(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + \
        f".{int(seconds * 1e6) % 1_000_000:06d}Z"


def build_home(root: Path, executions: int = 100_000, seed: int = 1) -> Path:
    """A home whose database holds ``executions`` executions; returns the home."""
    from docket.store import Store

    rng = random.Random(seed)
    (root / "spool" / "incoming").mkdir(parents=True)
    shutil.copytree(Path(__file__).resolve().parents[1] / "templates", root / "templates")
    store = Store(root / "state" / "docket.db")
    conn = store.conn
    states = [s for s, w in _STATES for _ in range(w)]
    second = executions // 5  # requests with a second version
    names = [f"vlass-ql-{i:06d}" for i in range(executions - second)]
    t = time.time() - 90 * 86400
    requests, versions, execs, nodes, events = [], [], [], [], []
    plan = [(name, 1) for name in names] + [(name, 2) for name in names[:second]]
    latest: dict[str, tuple[int, int, str, str]] = {}
    has_second = set(names[:second])
    for ex_id, (name, number) in enumerate(plan, 1):
        capability = "demo" if ex_id % 4 == 0 else "null"
        t += rng.uniform(1, 100)
        created, started, stopped = _stamp(t), _stamp(t + 5), _stamp(t + 65)
        # a request's first version completed before its second arrived
        state = ("complete" if number == 1 and name in has_second
                 else states[rng.randrange(len(states))])
        engine_state = {"queued": "none", "executing": "running"}.get(state, "done")
        params = {"sleep_s": 0.1, "outputs": ["result.txt"], "message": f"request {ex_id}"}
        spec = {"capability": capability, "parameters": params, "priority": 0, "files": []}
        document = json.dumps({"apiVersion": "docket/v1", "kind": "CapabilityRequest",
                               "metadata": {"name": name}, "spec": spec})
        directory = f"/data/work/{name}/v{number}/e1"
        reason = "job exited with 1" if state == "failed" else None
        versions.append((name, number, capability, f"{ex_id:064x}", json.dumps(spec), document,
                         f"{name}.yaml", f"2049:{ex_id}:250:0:abcdef", "vlass", created))
        execs.append((ex_id, name, number, 1, capability, state, 0, engine_state, "local",
                      "local", "recovered", directory, json.dumps(params), created,
                      None if state == "queued" else started,
                      stopped if engine_state == "done" else None,
                      1 if state == "failed" else 0 if engine_state == "done" else None, reason))
        for n in range(5 if capability == "demo" else 1):
            node_state = {"complete": "done", "failed": "failed",
                          "executing": "running"}.get(state, "idle")
            nodes.append((ex_id, f"node{n}", node_state, 1, ex_id, 0, None, None, None, reason,
                          "localhost", started, stopped))
        for kind, data in (("version.accepted", {"capability": capability}),
                           ("execution.created", {"number": 1, "state": "submitted"}),
                           ("execution.transition", {"event": "accept", "to": "queued"}),
                           ("execution.transition", {"event": "start", "to": "executing"}),
                           ("execution.submitted", {"engine": "local"}),
                           ("execution.transition", {"event": "succeed", "to": state})):
            events.append((created, kind, name, number, ex_id, "vlass",
                           json.dumps(data, sort_keys=True)))
        latest[name] = (number, ex_id, state, stopped if engine_state == "done" else created)
    firsts = {name: versions[i][9] for i, name in enumerate(names)}
    for name, (number, ex_id, state, updated) in latest.items():
        capability = "demo" if ex_id % 4 == 0 else "null"
        requests.append((name, capability, state, number, ex_id, firsts[name], updated))
    # named columns: later schema versions add columns with defaults
    tables = {
        "requests": ("name, capability, state, current_version, current_execution, created, "
                     "updated", requests),
        "versions": ("request, number, capability, sha256, spec, document, source_file, "
                     "source_identity, actor, created", versions),
        "executions": ("id, request, version, number, capability, state, priority, "
                       "engine_state, engine, site, engine_id, directory, parameters, created, "
                       "started, stopped, exit_code, reason", execs),
        "nodes": ("execution, node, state, attempts, cluster, exit_code, signal, hold_code, "
                  "hold_subcode, reason, host, started, finished", nodes),
        "events": ("time, type, request, version, execution, actor, data", events),
    }
    with store.transaction():
        for table, (columns, rows) in tables.items():
            marks = ", ".join("?" * len(columns.split(",")))
            conn.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("ANALYZE")
    store.close()
    return root


def _status_query_s(home: Path, repeats: int) -> float:
    """The status query alone, in this process (the command minus start-up)."""
    from docket.report import status
    from docket.store import Store

    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        store = Store.open_readonly(home / "state" / "docket.db")
        status(store, 20, None)
        store.close()
        times.append(time.perf_counter() - start)
    return median(times)


# The same query and table with no CLI framework: what the command could cost.
_FLOOR = """
import sys
from pathlib import Path
from docket.home import resolve_home
from docket.report import status
from docket.store import Store
store = Store.open_readonly(resolve_home(Path(sys.argv[1])).database)
r = status(store, 20, None)
store.close()
print(f"{r['total']} requests: " + ", ".join(f"{n} {s}" for s, n in sorted(r["counts"].items())))
for q in r["requests"]:
    print(q["name"], q["capability"], f"v{q['version']}", q["state"], q["updated"][:19])
"""


def _import_s(repeats: int) -> float:
    """What the command's imports cost: ``python -c 'import cli.docket'``."""
    return median([timed_run([str(PYTHON), "-c", "import cli.docket"])
                   for _ in range(repeats)])


def run(quick: bool = False) -> list[dict[str, Any]]:
    executions = 100_000
    repeats = 7 if quick else 21
    root = scratch("status")
    try:
        t0 = time.perf_counter()
        home = build_home(root / "home", executions)
        log(f"{BENCH}: built a home with {executions:,} executions in "
            f"{time.perf_counter() - t0:.1f} s")
        first_run = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        out = subprocess.run([str(DOCKET), "status", "--home", str(home)], capture_output=True,
                             text=True, check=True, env=first_run).stdout
        first = out.splitlines()[0]
        expected = executions - executions // 5
        if not first.startswith(f"{expected} requests"):
            raise RuntimeError(f"docket status said {first!r}, expected {expected} requests")
        # a fresh checkout without bytecode, which nothing may write to
        fresh = root / "fresh"
        for package in ("docket", "cli", "schemas"):
            shutil.copytree(REPO / package, fresh / package,
                            ignore=shutil.ignore_patterns("__pycache__"))
        no_bytecode = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(fresh)}
        times = interleave({
            "docket status": lambda: timed_run([str(DOCKET), "status", "--home", str(home)]),
            "no bytecode": lambda: timed_run([str(DOCKET), "status", "--home", str(home)],
                                             env=no_bytecode),
            "docket status --json": lambda: timed_run(
                [str(DOCKET), "status", "--json", "--home", str(home)]),
            "library only": lambda: timed_run([str(PYTHON), "-c", _FLOOR, str(home)]),
            "python -c pass": lambda: timed_run([str(PYTHON), "-c", "pass"]),
        }, repeats, warmup=2, label=BENCH)
        query_s = _status_query_s(home, repeats)
        import_s = _import_s(max(5, repeats // 3))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    status_s = median(times["docket status"])
    json_s = median(times["docket status --json"])
    no_bytecode_s = median(times["no bytecode"])
    floor_s = median(times["python -c pass"])
    library_s = median(times["library only"])
    return [
        row(BENCH, f"`docket status`, {executions:,} executions (whole command)",
            status_s * 1e3, "ms", baseline="`python -c pass`", baseline_value=floor_s * 1e3,
            ratio_note="× baseline", target="≤ 150 ms median", met=status_s <= 0.150,
            runs=repeats, digits=1),
        row(BENCH, "`docket status --json`", json_s * 1e3, "ms",
            baseline="`python -c pass`", baseline_value=floor_s * 1e3, ratio_note="× baseline",
            runs=repeats, digits=1),
        row(BENCH, "`docket status` with no bytecode cache (a fresh copy of the packages, "
            "`PYTHONDONTWRITEBYTECODE=1`: every run compiles docket's source)",
            no_bytecode_s * 1e3, "ms", baseline="`python -c pass`",
            baseline_value=floor_s * 1e3, ratio_note="× baseline", runs=repeats, digits=1),
        row(BENCH, "where it goes: `python -c 'import cli.docket'`", import_s * 1e3, "ms",
            baseline="`python -c pass`", baseline_value=floor_s * 1e3,
            ratio_note="× baseline", runs=max(5, repeats // 3), digits=1),
        row(BENCH, "where it goes: the same query and table from a plain script (docket.home, "
            "docket.store, docket.report; no CLI framework)", library_s * 1e3, "ms",
            baseline="`python -c pass`", baseline_value=floor_s * 1e3, ratio_note="× baseline",
            runs=repeats, digits=1),
        row(BENCH, "where it goes: the status query in-process (open read-only + "
            "`docket.report.status`)", query_s * 1e3, "ms", runs=repeats, digits=2),
    ]


if __name__ == "__main__":
    for r in run(quick="--quick" in sys.argv):
        print(r)
