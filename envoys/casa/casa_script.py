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
    try:
        import casatasks
    except ImportError as exc:
        sys.stderr.write(f"casa-envoy-script: {sys.executable} cannot import casatasks "
                         f"({exc}); install casatasks==6.7.0.31 for it or set the casa-envoy "
                         "'python' setting\n")
        return 1
    import casatools

    # the version that ran, for the products' provenance
    with open("casa-version.txt", "w") as fh:
        fh.write(casatools.version_string() + "\n")
    tasks = job["tasks"]
    for index, step in enumerate(tasks, 1):
        print(f"[{index}/{len(tasks)}] {step['task']}", flush=True)
        value = getattr(casatasks, step["task"])(**step["args"])
        if step.get("save"):
            with open(step["save"], "w") as fh:
                json.dump(value, fh, indent=1, default=_plain)
    return 0


def _plain(value):
    """numpy values (what imstat and calstat return) as plain JSON."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, complex):
        return [value.real, value.imag]
    return str(value)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
