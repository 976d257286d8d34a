"""The quicklook workflow on real CASA, next to the same recipe as a bare casatasks script.

docket: ``docket submit`` of a quicklook request on the demo observation
(envoys.casa.demodata), then ``docket tick --wait`` until it is complete — gathering
data (productfetcher from the archive), running CASA (casa-envoy --recipe), post-CASA
work (casa-envoy --post), each a node of the local engine. The baseline, interleaved
with it: the recipe that run rendered, as a plain Python script calling casatasks (copy
the MS from the archive, then the same task calls with the same arguments) under the
same CASA environment. The same request with ``casa: vela`` gives docket's own overhead
per workflow (no CASA at all). The bare script starts with ``import casatasks``, as a
DA's script does, and that imports all ~120 of casatasks' tasks (scipy among them):
1.8–3.4 s here, against 0.35–0.5 s for quicklook's two tasks (three runs each, idle
machine). casa-envoy's CASA child imports only the tasks its job calls (the rest on
first use; ``envoys/casa/casa_script.py``), so docket can finish before the bare script.
A second baseline takes that difference out: the same bare script importing casatasks
the way the child does, so the ratio to it is docket's own cost over the same CASA work.

docket's own commands (submit, tick and the DAG runner they start) run with their
bytecode cached, as in any installed docket (pip and PEX builds write .pyc files;
casatasks, which the baseline imports, has them from its wheel). A shell that sets
PYTHONDONTWRITEBYTECODE would otherwise make submit, tick and the runner compile the
modules only they import (schemas, intake, rendering, ...) again in every round, which no
deployment pays: measured 1.80 → 1.61 CPU-seconds for the whole vela workflow (medians of
4, interleaved, load ~5.6). The cache is the run's own (PYTHONPYCACHEPREFIX under its
scratch directory), so no other benchmark sees it; the jobs and the baseline keep the
environment they had.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import PYTHON, REPO, Skip, docket, interleave, log, median, row, scratch

__all__ = ["run"]

BENCH = "quicklook on real CASA (tiny demo observation)"

_BARE = r'''
import json, shutil, sys
import casatasks
recipe = json.load(open(sys.argv[1]))
shutil.copytree(sys.argv[2], recipe["vis"])
for step in recipe["steps"]:
    getattr(casatasks, step["task"])(**step["args"])
'''

# the same, importing casatasks as casa-envoy's CASA child does (only the tasks it calls)
_BARE_LEAN = r'''
import json, shutil, sys
recipe = json.load(open(sys.argv[1]))
sys.path.insert(0, sys.argv[3])
from casa_script import import_casatasks
casatasks = import_casatasks({step["task"] for step in recipe["steps"]})
shutil.copytree(sys.argv[2], recipe["vis"])
for step in recipe["steps"]:
    getattr(casatasks, step["task"])(**step["args"])
'''


def _request(name: str, program: str) -> str:
    return json.dumps({"apiVersion": "docket/v1", "kind": "CapabilityRequest",
                       "metadata": {"name": name},
                       "spec": {"capability": "quicklook", "parameters": {
                           "locator": "uid://docket/observation/demo-vlass/v1",
                           "ms": "demo-vlass/demo-vlass.ms", "field": "T1",
                           "casa": program}}})


@contextlib.contextmanager
def _bytecode_cached(prefix: Path) -> Iterator[None]:
    """docket's commands started in this block keep their .pyc files under ``prefix``."""
    before = {k: os.environ.get(k) for k in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(prefix)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run(quick: bool = False) -> list[dict[str, Any]]:
    import importlib.util

    if importlib.util.find_spec("casatasks") is None:  # importing it needs CASA's setup
        raise Skip("CASA is not installed; make casa")
    sys.path.insert(0, str(REPO))
    from envoys.casa.demodata import build_demo_data
    from envoys.casa.foundation import casa_environment, find_measures

    root = scratch("quicklook")
    data = build_demo_data(root / "demo")
    home = root / "home"
    home.mkdir()
    shutil.copytree(REPO / "templates", home / "templates")
    (home / "analysts.yaml").write_text("analysts: {}\n")
    os.environ["DOCKET_TOOLS_CONFIG"] = str(data.tools_config)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    serial = itertools.count()
    recipes: list[Path] = []

    def workflow(program: str) -> float:
        name = f"ql-{program}-{next(serial)}"
        document = root / f"{name}.yaml"
        document.write_text(_request(name, program))
        with _bytecode_cached(root / "pycache"):
            start = time.perf_counter()
            docket(home, "submit", str(document))
            docket(home, "tick", "--wait")
            elapsed = time.perf_counter() - start
        shown = json.loads(docket(home, "show", name, "--json", stdout=-1).stdout)
        if shown["request"]["state"] != "complete":
            raise RuntimeError(f"{name}: {shown['executions'][0]['reason']}")
        recipes.append(Path(shown["executions"][0]["directory"]) / "recipe.yaml")
        return elapsed

    first = workflow("casa")  # the run whose rendered recipe the bare script repeats
    import yaml

    recipe = yaml.safe_load(recipes[0].read_text())
    bare_dir = root / "bare"
    env = casa_environment(bare_dir / "site", find_measures(str(PYTHON)))
    (bare_dir / "bare.py").write_text(_BARE)
    (bare_dir / "bare_lean.py").write_text(_BARE_LEAN)
    source_ms = data.archive / "observation" / "demo-vlass" / "v1" / "demo-vlass.ms"

    def bare(script: str = "bare.py") -> float:
        work = bare_dir / f"run-{next(serial)}"
        (work / "working").mkdir(parents=True)
        (work / "products").mkdir()
        job = {"vis": str(work / "working" / "demo-vlass.ms"), "steps": recipe["steps"]}
        (work / "job.json").write_text(json.dumps(job))
        import subprocess

        start = time.perf_counter()
        proc = subprocess.run([str(PYTHON), str(bare_dir / script), str(work / "job.json"),
                               str(source_ms), str(REPO / "envoys" / "casa"), "--noconfig"],
                              cwd=work / "working", env=env,
                              capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"bare casatasks script failed: {proc.stderr[-2000:]}")
        return elapsed

    repeats = 1 if quick else 3
    log(f"quicklook: first docket run {first:.1f} s; {repeats} interleaved rounds")
    times = interleave({"docket": lambda: workflow("casa"), "bare": bare,
                        "bare-lean": lambda: bare("bare_lean.py"),
                        "vela": lambda: workflow("vela")}, repeats, warmup=0,
                       label="quicklook")
    ratio = median(times["docket"]) / median(times["bare"])
    return [
        row(BENCH, "quicklook through docket, real CASA (submit → complete)",
            median(times["docket"]), "s", baseline="the same recipe as a bare casatasks "
            "script", baseline_value=median(times["bare"]), ratio=ratio,
            ratio_note="× bare script", target="≤ 1.2×", met=ratio <= 1.2, runs=repeats,
            note="three local-engine nodes: productfetcher, casa-envoy --recipe, "
                 "casa-envoy --post; the bare script copies the MS and calls the tasks",
            digits=2),
        row(BENCH, "where it goes: docket next to the bare script importing only the tasks "
            "it calls", median(times["docket"]), "s",
            baseline="the bare script, casatasks imported as casa-envoy's CASA child does",
            baseline_value=median(times["bare-lean"]),
            ratio=median(times["docket"]) / median(times["bare-lean"]),
            ratio_note="× lean bare script", runs=repeats,
            note="docket's own overhead (submit, the DAG, three nodes) over the same CASA "
                 "work, the import difference taken out", digits=2),
        row(BENCH, "the same workflow with vela (docket's own overhead per workflow)",
            median(times["vela"]), "s", runs=repeats, digits=2),
    ]


if __name__ == "__main__":
    for item in run(quick="--quick" in sys.argv):
        print(item)
