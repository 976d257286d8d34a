"""The local engine's DAG runner: DAGMan's job on this machine, as a detached process.

``python -m docket.engines.localdag WORKFLOW.dag [--max-jobs N]`` runs one DAG and writes
what DAGMan would beside it:

- ``<dag>.nodes.log``  node job events in HTCondor's user-log format;
- ``<dag>.dagman.out`` a human-readable account of what ran and why;
- ``<dag>.progress``   nodes that finished successfully (read back on a restart, like a
  rescue DAG, so completed nodes never run twice), cluster numbers used, and the
  process groups of running jobs (so a restarted runner can stop jobs its dead
  predecessor left behind before running their nodes again);
- ``<dag>.metrics``    JSON written once at the end, with the DAG's exit code;
- ``<dag>.lock``       held (flock) for as long as the runner lives: a second runner for
  the same DAG exits at once with code 7, and the watcher tests the lock to know it is
  alive.

The engine starts the runner in its own session, detached from any terminal or watcher,
so killing or restarting the watcher never kills a workflow; each job and script runs
in a process group of its own. SIGTERM removes the DAG: running jobs (their whole
process groups) are stopped, SIGKILLed after ``--kill-grace-s``, their removal is
logged as job-aborted events, and the metrics say ``removed``. ``stop_leftover_jobs``
stops the jobs of a runner that was SIGKILLed, for a cancel with no runner alive.

Where this differs from DAGMan, it is on purpose and listed in ``docs/htcondor.md``:
held jobs are removed at once (nobody can release them here), ``--max-jobs`` limits
running processes (so a ``queue 100`` node cannot start 100 processes on a laptop),
and a restarted runner re-runs nodes that were running rather than re-attaching to
their jobs.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import fnmatch
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from docket.dag import Dag, DagError, Node, Script, read_dag
from docket.engines.eventlog import EventLogWriter
from docket.errors import ExitCode
from docket.fileio import atomic_write
from docket.submit import ProcSpec, expand_submit

__all__ = ["DagRun", "main", "lock_is_held", "dag_files", "stop_leftover_jobs"]

KILL_GRACE_S = 5.0
POLL_S = 0.2
# A watcher's liveness probe holds the lock for microseconds; a runner holds it forever.
LOCK_WAIT_S = 0.5

# $RETURN values DAGMan uses when no job exit code exists
RETURN_SUBMIT_FAILED = -1001
RETURN_REMOVED = -1002

# DAG exit codes, as condor_dagman uses them
EXIT_FAILED = 1
EXIT_REMOVED = 2


def dag_files(dag_path: Path) -> dict[str, Path]:
    return {name: dag_path.with_name(f"{dag_path.name}.{name}")
            for name in ("nodes.log", "dagman.out", "progress", "metrics", "lock")}


def lock_is_held(lock_path: Path) -> bool:
    """True while a runner holds the DAG's lock (no PID guessing)."""
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases a shared lock we may have taken
    return False


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (tells a live process from a reused pid)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def stop_leftover_jobs(dag_path: Path) -> list[int]:
    """Stop the jobs a dead runner left running (their process groups); return them.

    For ``cancel`` when no runner holds the lock: a SIGKILLed runner's jobs outlive it,
    as node jobs outlive DAGMan on a pool. Never call it while a runner is alive."""
    found = dag_files(dag_path.resolve())
    if not found["progress"].exists() or lock_is_held(found["lock"]):
        return []
    log = EventLogWriter(found["nodes.log"])
    try:
        with open(found["progress"], "a") as progress:
            stopped = _stop_leftovers(found["progress"], log, progress)
    finally:
        log.close()
    return [pgid for pgid, _ in stopped]


def _stop_leftovers(progress_path: Path, log: EventLogWriter,
                    progress: IO[str] | None = None) -> list[tuple[int, str]]:
    """SIGKILL every process group the progress file shows started and not ended; log
    its job as aborted; mark it ended so no later runner touches that id again."""
    running: dict[int, tuple[str, str]] = {}  # pgid -> (start time, "cluster proc")
    for line in progress_path.read_text().splitlines():
        word, _, value = line.partition(" ")
        if word == "START":
            parts = value.split()
            if len(parts) >= 2 and parts[0].isdigit():
                running[int(parts[0])] = (parts[1], " ".join(parts[2:]))
        elif word == "END" and value.isdigit():
            running.pop(int(value), None)
    stopped = []
    own = progress is None
    if own:
        progress = open(progress_path, "a")  # noqa: SIM115
    assert progress is not None
    try:
        for pgid, (started, job) in running.items():
            now = _start_time(pgid)
            if now is not None and now != started:
                continue  # the pid now belongs to an unrelated process
            # A process group id is not reused while the group has members, so a group
            # whose leader is gone holds only that job's own processes.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
            cluster, _, proc = job.partition(" ")
            if cluster.isdigit() and proc.isdigit():
                log.aborted(int(cluster), int(proc),
                            "the local runner that started this job died; the job was "
                            "stopped and its node runs again")
            progress.write(f"END {pgid}\n")
            progress.flush()
            stopped.append((pgid, job.replace(" ", ".")))
    finally:
        if own:
            progress.close()
    return stopped


