"""Run every benchmark and write docs/performance.md (``make bench``).

Each ``bench/bench_<name>.py`` exposes ``run(quick: bool = False) -> list[dict]``: one dict
per table row, shaped by ``benchlib.row`` (measure, value, unit, baseline, baseline_value,
ratio, target, met, ...). A module may raise ``benchlib.Skip`` (or fail to import) to be
listed as skipped. Rows of another shape are printed as a plain table of their keys.

    .venv/bin/python bench/run.py            # everything, ~10 minutes -> docs/performance.md
    .venv/bin/python bench/run.py --quick    # smaller sizes, ~2 minutes -> bench/out/
    .venv/bin/python bench/run.py --only status,render

Only a full run (all benchmarks, not --quick) rewrites docs/performance.md; partial and
quick runs write bench/out/performance.md unless --output says otherwise. The raw rows go
to bench/out/results.json.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import REPO, Skip, log  # noqa: E402 - the path above makes it importable

# Order of the report; any other bench_*.py found runs after these.
ORDER = ["intake", "watch", "render", "status", "localdag", "pex"]
# Benchmarks owned elsewhere: a failure there is reported as skipped, not as our failure.
OPTIONAL = {"pex"}


def discover() -> list[str]:
    found = sorted(p.stem[len("bench_"):] for p in Path(__file__).parent.glob("bench_*.py"))
    return [n for n in ORDER if n in found or n in OPTIONAL] + [n for n in found
                                                                  if n not in ORDER]


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        commit = ""
    try:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "unknown"
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"nproc": str(nproc), "cpu": cpu, "memory": memory,
            "python": f"{platform.python_implementation()} {platform.python_version()}",
            "os": f"{platform.system()} {platform.release()}",
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": commit or "unknown", "load": load}


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value:  # NaN
            return "—"
        if digits == 0 or abs(value) >= 1000:
            return f"{value:,.0f}"
        text = f"{value:.{digits}g}" if abs(value) < 1 else f"{value:,.{digits}f}"
        return text.rstrip("0").rstrip(".") if "." in text and "e" not in text else text
    if isinstance(value, int):
        return f"{value:,}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def verdict(met: Any) -> str:
    return {True: "**met**", False: "**missed**"}.get(met, "—")


def table(rows: list[dict[str, Any]]) -> list[str]:
    standard = all("measure" in r and "value" in r for r in rows)
    if not standard:  # someone else's shape: show every key
        keys: list[str] = []
        for r in rows:
            keys.extend(k for k in r if k not in keys)
        lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(fmt(r.get(k)) for k in keys) + " |" for r in rows]
        return lines
    lines = ["| measure | docket | baseline (same run) | ratio | target | met |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        digits = r.get("digits", 3)
        figure = f"{fmt(r['value'], digits)} {r.get('unit', '')}".strip()
        base = "—"
        if r.get("baseline"):
            base = f"{fmt(r['baseline'])}: {fmt(r.get('baseline_value'), digits)} " \
                   f"{r.get('unit', '')}".strip()
        ratio = "—"
        if r.get("ratio") is not None:
            ratio = f"{r['ratio']:.2f}"
            if r.get("ratio_note"):
                ratio += f" {fmt(r['ratio_note'])}"
        lines.append(f"| {fmt(r['measure'])} | {figure} | {base} | {ratio} | "
                     f"{fmt(r.get('target') or None)} | {verdict(r.get('met'))} |")
    return lines


def report(results: dict[str, dict[str, Any]], info: dict[str, str], quick: bool,
           total_s: float) -> str:
    out = ["# docket performance", "",
           "Written by `make bench` (`bench/run.py`); do not edit by hand. Every figure sits "
           "next to a baseline measured in the same run on the same machine, measured and "
           "baseline runs interleaved so that the noise of a shared machine hits both. "
           "Figures are medians of the runs shown; on a noisy 2-core VM the **ratios** are "
           "what to compare between machines, not the absolute numbers. Other work on the "
           "machine (see the load averages) slows docket and its baselines alike, but not "
           "always by the same factor: fsync-bound figures move most.", ""]
    if quick:
        out += ["> **Quick run** (`--quick`): smaller sizes and fewer runs, a smoke test. "
                "The targets are defined for the full sizes.", ""]
    out += ["## Machine", "", "| | |", "|---|---|"]
    for key in ("nproc", "cpu", "memory", "python", "os", "date", "commit", "load",
                "load_end"):
        label = {"load": "load average (1, 5, 15 min) at start",
                 "load_end": "load average at end"}.get(key, key)
        out.append(f"| {label} | {fmt(info[key])} |")
    out += [f"| whole run | {total_s / 60:.1f} min |", ""]
    out += ["## Targets", "", "| benchmark | measure | target | result |", "|---|---|---|---|"]
    for res in results.values():
        if res["status"] != "ok":
            out.append(f"| {res['title']} | — | — | {res['status']}: {fmt(res['reason'])} |")
            continue
        for r in res["rows"]:
            if r.get("target"):
                figure = f"{fmt(r['value'], r.get('digits', 3))} {r.get('unit', '')}".strip()
                ratio = (f"; {r['ratio']:.2f} {r.get('ratio_note', '')}".rstrip()
                         if r.get("ratio") is not None else "")
                out.append(f"| {res['title']} | {fmt(r.get('measure'))} | {fmt(r['target'])} "
                           f"| {verdict(r.get('met'))}: {figure}{ratio} |")
    out.append("")
    for name, res in results.items():
        out += [f"## {res['title']}", ""]
        if res.get("doc"):
            out += [res["doc"], ""]
        if res["status"] != "ok":
            out += [f"**{res['status']}**: {res['reason']}", ""]
            continue
        out += table(res["rows"])
        notes = [r["note"] for r in res["rows"] if r.get("note")]
        out += [""] + [f"- {n}" for n in notes] + ([""] if notes else [])
        out += [f"_{res['seconds']:.0f} s, `bench/bench_{name}.py`_", ""]
    return "\n".join(out).rstrip() + "\n"


def first_paragraphs(module: Any, count: int = 1) -> str:
    doc = (module.__doc__ or "").strip()
    paragraphs = [" ".join(p.split()) for p in doc.split("\n\n") if p.strip()]
    return "\n\n".join(paragraphs[:count])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--only", help="comma-separated benchmark names (e.g. status,render)")
    parser.add_argument("--output", type=Path, help="where to write the report")
    args = parser.parse_args(argv)
    names = discover()
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in names]
        if unknown:
            parser.error(f"unknown benchmark(s) {', '.join(unknown)}; have {', '.join(names)}")
        names = [n for n in names if n in wanted]
    full = not args.quick and not args.only
    # docket is measured as it runs installed, with its bytecode cached (pip and PEX
    # builds write .pyc files); a shell with PYTHONDONTWRITEBYTECODE set would make every
    # docket process recompile its sources, and make each figure depend on whether an
    # earlier benchmark happened to leave __pycache__ behind. bench_status measures the
    # uncached case on purpose, in a row of its own.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    output = args.output or (REPO / "docs" / "performance.md" if full
                             else REPO / "bench" / "out" / "performance.md")
    info = machine()
    log(f"benchmarks: {', '.join(names)}{' (quick)' if args.quick else ''} -> {output}")
    results: dict[str, dict[str, Any]] = {}
    started = time.monotonic()
    failed = False
    for name in names:
        t0 = time.monotonic()
        res: dict[str, Any] = {"title": name, "status": "ok", "rows": [], "reason": ""}
        try:
            module = importlib.import_module(f"bench_{name}")
            res["title"] = getattr(module, "BENCH", name)
            res["doc"] = first_paragraphs(module, 2)
            log(f"--- {res['title']}")
            res["rows"] = list(module.run(quick=args.quick))
        except Skip as exc:
            res.update(status="skipped", reason=str(exc))
        except ModuleNotFoundError as exc:
            if exc.name != f"bench_{name}":
                raise
            res.update(status="skipped", reason=f"bench/bench_{name}.py is not there")
        except Exception as exc:
            log(traceback.format_exc())
            if name in OPTIONAL:
                res.update(status="skipped", reason=f"{exc.__class__.__name__}: {exc}")
            else:
                failed = True
                res.update(status="failed", reason=f"{exc.__class__.__name__}: {exc}")
        res["seconds"] = time.monotonic() - t0
        if res["status"] != "ok":
            log(f"{name}: {res['status']}: {res['reason']}")
        results[name] = res
    total_s = time.monotonic() - started
    info["load_end"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    text = report(results, info, args.quick, total_s)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    raw = REPO / "bench" / "out" / "results.json"
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text(json.dumps({"machine": info, "quick": args.quick, "results": results},
                              indent=2, default=str))
    log(f"wrote {output} ({total_s / 60:.1f} min)")
    print(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
