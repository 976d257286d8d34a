"""The embedded local engine: each DAG runs in its own detached runner process.

See ``docket.engines.localdag`` for the runner. This side starts it, tells whether it
is alive (by its lock, never by a PID guess), reads its result and stops it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from docket.engines.base import DagResult, Engine, Unsupported, metrics_file
from docket.engines.dagman_files import rescue_files
from docket.engines.localdag import dag_files, lock_is_held, stop_leftover_jobs
from docket.fileio import atomic_write
from schemas.sites import Site

__all__ = ["LocalEngine", "started_runners"]

# The runners this process started and has not collected (reaped) yet. Per process, not
# per engine: an engine built again when sites.yaml changes still reaps the runners that
# the one before it started.
_CHILDREN: dict[Path, subprocess.Popen[bytes]] = {}


def started_runners() -> list[int]:
    """The PIDs of the runners this process started and has not reaped: a caller waiting
    for work to end (``docket tick --wait``) wakes when one of them exits."""
    return [child.pid for child in _CHILDREN.values()]


class LocalEngine(Engine):
    name = "local"
    removes_held_jobs = True  # nobody could release a held job here (see localdag)

    def __init__(self, max_jobs: int | None = None,
                 limits: dict[str, float] | None = None,
                 shared_filesystem: bool = True) -> None:
        self.max_jobs = max_jobs or os.cpu_count() or 1
        self.limits = dict(limits or {})
        # the site's shared_filesystem: False sandboxes every vanilla job, as a pool
        # without a shared filesystem would (only transferred files in and out)
        self.shared_filesystem = shared_filesystem

    @classmethod
    def for_site(cls, site: Site | None, config: Any = None) -> LocalEngine:
        """The engine of the site ``local`` (the registry's constructor), with the home's
        ``local_max_jobs`` and ``concurrency_limits``."""
        return cls(getattr(config, "local_max_jobs", None),
                   getattr(config, "concurrency_limits", None),
                   shared_filesystem=site.shared_filesystem if site is not None else True)

    def submit(self, dag: Path) -> str:
        self.reap()
        # Take the DAG's lock here and hand it to the runner: the lock is held from this
        # moment on, so a watcher pass that looks while the runner is still starting sees
        # it alive (and does not "resume" a runner that is merely slow to start). When a
        # runner holds it already, the new one finds that out and exits (code 7).
        lock_fd = os.open(dag_files(dag)["lock"], os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.ftruncate(lock_fd, 0)  # an earlier runner's PID is not this one's
            handed = [f"--lock-fd={lock_fd}"]
        except BlockingIOError:
            handed = []
        try:
            child = self._start(dag, lock_fd if handed else None, handed)
            if handed:  # what cancel and hold signal (the runner writes it again)
                os.pwrite(lock_fd, f"{child.pid}\n".encode(), 0)
        finally:
            os.close(lock_fd)  # the runner keeps its own copy (the same open file)
        _CHILDREN[dag] = child
        return f"local:{child.pid}"

    def _start(self, dag: Path, lock_fd: int | None, extra: list[str]
               ) -> subprocess.Popen[bytes]:
        with open(dag.with_name(f"{dag.name}.lib.err"), "ab") as err:
            return subprocess.Popen(
                [sys.executable, "-m", "docket.engines.localdag", str(dag), *extra,
                 "--max-jobs", str(self.max_jobs),
                 *(f"--limit={k}={v}" for k, v in sorted(self.limits.items())),
                 *([] if self.shared_filesystem else ["--no-shared-filesystem"]),
                 # a rescue DAG beside it (resubmit --rescue, or a retry after a failed
                 # run) marks the nodes that are done, as condor_submit_dag's auto-rescue
                 *(["--rescue"] if rescue_files(dag) else [])],
                cwd=dag.parent, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                start_new_session=True, pass_fds=() if lock_fd is None else (lock_fd,))

    def resume(self, dag: Path) -> str:
        # the runner reads its .progress file (and a rescue DAG) and skips finished nodes
        return self.submit(dag)

    def reap(self) -> None:
        """Collect finished runners so none lingers as a zombie under a long watcher."""
        for dag, child in list(_CHILDREN.items()):
            if child.poll() is not None:
                del _CHILDREN[dag]

    def started(self, dag: Path) -> bool:
        # submit() creates the runner's stderr file before it starts the runner, so a
        # watcher killed in between still knows not to render and start a second one
        files = dag_files(dag)
        return (dag.with_name(f"{dag.name}.lib.err").exists() or files["progress"].exists()
                or files["metrics"].exists() or lock_is_held(files["lock"]))

    def alive(self, dag: Path) -> bool:
        # submit() takes the lock before the runner starts and hands it over, so the
        # lock alone tells, in this process or any other
        return lock_is_held(dag_files(dag)["lock"])

    def result(self, dag: Path) -> DagResult | None:
        try:
            metrics = json.loads(metrics_file(dag).read_text())
        except FileNotFoundError:
            return None
        except json.JSONDecodeError:
            metrics = {"exitcode": 1, "status": "failed",
                       "reason": f"{metrics_file(dag).name} is not valid JSON"}
        if not isinstance(metrics, dict):
            metrics = {"exitcode": 1, "status": "failed",
                       "reason": f"{metrics_file(dag).name} does not hold a JSON object"}
        return DagResult.from_metrics(metrics, self.name)

    def _signal_runner(self, dag: Path, signum: int) -> bool:
        files = dag_files(dag)
        if not lock_is_held(files["lock"]):
            return False
        with contextlib.suppress(ValueError, IndexError, OSError):
            os.kill(int(files["lock"].read_text().split()[0]), signum)
            return True
        return False

    def hold(self, dag: Path, reason: str = "paused by docket") -> None:
        """Pause: running jobs finish, no new job starts (as holding DAGMan does)."""
        self._signal_runner(dag, signal.SIGUSR1)

    def release(self, dag: Path) -> None:
        self._signal_runner(dag, signal.SIGUSR2)

    def remove_node_job(self, dag: Path, cluster: int, proc: int | None = None,
                        reason: str = "removed by docket's failure policy") -> None:
        raise Unsupported(f"the local engine cannot remove job {cluster} of {dag} on "
                          "request", "it removes held jobs itself, as soon as they are held")

    def cancel(self, dag: Path) -> None:
        files = dag_files(dag)
        if self._signal_runner(dag, signal.SIGTERM) or lock_is_held(files["lock"]):
            return
        if not files["metrics"].exists():
            # nothing runs it: stop what a killed runner left behind, and record the
            # removal the runner would have written
            stop_leftover_jobs(dag)
            atomic_write(files["metrics"], json.dumps(
                {"engine": self.name, "status": "removed", "exitcode": 2,
                 "failed_nodes": {}, "jobs": 0}))
