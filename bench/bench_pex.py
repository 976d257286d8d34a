"""Start-up of the tools' PEX files: ``TOOL.pex --help`` warm and cold, against the venv.

For every tool (``make pex`` builds them; up-to-date ones are reused) the PEX file is
copied into a scratch "node" directory and run as a cluster node runs it: by its path,
with ``PATH=/usr/bin:/bin`` and a PEX_ROOT of its own, so the /bin/sh preamble picks the
system's python3.11 (Debian's 3.11.2 here). Four commands run interleaved, round-robin,
so machine noise hits them alike:

- ``venv``: ``.venv/bin/TOOL --help``, the same tool installed in the dev venv (the
  baseline; pyenv's 3.11.7 with the editable install);
- ``pex``: ``./TOOL.pex --help``, warm (its venv already installed in PEX_ROOT);
- ``python3 pex``: ``python3 TOOL.pex --help``, warm: python starts first, runs pex's
  bootstrap from the zip, which then re-executes the installed venv;
- ``pex, venv's interpreter``: ``./TOOL.pex --help`` with the venv's base python first on
  PATH, so that the PEX and the baseline run the same interpreter build.

Cold is ``./TOOL.pex --help`` with a fresh, empty PEX_ROOT (the PEX installs itself).
Target (issue 5): warm <= 1.1x the venv, cold <= 3 s.

Run ``python bench/bench_pex.py [--quick]`` to print the table.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import BIN, REPO, interleave, log, median, row, scratch, timed_run

__all__ = ["run"]

BENCH = "PEX start-up"
TARGET = "warm <= 1.1x venv, cold <= 3 s"
WARM_RATIO = 1.1
COLD_S = 3.0
NODE_PATH = "/usr/bin:/bin"


def _build_module() -> ModuleType:
    name = "docket_pex_build"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "pex-build" / "build.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _measure(tool: str, pex: Path, node: Path, *, repeats: int, colds: int) -> dict[str, Any]:
    node_env = {"PATH": NODE_PATH, "PEX_ROOT": str(node / "pex-root")}
    # the venv's own interpreter build (pyenv here), for a like-for-like comparison
    same_env = {"PATH": f"{Path(sys.base_prefix) / 'bin'}:{NODE_PATH}",
                "PEX_ROOT": str(node / "pex-root-same")}
    venv_script = BIN / tool
    # first runs install each PEX into its PEX_ROOT: warm means every later run
    timed_run([str(pex), "--help"], env=node_env)
    timed_run([str(pex), "--help"], env=same_env)
    runners = {
        "venv": lambda: timed_run([str(venv_script), "--help"], env={"PATH": NODE_PATH}),
        "pex": lambda: timed_run([str(pex), "--help"], env=node_env),
        "python3 pex": lambda: timed_run(["python3", str(pex), "--help"], env=node_env),
        "pex same-python": lambda: timed_run([str(pex), "--help"], env=same_env),
    }
    results = interleave(runners, repeats, warmup=1, label=f"{tool} --help")
    cold = []
    for attempt in range(colds):
        root = node / f"pex-root-cold-{attempt}"
        cold.append(timed_run([str(pex), "--help"], env={"PATH": NODE_PATH,
                                                         "PEX_ROOT": str(root)}))
        shutil.rmtree(root)
    log(f"{tool} cold: " + ", ".join(f"{c:.2f}" for c in cold))
    return {name: median(values) for name, values in results.items()} | {
        "cold": median(cold), "runs": repeats, "cold_runs": colds}


def run(quick: bool = False) -> list[dict]:
    """One row per tool: warm and cold ``TOOL.pex --help`` against the venv's ``TOOL --help``."""
    repeats, colds = (5, 1) if quick else (9, 3)
    build = _build_module()
    built = build.build(log=log)
    node = scratch("pex")
    rows = []
    try:
        for item in built:
            pex = node / item.path.name
            shutil.copy2(item.path, pex)
            m = _measure(item.name, pex, node, repeats=repeats, colds=colds)
            ratio = m["pex"] / m["venv"]
            met = ratio <= WARM_RATIO and m["cold"] <= COLD_S
            note = (f"cold {m['cold']:.2f} s (median of {colds}); python3 {pex.name}: "
                    f"{m['python3 pex']:.3f} s; on the venv's interpreter: "
                    f"{m['pex same-python']:.3f} s")
            base = row(BENCH, f"{item.name}.pex --help, warm", m["pex"], "s",
                       baseline="same tool from the venv", baseline_value=m["venv"],
                       ratio=ratio, ratio_note="x venv time", target=TARGET, met=met,
                       runs=repeats, note=note)
            rows.append(base | {
                "name": f"{item.name} --help",
                "median_s": m["pex"],
                "baseline_median_s": m["venv"],
                "cold_s": m["cold"],
                "python3_median_s": m["python3 pex"],
                "same_interpreter_median_s": m["pex same-python"],
                "size_bytes": item.path.stat().st_size,
            })
    finally:
        shutil.rmtree(node, ignore_errors=True)
    return rows


def _table(rows: list[dict]) -> str:
    header = ("tool", "pex warm s", "venv s", "ratio", "cold s", "python3 pex s",
              "pex same-py s", "MB", "met")
    lines = [header]
    for r in rows:
        lines.append((r["name"].removesuffix(" --help"), f"{r['median_s']:.3f}",
                      f"{r['baseline_median_s']:.3f}", f"{r['ratio']:.2f}",
                      f"{r['cold_s']:.2f}", f"{r['python3_median_s']:.3f}",
                      f"{r['same_interpreter_median_s']:.3f}", f"{r['size_bytes'] / 1e6:.1f}",
                      "yes" if r["met"] else "no"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                     for line in lines)


if __name__ == "__main__":
    print(_table(run(quick="--quick" in sys.argv[1:])))
