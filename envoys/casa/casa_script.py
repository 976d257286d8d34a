"""Run a docket CASA job under real CASA: one casatasks call per task in the job file.

casa-envoy copies this file into working/ as casa-envoy-script.py and runs it there:

    python casa-envoy-script.py casa-envoy-job.json --noconfig

(--noconfig is read by casaconfig: a node's ~/.casa/config.py must not change the run.)
It imports nothing from docket, so any python with casatasks can run it. A task that
raises ends the script with a traceback and exit status 1, exactly as CASA would.
"""

import json
import sys


def main(argv: list) -> int:
    if len(argv) < 2:
        sys.stderr.write("usage: casa-envoy-script.py JOB.json [--noconfig]\n")
        return 2
    with open(argv[1]) as fh:
        job = json.load(fh)
    tasks = job["tasks"]
    try:
        casatasks = import_casatasks({step["task"] for step in tasks})
    except ImportError as exc:
        sys.stderr.write(f"casa-envoy-script: {sys.executable} cannot import casatasks "
                         f"({exc}); install casatasks==6.7.0.31 for it or set the casa-envoy "
                         "'python' setting\n")
        return 1
    import casatools

    # the version that ran, for the products' provenance
    with open("casa-version.txt", "w") as fh:
        fh.write(casatools.version_string() + "\n")
    for index, step in enumerate(tasks, 1):
        print(f"[{index}/{len(tasks)}] {step['task']}", flush=True)
        value = getattr(casatasks, step["task"])(**step["args"])
        if step.get("save"):
            with open(step["save"], "w") as fh:
                json.dump(value, fh, indent=1, default=_plain)
    return 0


def import_casatasks(wanted):
    """casatasks, with only the ``wanted`` tasks imported now and any other on first use.

    casatasks/__init__.py imports every one of its ~120 tasks, and a few of them pull in
    most of scipy: 1.8-3.4 s here, against 0.35-0.5 s for a quicklook's two tasks, for
    tasks the job never calls. The package's own __init__ runs, with its task imports
    other than the wanted ones left out (the log, version and MPI set-up all as in a
    plain import); the rest are imported by the package's __getattr__ when something
    asks for one (``casatasks.applycal``, ``from casatasks import applycal``). Should
    that source not have the shape this expects, or fail, it is the plain ``import
    casatasks``.
    """
    import importlib
    import importlib.util
    import re

    if "casatasks" in sys.modules:
        return sys.modules["casatasks"]
    spec = importlib.util.find_spec("casatasks")
    if spec is None or spec.origin is None or spec.loader is None:
        raise ImportError("No module named 'casatasks'")
    with open(spec.origin) as fh:
        source = fh.read()
    task_import = re.compile(r"from \.(\w+) import (\w+)")
    kept, deferred = [], set()
    for line in source.splitlines():
        found = task_import.fullmatch(line)
        if found and found[1] == found[2] and found[1] not in wanted:
            deferred.add(found[1])
            continue
        kept.append(line)
    if not deferred:
        return importlib.import_module("casatasks")
    module = importlib.util.module_from_spec(spec)

    def lazy_task(name):
        if name not in deferred:
            raise AttributeError(f"module 'casatasks' has no attribute {name!r}")
        task = getattr(importlib.import_module(f"casatasks.{name}"), name)
        setattr(module, name, task)
        return task

    module.__getattr__ = lazy_task
    sys.modules["casatasks"] = module
    try:
        exec(compile("\n".join(kept) + "\n", spec.origin, "exec"), module.__dict__)
    except Exception:
        for name in [n for n in sys.modules if n == "casatasks" or n.startswith("casatasks.")]:
            del sys.modules[name]
        return importlib.import_module("casatasks")
    return module


def _plain(value):
    """numpy values (what imstat and calstat return) as plain JSON."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, complex):
        return [value.real, value.imag]
    return str(value)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