@dataclass
class NodeRun:
    node: Node
    order: int
    state: str = "waiting"  # waiting, pre, running, post, done, failed, removed
    attempt: int = 0
    cluster: int = 0
    job_return: int = 0  # $RETURN: exit code, -signal, or one of DAGMan's special values
    pre_return: int = -1  # $PRE_SCRIPT_RETURN
    reason: str = ""
    pending: list[ProcSpec] = field(default_factory=list)  # procs waiting for a slot
    procs_left: int = 0
    nprocs: int = 0
    job_failed: bool = False
    last_proc: int = 0
    stopped: bool = False  # its jobs were stopped by a removal or an ABORT-DAG-ON


@dataclass
class Job:
    """One running process: a job proc of a node, or its PRE/POST script."""

    run: NodeRun
    kind: str  # "pre", "post" or "proc"
    popen: subprocess.Popen[bytes]
    spec: ProcSpec | None = None
    scratch: Path | None = None
    killed_because: str = ""  # set when the runner stops it (removal, abort, sibling)
    deadline: float | None = None  # monotonic time its allowed duration runs out
    held_because: tuple[int, str] | None = None  # (hold code, reason) when over time


class DagRun:
    def __init__(self, dag_path: Path, max_jobs: int,
                 kill_grace_s: float = KILL_GRACE_S,
                 limits: dict[str, float] | None = None) -> None:
        self.kill_grace_s = kill_grace_s
        # concurrency limits of this machine (HTCondor's <NAME>_LIMIT), case-blind names
        self.limits = {k.lower(): v for k, v in (limits or {}).items()}
        self._unlimited_said: set[str] = set()
        self.dag_path = dag_path.resolve()
        self.dir = self.dag_path.parent
        self.files = dag_files(self.dag_path)
        self.max_jobs = max(1, max_jobs)
        # (job, returncode, note) from waiter threads; everything else is main-thread only
        self.events: queue.Queue[tuple[Job, int, str]] = queue.Queue()
        self.removing = False
        self.held = False  # set by SIGUSR1, cleared by SIGUSR2 (docket pause/resume)
        self._said_held = False
        self.abort: tuple[str, int] | None = None  # (node, DAG return value)
        self.stop_reason = ""
        self.kill_deadline: float | None = None
        self.next_cluster = 1
        self.jobs: dict[int, Job] = {}  # pid -> job
        self.runs: dict[str, NodeRun] = {}
        self.dag: Dag | None = None
        self._progress_fh: IO[str] | None = None

    # bookkeeping files --------------------------------------------------------

    def say(self, message: str) -> None:
        stamp = time.strftime("%m/%d/%y %H:%M:%S")
        with open(self.files["dagman.out"], "a") as out:
            out.write(f"{stamp} {message}\n")

    def _progress(self, line: str, durable: bool = False) -> None:
        if self._progress_fh is None:
            self._progress_fh = open(self.files["progress"], "a")  # noqa: SIM115
        self._progress_fh.write(line + "\n")
        self._progress_fh.flush()
        if durable:
            os.fsync(self._progress_fh.fileno())

    def _recover(self) -> set[str]:
        """Nodes done by an earlier runner; stop the jobs it left running."""
        done: set[str] = set()
        path = self.files["progress"]
        if not path.exists():
            return done
        for line in path.read_text().splitlines():
            word, _, value = line.partition(" ")
            if word == "DONE":
                done.add(value)
            elif word == "CLUSTER" and value.isdigit():
                self.next_cluster = max(self.next_cluster, int(value) + 1)
        for pgid, job in _stop_leftovers(path, self.log):
            self.say(f"stopped process group {pgid} left running by an earlier runner"
                     + (f" (job {job})" if job else ""))
        shutil.rmtree(self.dir / ".scratch", ignore_errors=True)
        return done

    # the run ----------------------------------------------------------------

    def run(self) -> int:
        lock_fd = os.open(self.files["lock"], os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(lock_fd)
                    print(f"{self.dag_path.name}: another runner holds "
                          f"{self.files['lock'].name}; not starting a second one",
                          file=sys.stderr)
                    return int(ExitCode.LOCKED)
                time.sleep(0.01)
        os.ftruncate(lock_fd, 0)
        os.write(lock_fd, f"{os.getpid()}\n".encode())
        if self.files["metrics"].exists():
            self.say("the DAG already finished (metrics file present); nothing to do")
            try:
                return int(json.loads(self.files["metrics"].read_text())["exitcode"])
            except (ValueError, KeyError, TypeError):
                return EXIT_FAILED
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        # like holding and releasing a DAGMan job: running jobs finish, nothing new starts
        signal.signal(signal.SIGUSR1, self._on_hold)
        signal.signal(signal.SIGUSR2, self._on_release)
        started = time.time()
        self.log = EventLogWriter(self.files["nodes.log"])
        try:
            self.dag = read_dag(self.dag_path)
        except (DagError, OSError) as exc:
            self.say(f"cannot read the DAG: {exc}")
            return self._write_metrics({"status": "failed", "exitcode": EXIT_FAILED,
                                        "reason": f"cannot read the DAG: {exc}"}, started)
        done = self._recover()
        for order, (name, node) in enumerate(self.dag.nodes.items()):
            self.runs[name] = NodeRun(node, order)
            if name in done or node.done:
                self.runs[name].state = "done"
        already = sum(r.state == "done" for r in self.runs.values())
        self.say(f"starting DAG {self.dag_path.name}: {len(self.runs)} nodes, "
                 f"{already} already done, at most {self.max_jobs} jobs at once "
                 f"(pid {os.getpid()})")
        try:
            self._loop()
        finally:
            if self.jobs:  # an unexpected error: leave no job behind
                self._signal_jobs(signal.SIGKILL)
        return self._finish(started)

    def _loop(self) -> None:
        while True:
            if self.removing or self.abort is not None:
                self._stop_everything()
            elif self.held != self._said_held:
                self._said_held = self.held
                self.say("held: running jobs go on, no new job starts" if self.held
                         else "released: starting jobs again")
                continue
            elif self.held:
                pass
            else:
                # a node or job can end at once (NOOP, a broken submit file, a missing
                # input) and be retried or free a child: start until nothing changes
                while self._start_ready() | self._start_pending_procs():
                    pass
            if not self.jobs and not any(r.state in ("pre", "running", "post")
                                         for r in self.runs.values()):
                if not (self.held and not self.removing and self.abort is None and any(
                        r.state == "waiting" or r.pending for r in self.runs.values())):
                    return
                time.sleep(POLL_S)  # held with work left: wait for the release
                continue
            self._enforce_runtimes()
            try:
                job, code, note = self.events.get(timeout=POLL_S)
            except queue.Empty:
                continue
            self._job_ended(job, code, note)

    def _enforce_runtimes(self) -> None:
        """Jobs past their allowed duration are stopped and held, as HTCondor does."""
        now = time.monotonic()
        for pid, job in list(self.jobs.items()):
            if (job.deadline is None or now < job.deadline or job.killed_because
                    or job.held_because or job.spec is None):
                continue
            seconds, code = job.spec.max_runtime or (0.0, 47)
            which = "allowed_execute_duration" if code == 47 else "allowed_job_duration"
            job.held_because = (code, f"The job exceeded {which} of {seconds:g} seconds")
            _killpg(pid, signal.SIGKILL)

    def _limit_use(self) -> dict[str, float]:
        use: dict[str, float] = {}
        for job in self.jobs.values():
            for name, weight in (job.spec.limits if job.spec else {}).items():
                use[name] = use.get(name, 0.0) + weight
        return use

    def _within_limits(self, spec: ProcSpec) -> bool:
        use = self._limit_use()
        for name, weight in spec.limits.items():
            limit = self.limits.get(name)
            if limit is None:
                if name not in self._unlimited_said:
                    self._unlimited_said.add(name)
                    self.say(f"concurrency limit {name!r} has no value on this machine "
                             "(docket.yaml concurrency_limits): not limited here")
                continue
            if use.get(name, 0.0) + weight > limit + 1e-9:
                return False
        return True

    # scheduling -------------------------------------------------------------

    def _active_in(self, category: str) -> int:
        return sum(1 for r in self.runs.values()
                   if r.node.category == category and r.state in ("pre", "running", "post"))

    def _slots_used(self) -> int:
        return len(self.jobs) + sum(len(r.pending) for r in self.runs.values())

    def _start_ready(self) -> bool:
        """Start the ready nodes that the limits allow; True if any started."""
        assert self.dag is not None
        started = False
        ready = [r for r in self.runs.values() if r.state == "waiting"
                 and all(self.runs[p].state == "done" for p in r.node.parents)]
        ready.sort(key=lambda r: (-r.node.priority, r.order))
        used = self._slots_used()
        full: set[str] = set()  # categories at their MAXJOBS (counted once per category)
        for run in ready:
            if used >= self.max_jobs:
                break
            category = run.node.category
            if category:
                if category in full:
                    continue
                if self._active_in(category) >= self.dag.maxjobs.get(category, 1 << 30):
                    full.add(category)
                    continue
            self._start_node(run)
            started = True
            used = self._slots_used()
        return started

    def _start_pending_procs(self) -> bool:
        """Start waiting job procs while process slots are free; True if any started."""
        any_started = started = False
        while len(self.jobs) < self.max_jobs:
            started = False
            for run in sorted((r for r in self.runs.values() if r.pending),
                              key=lambda r: (-r.node.priority, r.order)):
                if len(self.jobs) >= self.max_jobs:
                    break
                if not self._within_limits(run.pending[0]):
                    continue  # waits for a running job holding the same limit
                self._start_proc(run, run.pending.pop(0))
                started = any_started = True
            if not started:
                break
        return any_started

    # nodes ------------------------------------------------------------------

    def _start_node(self, run: NodeRun) -> None:
        run.attempt += 1
        run.job_failed = False
        run.job_return = 0
        run.pre_return = -1
        run.reason = ""
        if run.node.pre is not None:
            run.state = "pre"
            self._spawn_script(run, run.node.pre, "pre")
        else:
            self._submit(run)

    def _workdir(self, node: Node) -> Path:
        return self.dir / node.directory if node.directory else self.dir

    def _script_argv(self, run: NodeRun, script: Script, kind: str) -> list[str]:
        # DAGMan substitutes a macro only when it is a whole argument
        failed = sum(r.state == "failed" for r in self.runs.values())
        macros = {"$JOB": run.node.name, "$RETRY": str(run.attempt - 1),
                  "$MAX_RETRIES": str(run.node.retry),
                  "$DAG_STATUS": "2" if failed else "0", "$FAILED_COUNT": str(failed)}
        if kind == "post":
            macros.update({"$RETURN": str(run.job_return),
                           "$PRE_SCRIPT_RETURN": str(run.pre_return),
                           "$JOBID": f"{run.cluster}.{run.last_proc}"})
        return [script.executable, *(macros.get(a, a) for a in script.arguments)]

    def _spawn_script(self, run: NodeRun, script: Script, kind: str) -> None:
        argv = self._script_argv(run, script, kind)
        workdir = self._workdir(run.node)
        exe = argv[0] if os.path.isabs(argv[0]) else str(workdir / argv[0])
        if not os.path.exists(exe) and "/" not in argv[0] and shutil.which(argv[0]):
            exe = shutil.which(argv[0]) or exe
        self.say(f"node {run.node.name}: running {kind.upper()} script {' '.join(argv)}")
        try:
            child = subprocess.Popen([exe, *argv[1:]], cwd=workdir, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        except OSError as exc:
            reason = f"{kind.upper()} script {exe} cannot be started: {exc.strerror}"
            self._script_ended(run, kind, 1, reason)
            return
        self._track(Job(run, kind, child))

    def _track(self, job: Job) -> None:
        pid = job.popen.pid
        self.jobs[pid] = job
        label = (f" {job.run.cluster} {job.spec.proc}" if job.spec is not None else "")
        self._progress(f"START {pid} {_start_time(pid) or '-'}{label}")
        threading.Thread(target=self._wait, args=(job,), daemon=True).start()

    def _wait(self, job: Job) -> None:
        code = job.popen.wait()
        note = ""
        spec = job.spec
        if (spec is not None and job.scratch is not None and spec.transfer_files
                and code >= 0 and not job.killed_because):
            note = _transfer_outputs(spec, job.scratch)
        self.events.put((job, code, note))

    def _submit(self, run: NodeRun) -> None:
        run.state = "running"
        run.cluster = self.next_cluster
        self.next_cluster += 1
        self._progress(f"CLUSTER {run.cluster}", durable=True)
        node = run.node
        if node.noop:
            # like DAGMan: a NOOP node's job is not run, its PRE/POST scripts are
            self.say(f"node {node.name}: NOOP, its job is not run")
            self._job_done(run)
            return
        try:
            procs = expand_submit(self._workdir(node) / node.submit_file, node.name,
                                  node.vars, run.cluster, run.attempt - 1,
                                  node.append_vars)
        except Exception as exc:  # a broken submit file fails the node, not the runner
            reason = f"submit failed: {exc}"
            self.say(f"node {node.name}: {reason}")
            self.log.submitted(run.cluster, 0, node.name)
            self.log.aborted(run.cluster, 0, reason)
            run.job_failed, run.job_return, run.reason = True, RETURN_SUBMIT_FAILED, reason
            self._job_done(run)
            return
        self.say(f"node {node.name}: submitting {len(procs)} job(s) as cluster {run.cluster}"
                 f" (attempt {run.attempt})")
        for spec in procs:
            self.log.submitted(run.cluster, spec.proc, node.name)
        run.pending = list(procs)
        run.procs_left = run.nprocs = len(procs)
        if not procs:  # 'queue 0'
            self._job_done(run)

    def _start_proc(self, run: NodeRun, spec: ProcSpec) -> None:
        cluster, proc, node = run.cluster, spec.proc, run.node.name
        run.last_proc = proc
        scratch = self.dir / ".scratch" / f"{node}.{cluster}.{proc}"
        if scratch.exists():
            shutil.rmtree(scratch)
        scratch.mkdir(parents=True)
        if not spec.initialdir.is_dir():
            self._held(run, spec, scratch, 14, 2,
                       f"Error from starter on local: cannot access initial working "
                       f"directory {spec.initialdir}: (errno 2) No such file or directory")
            return
        if spec.transfer_files:
            problem = _transfer_inputs(spec, scratch)
            if problem:
                self._held(run, spec, scratch, 13, problem[0], problem[1])
                return
        if spec.container_image:
            note = (f"container_image {spec.container_image} is not used by the local "
                    "engine: the command runs directly on this machine")
            self.say(f"node {node}: {note}")
            self.log.generic(cluster, proc, note)
        env = _job_environment(spec, scratch)
        cwd = scratch if spec.transfer_files else spec.initialdir
        try:
            with contextlib.ExitStack() as stack:
                stdout, stderr = _open_streams(spec, stack)
                child = subprocess.Popen([spec.executable, *spec.arguments], cwd=cwd,
                                         env=env, stdin=subprocess.DEVNULL, stdout=stdout,
                                         stderr=stderr, start_new_session=True)
        except _StreamError as exc:
            self._held(run, spec, scratch, 7, exc.errno, str(exc))
            return
        except OSError as exc:
            self._held(run, spec, scratch, 6, exc.errno or 0,
                       f"Error from starter on local: Failed to execute "
                       f"'{spec.executable}': (errno {exc.errno}) {exc.strerror}")
            return
        self.log.executing(cluster, proc)
        deadline = time.monotonic() + spec.max_runtime[0] if spec.max_runtime else None
        self._track(Job(run, "proc", child, spec, scratch, deadline=deadline))

    def _held(self, run: NodeRun, spec: ProcSpec, scratch: Path | None, code: int,
              subcode: int, reason: str) -> None:
        """A job HTCondor would put on hold: log the hold, then remove it (nobody can
        release it here), and fail the proc with the hold reason."""
        self.log.held(run.cluster, spec.proc, reason, code, subcode)
        self.log.aborted(run.cluster, spec.proc, "the local engine removes held jobs: "
                                                 "nobody can release them here")
        self.say(f"node {run.node.name}: job {run.cluster}.{spec.proc} held "
                 f"(code {code} subcode {subcode}): {reason}")
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        self._proc_ended(run, failed=True, value=RETURN_REMOVED, reason=f"held: {reason}")

    def _job_ended(self, job: Job, code: int, note: str) -> None:
        """A process ended (waiter thread's report, handled on the main thread)."""
        self.jobs.pop(job.popen.pid, None)
        self._progress(f"END {job.popen.pid}")
        run = job.run
        signum = -code if code < 0 else None
        if job.kind in ("pre", "post"):
            if job.killed_because:
                self._node_removed(run, job.killed_because)
                return
            self._script_ended(run, job.kind, code if signum is None else -signum,
                               "" if signum is None else
                               f"{job.kind.upper()} script killed by signal {signum}",
                               signum)
            return
        spec = job.spec
        assert spec is not None
        if job.scratch is not None:
            shutil.rmtree(job.scratch, ignore_errors=True)
        if job.killed_because:
            self.log.aborted(run.cluster, spec.proc, job.killed_because)
            self._proc_ended(run, failed=True, value=RETURN_REMOVED,
                             reason=job.killed_because, removed=True)
            return
        if job.held_because:
            self._held(run, spec, None, job.held_because[0], 0, job.held_because[1])
            return
        if note:
            errno_text = note.rsplit("(errno ", 1)[-1].split(")", 1)[0]
            self._held(run, spec, None, 12, int(errno_text) if errno_text.isdigit() else 0,
                       note)
            return
        self.log.terminated(run.cluster, spec.proc, None if signum else code, signum)
        which = f" (job {run.cluster}.{spec.proc})" if run.nprocs > 1 else ""
        if signum is not None:
            self._proc_ended(run, failed=True, value=-signum,
                             reason=f"job killed by signal {signum}{which}")
        else:
            self._proc_ended(run, failed=code != 0, value=code,
                             reason=f"job exited with {code}{which}")

    def _proc_ended(self, run: NodeRun, failed: bool, value: int, reason: str,
                    removed: bool = False) -> None:
        run.procs_left -= 1
        if failed and not run.job_failed:
            run.job_failed, run.job_return, run.reason = True, value, reason
            if not removed:
                # DAGMan removes the rest of a multi-proc node once one of its jobs fails
                self._remove_siblings(run, f"removed by the local engine: job "
                                           f"{run.cluster} of node {run.node.name} failed")
        if run.procs_left <= 0 and run.state == "running":
            if any(j.run is run for j in self.jobs.values()):
                return
            self._job_done(run)

    def _remove_siblings(self, run: NodeRun, why: str) -> None:
        for spec in run.pending:
            self.log.aborted(run.cluster, spec.proc, why)
            run.procs_left -= 1
        run.pending = []
        for job in self.jobs.values():
            if job.run is run and not job.killed_because:
                job.killed_because = why
                _killpg(job.popen.pid, signal.SIGTERM)

    def _job_done(self, run: NodeRun) -> None:
        """Every job of the node has ended: run the POST script or decide the node."""
        node = run.node
        if self.removing or self.abort is not None:
            # stopping: no POST script starts; a node whose jobs all succeeded and that
            # has no POST script is done all the same
            if run.job_failed and not run.stopped:
                self._node_result(run, ok=False)
            elif node.post is None and not run.job_failed:
                self._node_result(run, ok=True)
            else:
                self._node_removed(run, self.stop_reason)
            return
        if node.post is not None:
            run.state = "post"
            self._spawn_script(run, node.post, "post")
            return
        # with no POST script, the job's value is the node's (ABORT-DAG-ON is checked here)
        self._check_abort(run, run.job_return)
        self._node_result(run, ok=not run.job_failed)

    def _script_ended(self, run: NodeRun, kind: str, value: int, reason: str = "",
                      signum: int | None = None) -> None:
        node = run.node
        if kind == "pre":
            run.pre_return = value
            if value == 0 and signum is None and self._check_abort(run, value):
                run.reason = "PRE script exited with 0, the ABORT-DAG-ON value"
                self._node_result(run, ok=False)
                return
            if value == 0 and signum is None:
                if self.removing or self.abort is not None:
                    self._node_removed(run, self.stop_reason)
                else:
                    self._submit(run)
                return
            if node.pre_skip is not None and value == node.pre_skip and signum is None:
                self.say(f"node {node.name}: PRE script exited with {value}; PRE_SKIP: "
                         "the node is done without running its job")
                self._node_result(run, ok=True)
                return
            run.reason = reason or f"PRE script exited with {value}"
            self._check_abort(run, value)
            self._node_result(run, ok=False)
            return
        # POST: its exit decides the node, whatever the job did
        self.log.post_script(run.cluster, run.last_proc, node.name,
                             None if signum is not None else value, signum)
        ok = value == 0 and signum is None
        if not ok:
            run.reason = reason or (f"POST script exited with {value}" + (
                f" (job: {run.reason})" if run.job_failed else ""))
            run.job_return = value
        self._check_abort(run, value)
        self._node_result(run, ok=ok)

    def _check_abort(self, run: NodeRun, value: int) -> bool:
        node = run.node
        if node.abort_on is None or value != node.abort_on[0] or self.abort is not None:
            return False
        dag_return = node.abort_on[1] if node.abort_on[1] is not None else value
        self.abort = (node.name, dag_return)
        self.stop_reason = (f"removed by the local engine: node {node.name} exited with "
                            f"{value} (ABORT-DAG-ON)")
        self.say(f"node {node.name}: exit value {value} matches ABORT-DAG-ON; aborting the "
                 f"DAG with return value {dag_return}")
        return True

    def _node_result(self, run: NodeRun, ok: bool) -> None:
        node = run.node
        if ok:
            run.state = "done"
            self._progress(f"DONE {node.name}", durable=True)
            self.say(f"node {node.name}: done (attempt {run.attempt})")
            return
        retries_left = run.attempt <= node.retry
        unless = (node.retry_unless_exit is not None
                  and run.job_return == node.retry_unless_exit)
        if run.state == "pre":
            unless = (node.retry_unless_exit is not None
                      and run.pre_return == node.retry_unless_exit)
        stopping = self.removing or self.abort is not None
        if retries_left and not unless and not stopping:
            self.say(f"node {node.name}: failed ({run.reason}); retry {run.attempt} of "
                     f"{node.retry}")
            run.state = "waiting"  # back through the ready list, PRE script included
            return
        run.state = "failed"
        self.say(f"node {node.name}: failed ({run.reason})"
                 + ("; RETRY UNLESS-EXIT matched, no retry" if unless and retries_left
                    else ""))

    def _node_removed(self, run: NodeRun, reason: str) -> None:
        run.state = "removed"
        run.reason = reason
        self.say(f"node {run.node.name}: {reason}")

    # stopping -----------------------------------------------------------------

    def _on_hold(self, signum: int, _frame: object) -> None:
        self.held = True

    def _on_release(self, signum: int, _frame: object) -> None:
        self.held = False

    def _on_term(self, signum: int, _frame: object) -> None:
        # Only set a flag: the main loop notices within POLL_S (no locks in a handler).
        self.removing = True

    def _stop_everything(self) -> None:
        if self.kill_deadline is None:
            if self.removing:
                self.stop_reason = "removed: the DAG was cancelled (SIGTERM to its runner)"
                self.say("the DAG is being removed; stopping every running job")
            else:
                self.say("ABORT-DAG-ON: stopping every running job")
            self.kill_deadline = time.monotonic() + self.kill_grace_s
            for run in self.runs.values():
                if run.state in ("pre", "running", "post"):
                    run.stopped = True
                if run.pending:
                    for spec in run.pending:
                        self.log.aborted(run.cluster, spec.proc, self.stop_reason)
                        run.procs_left -= 1
                    run.pending = []
                    if not any(j.run is run for j in self.jobs.values()):
                        self._node_removed(run, self.stop_reason)
            for job in self.jobs.values():
                if not job.killed_because:
                    job.killed_because = self.stop_reason
            self._signal_jobs(signal.SIGTERM)
        elif self.jobs and time.monotonic() > self.kill_deadline:
            self._signal_jobs(signal.SIGKILL)
            self.kill_deadline = time.monotonic() + self.kill_grace_s

    def _signal_jobs(self, signum: int) -> None:
        for pid in list(self.jobs):
            _killpg(pid, signum)

    def _finish(self, started: float) -> int:
        runs = self.runs
        failed = {n: r.reason for n, r in runs.items() if r.state == "failed"}
        removed = sorted(n for n, r in runs.items() if r.state == "removed")
        succeeded = [n for n, r in runs.items() if r.state == "done"]
        if self.removing:
            status, exitcode = "removed", EXIT_REMOVED
        elif self.abort is not None:
            status, exitcode = "aborted", self.abort[1]
        elif failed or len(succeeded) != len(runs):
            status, exitcode = "failed", EXIT_FAILED
        else:
            status, exitcode = "complete", 0
        metrics = {"status": status, "exitcode": exitcode,
                   "jobs": len(runs), "jobs_succeeded": len(succeeded),
                   "jobs_failed": len(failed), "failed_nodes": failed,
                   "removed_nodes": removed,
                   "not_run": sorted(n for n, r in runs.items() if r.state == "waiting")}
        if self.abort is not None:
            metrics["aborted_by"] = self.abort[0]
        self._write_metrics(metrics, started)
        self.say(f"DAG {status}: exit code {exitcode}; {len(succeeded)} of {len(runs)} nodes "
                 f"done" + (f"; failed: {', '.join(sorted(failed))}" if failed else ""))
        # DAGMan's last line, which scripts grep for
        self.say(f"**** docket.engines.localdag (condor_DAGMAN) pid {os.getpid()} "
                 f"EXITING WITH STATUS {exitcode}")
        return exitcode

    def _write_metrics(self, metrics: dict[str, object], started: float) -> int:
        ended = time.time()
        metrics.update({"engine": "local", "start_time": started, "end_time": ended,
                        "duration": round(ended - started, 3)})
        metrics.setdefault("failed_nodes", {})
        atomic_write(self.files["metrics"], json.dumps(metrics, indent=2, sort_keys=True))
        self.log.close()
        if self._progress_fh is not None:
            self._progress_fh.close()
        return int(metrics["exitcode"])  # type: ignore[call-overload]


# jobs: files and environment ------------------------------------------------------


class _StreamError(OSError):
    pass


def _killpg(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def _open_streams(spec: ProcSpec, stack: contextlib.ExitStack) -> tuple[object, object]:
    def open_one(name: str | None, what: str) -> object:
        if not name:
            return subprocess.DEVNULL
        target = spec.initialdir / name
        try:
            return stack.enter_context(open(target, "wb"))
        except OSError as exc:
            raise _StreamError(exc.errno or 0,
                               f"Error from starter on local: cannot open {what} file "
                               f"{target}: (errno {exc.errno}) {exc.strerror}") from None

    stdout = open_one(spec.output, "output")
    if spec.error and spec.output and (spec.initialdir / spec.error) == (
            spec.initialdir / spec.output):
        return stdout, subprocess.STDOUT  # one file for both, as condor_submit allows
    return stdout, open_one(spec.error, "error")


def _job_environment(spec: ProcSpec, scratch: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    if spec.getenv is True:
        env.update(os.environ)
    elif spec.getenv:
        for key, value in os.environ.items():
            if any(fnmatch.fnmatchcase(key, pattern) for pattern in spec.getenv):
                env[key] = value
    # HTCondor gives a job no PATH of its own; a shell-free local run still needs one
    env.setdefault("PATH", os.environ.get("PATH", "/usr/bin:/bin"))
    env.setdefault("HOME", os.environ.get("HOME", str(scratch)))
    for key in ("LANG", "LC_ALL", "DOCKET_HOME", "DOCKET_TOOLS_CONFIG"):
        if key in os.environ:
            env.setdefault(key, os.environ[key])
    where = str(scratch if spec.transfer_files else spec.initialdir)
    env.update({"_CONDOR_SCRATCH_DIR": where, "TMPDIR": where, "TMP": where, "TEMP": where,
                "_CONDOR_JOB_IWD": str(spec.initialdir), "BATCH_SYSTEM": "HTCondor",
                "OMP_NUM_THREADS": spec.request.get("request_cpus", "1") or "1"})
    env.update(spec.environment)
    return env


def _transfer_inputs(spec: ProcSpec, scratch: Path) -> tuple[int, str] | None:
    """Copy transfer_input_files into the scratch dir; (errno, hold reason) on failure."""
    for item in spec.transfer_input_files:
        contents_only = item.endswith("/")
        source = Path(item.rstrip("/") or "/")
        if not source.is_absolute():
            source = spec.initialdir / source
        try:
            if "://" in item:
                raise OSError(95, f"URL transfers ({item}) are not supported by the local "
                                  "engine")
            if source.is_dir():
                if contents_only:
                    shutil.copytree(source, scratch, symlinks=True, dirs_exist_ok=True)
                else:
                    shutil.copytree(source, scratch / source.name, symlinks=True)
            else:
                shutil.copy2(source, scratch / source.name)
        except OSError as exc:
            return exc.errno or 0, (
                "Transfer input files failure at execution point local while receiving "
                f"files from access point: reading from file {source}: "
                f"(errno {exc.errno}) {exc.strerror}")
    return None


def _transfer_outputs(spec: ProcSpec, scratch: Path) -> str:
    """Copy outputs back to initialdir; the hold reason on failure, else ''."""
    if spec.transfer_output_files is not None:
        names = spec.transfer_output_files
    else:
        # like HTCondor: new or changed files at the top of the scratch dir, no dirs
        inputs = {Path(i.rstrip("/")).name for i in spec.transfer_input_files}
        names = sorted(p.name for p in scratch.iterdir()
                       if p.is_file() and not p.is_symlink() and p.name not in inputs)
    for name in names:
        source = scratch / name
        target = spec.initialdir / Path(name).name
        try:
            if source.is_dir():
                # a directory's files join what is there, not replace it: the parallel
                # pieces of a fan-out each bring their own files back into products/
                shutil.copytree(source, target, symlinks=True, dirs_exist_ok=True)
            else:
                shutil.copy2(source, target)
        except OSError as exc:
            return ("Transfer output files failure at access point local while receiving "
                    f"files from execution point local: reading from file {source}: "
                    f"(errno {exc.errno}) {exc.strerror}")
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m docket.engines.localdag",
                                     description="Run one DAG on this machine.")
    parser.add_argument("dag", type=Path)
    parser.add_argument("--max-jobs", type=int, default=os.cpu_count() or 1,
                        help="at most this many job and script processes at once")
    parser.add_argument("--kill-grace-s", type=float, default=KILL_GRACE_S,
                        help="on removal, SIGKILL jobs still running this long after SIGTERM")
    parser.add_argument("--limit", action="append", default=[], metavar="NAME=N",
                        help="a concurrency limit of this machine (repeatable)")
    args = parser.parse_args(argv)
    limits = {}
    for item in args.limit:
        name, _, value = item.partition("=")
        try:
            limits[name] = float(value)
        except ValueError:
            parser.error(f"--limit {item!r}: give NAME=NUMBER")
    return DagRun(args.dag, args.max_jobs, args.kill_grace_s, limits).run()


if __name__ == "__main__":
    sys.exit(main())
