"""What the pool tests (marked ``condor``) share: a docket home whose site is this
machine's schedd, requests dropped into it, waits bounded by ``DOCKET_POOL_TIMEOUT_S``,
and the clean-up of every job submitted from the home, whatever happened."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.conftest import CURRENT_USER, run_docket
from tests.htcondor.condorkit import DATA, TEMPLATES, dagman_clusters, outside_tmp, remove_jobs

WAIT_S = float(os.environ.get("DOCKET_POOL_TIMEOUT_S", "600"))
# the VLASS requests' input: the demo-vlass stand-in (tests/workflows), vela for CASA
VELA = {"locator": "uid://docket/observation/demo-vlass/v1", "ms": "demo-vlass/demo-vlass.ms",
        "casa": "vela"}


def bindings() -> tuple[Any, Any]:
    """(htcondor2, this machine's schedd)."""
    import htcondor2

    return htcondor2, htcondor2.Schedd()


def home_clusters(home: Path) -> set[int]:
    """Every DAGMan job submitted from ``home`` (its processing directories' records)."""
    return dagman_clusters(home / "work")


@contextmanager
def pool_home_at() -> Iterator[Path]:
    """A home outside /tmp with the shipped capabilities (and the test memhog), this
    machine's schedd as its only site; every job submitted from it is removed at the end."""
    with outside_tmp() as root:
        shutil.copytree(TEMPLATES, root / "templates")
        shutil.copytree(DATA / "capabilities" / "memhog", root / "templates" / "memhog")
        (root / "spool" / "incoming").mkdir(parents=True)
        (root / "analysts.yaml").write_text(
            f"analysts:\n  {CURRENT_USER}:\n    roles: [da, aod, operator]\n")
        (root / "sites.yaml").write_text("default: [pool]\nsites:\n  - name: pool\n"
                                         "    schedd: local\n")
        try:
            yield root
        finally:  # every job submitted from this home, and its node jobs
            remove_jobs(bindings()[1], home_clusters(root))


def submit(home: Path, name: str, capability: str, /, declared: list | None = None,
           output_dir: str | None = None, **parameters: object) -> None:
    """Drop a request; ``declared``: the outputs its spec declares."""
    import yaml

    doc = {"apiVersion": "docket/v1", "kind": "CapabilityRequest",
           "metadata": {"name": name},
           "spec": {"capability": capability, "parameters": parameters}}
    if declared:
        doc["spec"]["outputs"] = declared
    if output_dir:
        doc["spec"]["output_dir"] = output_dir
    path = home / "spool" / "incoming" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))


def docket(home: Path, *args: str) -> dict:
    result = run_docket(*args, "--home", str(home), "--json")
    assert result.code == 0, result.err
    return result.json()


def until(home: Path, what: Callable[[], bool], ticking: bool = True) -> None:
    deadline = time.monotonic() + WAIT_S
    while True:
        if ticking:
            run_docket("tick", "--home", str(home))
        if what():
            return
        assert time.monotonic() < deadline, "the pool did not get there in time"
        time.sleep(2)


def state(home: Path, name: str) -> str:
    return docket(home, "show", name)["request"]["state"]


def execution(home: Path, name: str) -> dict:
    return docket(home, "show", name)["executions"][0]


def ended(home: Path, name: str, *more: str) -> Callable[[], bool]:
    """A wait condition: every named request has reached a final or waiting state."""
    return lambda: all(execution(home, n)["state"] in (
        "complete", "failed", "cancelled", "awaiting-qa") for n in (name, *more))


def nodes(home: Path, name: str) -> dict[str, dict]:
    """The node table as ``docket inspect --json`` gives it (with each job's cluster)."""
    return {n["node"]: n for n in docket(home, "inspect", name)["nodes"]}


def directory(home: Path, name: str) -> Path:
    return Path(execution(home, name)["directory"])


def node_cluster(home: Path, name: str, node: str, states: tuple[str, ...]) -> int:
    found: dict = {}

    def there() -> bool:
        row = nodes(home, name).get(node)
        if row and row.get("state") in states and row.get("cluster") is not None:
            found["cluster"] = int(row["cluster"])
            return True
        return False

    until(home, there)
    return found["cluster"]
