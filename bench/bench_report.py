"""``docket report`` on a home of 10,000 requests: the first write, then cron's reruns.

The home is built through the store's own reducer (``Store.record``, in one transaction):
each request has a version, an execution that ran three nodes and ended (one in ten
failed, with a failure-policy decision), as ``docket show`` would see them. No processing
directories exist, so no DAG is drawn: this measures the pages, not Graphviz.

Three figures: the first full write; a rerun after 10 requests have new events (what cron
does every minute on a busy home); a rerun when nothing changed. The baseline writes the
same number of files of the same total size with plain ``open().write()``: the disk's
part of the job.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import REPO, docket, log, make_home, median, row, scratch

__all__ = ["run", "build_home"]

BENCH = "HTML report of a large home"


def build_home(home: Path, count: int) -> None:
    sys.path.insert(0, str(REPO))
    from docket.store import Store

    store = Store(home / "state" / "docket.db")
    try:
        with store.transaction():
            for i in range(count):
                name = f"req-{i:06d}"
                failed = i % 10 == 0
                common = {"request": name, "version": 1, "execution": i + 1}
                store.record("version.accepted", request=name, version=1, actor="bench",
                             capability="null", sha256=f"{i:064x}", spec={"capability": "null"},
                             document=f"metadata: {{name: {name}}}\n", source_file=f"{name}.yaml")
                store.record("execution.created", **common, actor="bench", number=1,
                             capability="null", state="submitted", priority=0, parameters={})
                for src, dst, event in (("submitted", "queued", "accept"),
                                        ("queued", "executing", "start")):
                    store.record("execution.transition", **common, event=event, to=dst,
                                 final=False, actions=[], **{"from": src})
                for node in ("fetch", "run", "deliver"):
                    bad = failed and node == "run"
                    store.record("node.submitted", **common, node=node, cluster=i * 3)
                    store.record("node.finished", **common, node=node,
                                 exit_code=1 if bad else 0,
                                 reason="job exited with 1" if bad else None)
                    if bad:
                        store.record("policy.decided", **common, node=node, attempt=1,
                                     action="fail", rule="exit_code 1 -> fail",
                                     reason="exit_code 1 -> fail")
                        break
                store.record("execution.finished", **common, exit_code=1 if failed else 0,
                             products=[{"path": "products/out.fits", "size_bytes": 4,
                                        "sha256": f"{i:064x}"}])
                store.record("execution.transition", **common,
                             event="fail" if failed else "succeed",
                             to="failed" if failed else "complete", final=True, actions=[],
                             reason="node run: job exited with 1" if failed else None,
                             **{"from": "executing"})
    finally:
        store.close()


def _touch(home: Path, count: int) -> None:
    from docket.store import Store

    store = Store(home / "state" / "docket.db")
    try:
        with store.transaction():
            for i in range(0, count * 997, 997):
                store.record("request.source_removed", request=f"req-{i % 10_000:06d}",
                             path="gone.yaml")
    finally:
        store.close()


def _baseline(out: Path, sizes: list[int]) -> float:
    shutil.rmtree(out, ignore_errors=True)
    (out / "requests").mkdir(parents=True)
    start = time.perf_counter()
    for i, size in enumerate(sizes):
        with open(out / "requests" / f"page-{i:06d}.html", "w") as fh:
            fh.write("x" * size)
    return time.perf_counter() - start


def run(quick: bool = False) -> list[dict[str, Any]]:
    count = 1_000 if quick else 10_000
    root = scratch("report")
    try:
        home = make_home(root / "home")
        log(f"{BENCH}: building a home of {count:,} requests")
        build_home(home, count)
        out = root / "site"
        fulls, sizes = [], []
        for attempt in range(2 if quick else 1):  # one 10,000-page write is minutes
            shutil.rmtree(out, ignore_errors=True)
            start = time.perf_counter()
            docket(home, "report", "--out", str(out))
            fulls.append(time.perf_counter() - start)
            log(f"{BENCH}: full write {attempt + 1}: {fulls[-1]:.1f} s")
        sizes = [p.stat().st_size for p in (out / "requests").iterdir()]
        bases = [_baseline(root / "baseline", sizes) for _ in range(len(fulls))]
        changed, unchanged = [], []
        for _ in range(3):
            _touch(home, 10)
            start = time.perf_counter()
            docket(home, "report", "--out", str(out))
            changed.append(time.perf_counter() - start)
            start = time.perf_counter()
            docket(home, "report", "--out", str(out))
            unchanged.append(time.perf_counter() - start)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    base = f"writing {count:,} files of the same sizes with open().write()"
    mb = sum(sizes) / 1e6
    return [
        row(BENCH, f"first write, {count:,} request pages ({mb:.0f} MB)", median(fulls), "s",
            baseline=base, baseline_value=median(bases), ratio_note="× baseline time",
            runs=len(fulls), digits=1),
        row(BENCH, "rerun after 10 requests changed (cron, every minute)", median(changed),
            "s", target="≤ 10 s", met=median(changed) <= 10, runs=len(changed), digits=2),
        row(BENCH, "rerun with nothing changed", median(unchanged), "s",
            target="≤ 10 s", met=median(unchanged) <= 10, runs=len(unchanged), digits=2),
    ]


if __name__ == "__main__":
    for r in run(quick="--quick" in sys.argv):
        print(r)
