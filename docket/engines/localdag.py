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
import selectors
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from docket.dag import Dag, DagCycle, DagError, Node, Script, parse_dag, read_dag
from docket.engines import dagman_files
from docket.engines.dagman_files import NodeState
from docket.engines.dagsched import ReadyQueue, StateCounts
from docket.engines.eventlog import EventLogWriter
from docket.errors import ExitCode
from docket.fileio import atomic_write
from docket.submit import ProcSpec, expand_submit

__all__ = ["DagRun", "main", "lock_is_held", "dag_files", "stop_leftover_jobs"]

KILL_GRACE_S = 5.0
POLL_S = 0.2
SYNC_INTERVAL_S = 0.25
# A watcher's liveness probe holds the lock for microseconds; a runner holds it forever.
LOCK_WAIT_S = 0.5

# $RETURN values DAGMan uses when no job exit code exists
RETURN_SUBMIT_FAILED = -1001
RETURN_REMOVED = -1002
RETURN_JOB_SKIPPED = -1004  # the PRE script failed; DAGMAN_ALWAYS_RUN_POST ran the POST

# DAG exit codes, as condor_dagman uses them
EXIT_FAILED = 1
EXIT_REMOVED = 2


def dag_files(dag_path: Path) -> dict[str, Path]:
    return {name: dag_path.with_name(f"{dag_path.name}.{name}")
            for name in ("nodes.log", "dagman.out", "progress", "metrics", "lock")}


def _holds_lock(fd: int, lock_path: Path) -> bool:
    """True if ``fd`` is the DAG's lock file and this process holds the lock through it."""
    try:
        mine, there = os.fstat(fd), os.stat(lock_path)
        same = (mine.st_dev, mine.st_ino) == (there.st_dev, there.st_ino)
        if same:
            # on the same open file description a second flock succeeds at once
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return same
    except OSError:
        return False


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
    # os.read, not Path.read_text: this runs once per job, and the text layer costs
    # more than the read itself
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
    except OSError:
        return None
    try:
        stat = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    fields = stat.rsplit(b")", 1)[-1].split()
    return fields[19].decode() if len(fields) > 19 else None


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
    starting: dict[str, str] = {}  # marker -> "cluster proc": started, pid not yet known
    for line in progress_path.read_text().splitlines():
        word, _, value = line.partition(" ")
        if word == "STARTING":
            marker, _, job = value.partition(" ")
            starting[marker] = job
        elif word == "START":
            parts = value.split()
            if len(parts) >= 2 and parts[0].isdigit():
                running[int(parts[0])] = (parts[1], " ".join(parts[-2:]) if len(parts) >= 4
                                          else "")
                if len(parts) >= 3:
                    starting.pop(parts[2], None)
        elif word == "END" and value.isdigit():
            running.pop(int(value), None)
    if starting:
        # killed between starting a process and recording its pid: find it by the
        # marker in its environment
        for pgid, started, marker in _find_marked(set(starting)):
            running.setdefault(pgid, (started, starting[marker]))
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


MARKER_VARIABLE = "_DOCKET_LOCAL_JOB"


def _find_marked(markers: set[str]) -> list[tuple[int, str, str]]:
    """(pid, start time, marker) of live processes whose environment carries one of
    ``markers`` (the runner sets one in every process it starts, before it starts it)."""
    found = []
    wanted = {f"{MARKER_VARIABLE}={m}".encode() for m in markers}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for item in environ:
            if item in wanted:
                pid = int(entry.name)
                with contextlib.suppress(OSError):
                    if os.getpgid(pid) != pid:
                        break  # a child of the job: its group leader is the job
                started = _start_time(pid)
                if started is not None:
                    found.append((pid, started,
                                  item.split(b"=", 1)[1].decode()))
                break
    return found


@dataclass(eq=False)
class NodeRun:
    node: Node
    order: int
    counts: StateCounts = field(default_factory=StateCounts, repr=False)
    # waiting, pre, running, post, done, failed, futile (an ancestor failed), removed
    _state: str = "waiting"
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
    ready_seq: int = 0  # its place in DAGMan's ready queue (after PRIORITY)
    defer: tuple[float, str] | None = None  # (monotonic time, "pre"/"post"): SCRIPT DEFER
    jobs_aborted: int = 0
    exit_codes: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.counts.move(None, self._state, self.node.category)

    @property
    def state(self) -> str:
        return self._state

    @state.setter
    def state(self, new: str) -> None:
        # every state change goes through here, so the counts never need a full scan
        self.counts.move(self._state, new, self.node.category)
        self._state = new


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
    # the sandbox's top-level files as input transfer left them: what did not change
    # since is not transferred back (see _transfer_outputs)
    transferred_in: dict[str, tuple[int, int]] | None = None


class _Logs:
    """The DAG's node log, and each job's own ``log =`` file where its submit file
    names one: every event goes to both, as HTCondor writes a job's events to its
    user log and DAGMan reads them from the default node log."""

    def __init__(self, main: EventLogWriter) -> None:
        self.main = main
        self.by_cluster: dict[int, EventLogWriter] = {}
        self._open: dict[str, EventLogWriter] = {}

    def attach(self, cluster: int, path: str) -> None:
        if Path(path) == self.main.path:
            return
        writer = self._open.get(path)
        if writer is None:
            try:
                writer = self._open[path] = EventLogWriter(Path(path))
            except OSError:
                return  # HTCondor would fail the submit; the node log still has it all
        self.by_cluster[cluster] = writer

    def close(self) -> None:
        self.main.close()
        for writer in self._open.values():
            writer.close()

    def __getattr__(self, name: str):  # noqa: ANN204 - forwards EventLogWriter's methods
        def call(cluster: int, proc: int, *args: object, **kwargs: object) -> None:
            getattr(self.main, name)(cluster, proc, *args, **kwargs)
            own = self.by_cluster.get(cluster)
            if own is not None:
                getattr(own, name)(cluster, proc, *args, **kwargs)
        return call


class DagRun:
    def __init__(self, dag_path: Path, max_jobs: int,
                 kill_grace_s: float = KILL_GRACE_S,
                 limits: dict[str, float] | None = None, shared_filesystem: bool = True,
                 rescue: bool = False, max_submitted: int = 0,
                 lock_fd: int | None = None) -> None:
        self.kill_grace_s = kill_grace_s
        # the DAG's lock, taken by the launcher before it started us (LocalEngine.submit):
        # held without a gap from submission on, so no watcher pass sees "no runner" while
        # this process is still starting
        self.lock_fd = lock_fd
        # False: a pool without a shared filesystem; every vanilla job is sandboxed
        self.shared_filesystem = shared_filesystem
        # run the newest rescue DAG of a failed run, as condor_submit_dag does
        self.rescue = rescue
        self.max_submitted = max_submitted  # nodes with jobs at once (0: no limit)
        self.max_pre = self.max_post = 0
        self.depth_first = self.always_run_post = False
        self._ready_counter = 0
        self._final_started = False
        self._changed = True
        self._last_summary = 0.0
        self._next_status = 0.0
        self._jobstate_fh: IO[str] | None = None
        # concurrency limits of this machine (HTCondor's <NAME>_LIMIT), case-blind names
        self.limits = {k.lower(): v for k, v in (limits or {}).items()}
        self._unlimited_said: set[str] = set()
        self.dag_path = dag_path.resolve()
        self.dir = self.dag_path.parent
        self.files = dag_files(self.dag_path)
        self.max_jobs = max(1, max_jobs)
        # (job, returncode, note) from waiter threads; everything else is main-thread only
        self.events: queue.Queue[tuple[Job, int, str]] = queue.Queue()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
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
        self._out: IO[str] | None = None
        self._need_sync = False
        self._last_sync = 0.0
        self._serial = 0  # numbers the markers of the processes this runner starts
        self.counts = StateCounts()
        self.ready = ReadyQueue()
        self._pending_runs: set[NodeRun] = set()  # nodes with procs waiting for a slot
        self._deferred: list[NodeRun] = []  # scripts SCRIPT DEFER will run again
        self._post_queue: list[NodeRun] = []  # POST scripts waiting for a place
        self._status_dirty = True

    # bookkeeping files --------------------------------------------------------

    def say(self, message: str) -> None:
        if self._out is None:
            self._out = open(self.files["dagman.out"], "a", buffering=1)  # noqa: SIM115
        stamp = time.strftime("%m/%d/%y %H:%M:%S")
        self._out.write(f"{stamp} {message}\n")

    def _progress(self, line: str, durable: bool = False) -> None:
        if self._progress_fh is None:
            self._progress_fh = open(self.files["progress"], "a")  # noqa: SIM115
        self._progress_fh.write(line + "\n")
        self._progress_fh.flush()  # a killed runner's successor reads it
        if durable:
            self._need_sync = True  # fsynced once per pass of the loop (see _sync)

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
        if self.lock_fd is not None and _holds_lock(self.lock_fd, self.files["lock"]):
            lock_fd, inherited = self.lock_fd, True
            # jobs must not inherit it: a job outliving a killed runner would hold the lock
            os.set_inheritable(lock_fd, False)
        else:
            lock_fd, inherited = os.open(self.files["lock"], os.O_RDWR | os.O_CREAT, 0o644), False
        deadline = time.monotonic() + LOCK_WAIT_S
        while not inherited:
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
            try:
                before = json.loads(self.files["metrics"].read_text())
            except (ValueError, TypeError):
                before = {"status": "failed", "exitcode": EXIT_FAILED}
            if not (self.rescue and before.get("status") != "complete"):
                self.say("the DAG already finished (metrics file present); nothing to do")
                try:
                    return int(before["exitcode"])
                except (KeyError, TypeError, ValueError):
                    return EXIT_FAILED
            # a new run from the rescue DAG: the failed run's metrics are kept beside
            found = dagman_files.rescue_files(self.dag_path)
            number = found[-1][0] if found else 0
            os.replace(self.files["metrics"],
                       self.files["metrics"].with_name(
                           f"{self.files['metrics'].name}.before-rescue{number:03d}"))
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        # like holding and releasing a DAGMan job: running jobs finish, nothing new starts
        signal.signal(signal.SIGUSR1, self._on_hold)
        signal.signal(signal.SIGUSR2, self._on_release)
        started = time.time()
        self.log = _Logs(EventLogWriter(self.files["nodes.log"]))
        try:
            self.dag = read_dag(self.dag_path)
            problem = self.dag.config_error
        except (DagError, OSError) as exc:
            problem = str(exc)
            self.say(f"ERROR: {exc}")
            if isinstance(exc, DagCycle):
                self.say("ERROR: a cycle exists in the dag, please check input")
            else:
                self.say(f"Failed to parse {self.dag_path}")
        else:
            if problem:
                self.say(f"ERROR: {problem}")
            elif self.dag.reject:
                problem = f"REJECT in {self.dag.reject}"
                self.say(f"Exiting because of REJECT specification in {self.dag.reject}. "
                         "This most likely means that the DAG file was produced with the "
                         "-DumpRescue flag when parsing the original DAG file.")
        if problem:
            code = self._write_metrics({"status": "failed", "exitcode": EXIT_FAILED,
                                        "reason": f"cannot read the DAG: {problem}"},
                                       started)
            self._exiting(code)
            return code
        assert self.dag is not None
        self._configure(self.dag)
        self.ready = ReadyQueue(self.depth_first)
        done = self._recover()
        if self.rescue:
            done |= self._rescue_done()
        for order, (name, node) in enumerate(self.dag.nodes.items()):
            run = self.runs[name] = NodeRun(node, order, self.counts)
            if name in done or node.done:
                run.state = "done"
        for run in self.runs.values():
            if run.state == "waiting" and self._parents_done(run):
                self._make_ready(run)
        self._jobstate_event("INTERNAL", "*** DAGMAN_STARTED 0.0 ***")
        already = sum(r.state == "done" for r in self.runs.values())
        self.say(f"starting DAG {self.dag_path.name}: {len(self.runs)} nodes, "
                 f"{already} already done, at most {self.max_jobs} jobs at once "
                 f"(pid {os.getpid()})")
        if self.dag.job_attrs:
            self.say("SET_JOB_ATTR (no DAGMan job ad here; recorded in the metrics): "
                     + ", ".join(f"{k} = {v}" for k, v in self.dag.job_attrs.items()))
        self._write_dot()
        try:
            self._loop()
        finally:
            if self.jobs:  # an unexpected error: leave no job behind
                self._signal_jobs(signal.SIGKILL, everything=True)
        return self._finish(started)

    def _configure(self, dag: Dag) -> None:
        """The CONFIG file's DAGMan knobs that change what runs when."""
        # DAGMan 23's defaults: 20 PRE and 20 POST scripts at once, breadth-first
        self.max_pre = dag.number("DAGMAN_MAX_PRE_SCRIPTS", 20)
        self.max_post = dag.number("DAGMAN_MAX_POST_SCRIPTS", 20)
        if not self.max_submitted:
            self.max_submitted = dag.number("DAGMAN_MAX_JOBS_SUBMITTED", 0)
        self.depth_first = dag.flag("DAGMAN_SUBMIT_DEPTH_FIRST")
        self.always_run_post = dag.flag("DAGMAN_ALWAYS_RUN_POST")
        if dag.config:
            self.say(f"CONFIG {dag.config_file}: " + ", ".join(
                f"{k} = {v}" for k, v in sorted(dag.config.items())))

    def _rescue_done(self) -> set[str]:
        """The DONE lines of the newest rescue DAG (read with the DAG, as DAGMan does)."""
        found = dagman_files.rescue_files(self.dag_path)
        if not found:
            return set()
        number, path = found[-1]
        assert self.dag is not None
        try:
            text = path.read_text()
            rescued = parse_dag(self.dag_path.read_text() + "\n" + text, self.dag_path)
        except (DagError, OSError) as exc:
            self.say(f"ERROR: cannot read the rescue DAG {path.name}: {exc}")
            return set()
        done = {n for n, node in rescued.nodes.items() if node.done}
        self.say(f"Running the rescue DAG {path.name}: {len(done)} node(s) marked DONE")
        return done

    def _loop(self) -> None:
        while True:
            if self.removing or self.abort is not None:
                self._stop_everything()
            elif self.held != self._said_held:
                self._said_held = self.held
                self.say("held: running jobs go on, no new job starts" if self.held
                         else "released: starting jobs again")
                continue
            if not self.held or self._final_started:
                # a node or job can end at once (NOOP, a broken submit file, a missing
                # input) and be retried or free a child: start until nothing changes
                while (self._start_deferred() | self._start_posts() | self._start_ready()
                       | self._start_pending_procs()):
                    pass
            self._sync()
            self._report()
            if not self.jobs and not self.counts.active():
                if self._start_final():
                    continue
                if not (self.held and not self.removing and self.abort is None and (
                        self.counts["waiting"] or self._pending_runs)):
                    return
                time.sleep(POLL_S)  # held with work left: wait for the release
                continue
            self._enforce_runtimes()
            self._wait_for_ends(POLL_S)

    def _wait_for_ends(self, timeout_s: float) -> None:
        """Block until a process ends (or the timeout), then handle every end reported.

        Most processes are watched by a pidfd in this thread's selector, so an end is
        seen at once without a thread switch; a sandboxed job's waiter thread (it copies
        the outputs back) reports through the queue and wakes the selector by a pipe."""
        for key, _ in self._selector.select(timeout_s):
            if key.data is None:  # the wake-up pipe
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)
                continue
            job = key.data
            self._selector.unregister(key.fd)
            os.close(key.fd)
            self._job_ended(job, job.popen.wait(), "")
        while True:
            try:
                job, code, note = self.events.get_nowait()
            except queue.Empty:
                break
            self._job_ended(job, code, note)

    def _sync(self, now: bool = False) -> None:
        """fsync the progress file: a node's DONE line must survive a machine crash.

        Every line is flushed at once, so a killed runner's successor always reads it;
        the fsync (for a crash of the machine itself) is made at most every
        SYNC_INTERVAL_S, so a wide DAG does not wait on the disk once per node."""
        if not self._need_sync or self._progress_fh is None:
            return
        if now or time.monotonic() - self._last_sync >= SYNC_INTERVAL_S:
            os.fsync(self._progress_fh.fileno())
            self._need_sync = False
            self._last_sync = time.monotonic()

    def _report(self, force: bool = False) -> None:
        """dagman.out's status table, at most once a second and only after a change (as
        DAGMan prints it once per cycle), and the node status file on its schedule."""
        now = time.monotonic()
        if self._changed and (force or now - self._last_summary >= 1.0):
            self._changed = False
            self._last_summary = now
            for line in dagman_files.counts_table(self._table_counts(), self._dag_status()):
                self.say(line)
            if self.dag is not None and self.dag.dot_update:
                self._write_dot()  # DOT file UPDATE: rewritten as the DAG changes
        if force or (self.dag is not None and self.dag.node_status_file
                     and now >= self._next_status
                     and (self.dag.node_status_always or self._status_dirty)):
            self._write_status(self._states(), final=False)

    def _table_counts(self) -> list[int]:
        """Done, Pre, Queued, Post, Ready, Un-Ready, Failed, Futile, from the counts."""
        c = self.counts
        ready = len(self.ready)
        return [c["done"], c["pre"], c["running"], c["post"], ready,
                max(0, c["waiting"] - ready), c["failed"] + c["removed"], c["futile"]]

    def _start_final(self) -> bool:
        """The FINAL node runs once nothing else can: after success, failure, an
        ABORT-DAG-ON or a removal (DAGMan runs it in every case)."""
        if self.dag is None or self.dag.final is None or self._final_started:
            return False
        run = self.runs[self.dag.final]
        if run.state != "waiting":
            return False
        self._final_started = True
        status = self._dag_status()
        failed = self.counts["failed"]
        run.node.vars = {**run.node.vars, "DAG_STATUS": str(status),
                         "FAILED_COUNT": str(failed)}
        self.say(f"Starting final node {run.node.name} (DAG status {status}, "
                 f"{failed} failed node(s))")
        self._start_node(run)
        return True

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

    def _slots_used(self) -> int:
        return len(self.jobs) + sum(len(r.pending) for r in self._pending_runs)

    def _parents_done(self, run: NodeRun) -> bool:
        return all(self.runs[p].state == "done" for p in run.node.parents)

    def _make_ready(self, run: NodeRun) -> None:
        if run.node.final:
            return  # the FINAL node waits for everything else (see _start_final)
        self.ready.push(run.node.name, run.node.priority)

    def _start_ready(self) -> bool:
        """Start the ready nodes that the throttles allow; True if any started."""
        assert self.dag is not None
        if self._stopping():
            return False
        started = False
        full: set[str] = set()  # categories at their MAXJOBS, checked once per pass

        def offer(name: str) -> bool | None:
            nonlocal started
            run = self.runs[name]
            if run.state != "waiting":
                return True  # stale: it was removed or marked futile meanwhile
            if self._slots_used() >= self.max_jobs:
                return None
            if self.max_submitted and self.counts["running"] >= self.max_submitted:
                return None
            category = run.node.category
            if category:
                if category in full:
                    return False
                if self.counts.in_category(category) >= self.dag.maxjobs.get(  # type: ignore[union-attr]
                        category, 1 << 30):
                    full.add(category)
                    return False
            if run.node.pre is not None and self.max_pre and self.counts["pre"] >= \
                    self.max_pre:
                return False
            self._start_node(run)
            started = True
            return True

        self.ready.take(offer)
        return started

    def _start_pending_procs(self) -> bool:
        """Start waiting job procs while process slots are free; True if any started."""
        any_started = started = False
        while len(self.jobs) < self.max_jobs and self._pending_runs:
            started = False
            for run in sorted(self._pending_runs, key=lambda r: (-r.node.priority, r.order)):
                if len(self.jobs) >= self.max_jobs:
                    break
                if not run.pending:
                    self._pending_runs.discard(run)
                    continue
                if not self._within_limits(run.pending[0]):
                    continue  # waits for a running job holding the same limit
                self._start_proc(run, run.pending.pop(0))
                if not run.pending:
                    self._pending_runs.discard(run)
                started = any_started = True
            if not started:
                break
        return any_started

    def _start_deferred(self) -> bool:
        """Run again the scripts SCRIPT DEFER put off, once their time has come."""
        if not self._deferred:
            return False
        now = time.monotonic()
        due = [r for r in self._deferred if r.defer is not None and r.defer[0] <= now]
        for run in due:
            self._deferred.remove(run)
            assert run.defer is not None
            kind = run.defer[1]
            run.defer = None
            script = run.node.pre if kind == "pre" else run.node.post
            assert script is not None
            self._spawn_script(run, script, kind)
        return bool(due)

    def _start_posts(self) -> bool:
        """POST scripts waiting for a DAGMAN_MAX_POST_SCRIPTS place."""
        started = False
        while self._post_queue and not (self.max_post and self._posts_running()
                                        >= self.max_post):
            run = self._post_queue.pop(0)
            self._spawn_script(run, run.node.post, "post")  # type: ignore[arg-type]
            started = True
        return started

    def _posts_running(self) -> int:
        return sum(1 for j in self.jobs.values() if j.kind == "post")

    def _stopping(self) -> bool:
        return self.removing or self.abort is not None

    def _dag_status(self) -> int:
        """$DAG_STATUS: 4 removed, 3 aborted, 2 a node failed, else 0."""
        if self.removing:
            return 4
        if self.abort is not None:
            return 3
        final = self.dag.final if self.dag is not None else None
        failed = self.counts["failed"] - (1 if final and self.runs[final].state ==
                                          "failed" else 0)
        return 2 if failed else 0

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
        """The script's words with DAGMan's macros replaced (script.cpp): a macro is
        replaced only when it is a whole word, its name matched case-blind; those about
        the job are left as written in a PRE script."""
        counts = self.counts
        macros = {"$JOB": run.node.name, "$NODE": run.node.name,
                  "$RETRY": str(run.attempt - 1), "$MAX_RETRIES": str(run.node.retry),
                  "$DAG_STATUS": str(self._dag_status()),
                  "$FAILED_COUNT": str(counts["failed"]),
                  "$FUTILE_COUNT": str(counts["futile"]),
                  "$DONE_COUNT": str(counts["done"]),
                  "$QUEUED_COUNT": str(sum(1 for r in self._pending_runs) + sum(
                      1 for j in self.jobs.values() if j.kind == "proc")),
                  "$NODE_COUNT": str(len(self.runs))}
        if kind == "post":
            codes = sorted(set(run.exit_codes))
            macros.update({
                "$RETURN": str(run.job_return), "$PRE_SCRIPT_RETURN": str(run.pre_return),
                "$JOBID": f"{run.cluster}.{run.last_proc}",
                "$CLUSTERID": str(run.cluster), "$CLUSTER": str(run.cluster),
                "$JOB_COUNT": str(run.nprocs),
                "$SUCCESS": "False" if run.job_failed else "True",
                "$EXIT_CODES": ",".join(str(c) for c in codes),
                "$EXIT_CODE_COUNTS": ",".join(f"{c}:{run.exit_codes.count(c)}"
                                              for c in codes),
                "$JOB_ABORT_COUNT": str(run.jobs_aborted)})
        return [script.executable, *(macros.get(a.upper(), a) for a in script.arguments)]

    def _spawn_script(self, run: NodeRun, script: Script, kind: str) -> None:
        argv = self._script_argv(run, script, kind)
        workdir = self._workdir(run.node)
        exe = argv[0] if os.path.isabs(argv[0]) else str(workdir / argv[0])
        if not os.path.exists(exe) and "/" not in argv[0] and shutil.which(argv[0]):
            exe = shutil.which(argv[0]) or exe
        run.state = kind
        self.say(f"Running {kind.upper()} script of Node {run.node.name}...")
        self.say(f"node {run.node.name}: running {kind.upper()} script {' '.join(argv)}")
        self._jobstate(run, f"{kind.upper()}_SCRIPT_STARTED",
                       f"{run.cluster}.{run.last_proc}" if kind == "post" else "-")
        marker, mark = self._marker("")
        try:
            child = subprocess.Popen([exe, *argv[1:]], cwd=workdir, stdin=subprocess.DEVNULL,
                                     start_new_session=True, env={**os.environ, **mark})
        except OSError as exc:
            reason = f"{kind.upper()} script {exe} cannot be started: {exc.strerror}"
            self._script_ended(run, kind, 1, reason)
            return
        self._track(Job(run, kind, child), marker)

    def _marker(self, label: str) -> tuple[str, dict[str, str]]:
        """A STARTING line, written before a process starts, and the environment entry
        that lets a successor find the process if this runner dies before it records
        the pid (see _stop_leftovers)."""
        self._serial += 1
        marker = f"{os.getpid()}.{self._serial}"
        self._progress(f"STARTING {marker} {label}".rstrip())
        return marker, {MARKER_VARIABLE: marker}

    def _track(self, job: Job, marker: str) -> None:
        pid = job.popen.pid
        self.jobs[pid] = job
        label = (f" {job.run.cluster} {job.spec.proc}" if job.spec is not None else "")
        self._progress(f"START {pid} {_start_time(pid) or '-'} {marker}{label}")
        if job.scratch is not None and job.spec is not None and job.spec.transfer_files:
            # its outputs are copied back off the main thread
            threading.Thread(target=self._wait, args=(job,), daemon=True).start()
            return
        try:
            fd = os.pidfd_open(pid)
        except OSError:  # an old kernel: a waiter thread does the same job
            threading.Thread(target=self._wait, args=(job,), daemon=True).start()
            return
        self._selector.register(fd, selectors.EVENT_READ, job)

    def _wait(self, job: Job) -> None:
        code = job.popen.wait()
        note = ""
        spec = job.spec
        if (spec is not None and job.scratch is not None and spec.transfer_files
                and code >= 0 and not job.killed_because):
            note = _transfer_outputs(spec, job.scratch, job.transferred_in or {})
        self.events.put((job, code, note))
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"x")

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
            procs = self._procs(run)
        except Exception as exc:  # a broken submit file fails the node, not the runner
            reason = f"submit failed: {exc}"
            self.say(f"node {node.name}: {reason}")
            self.log.submitted(run.cluster, 0, node.name)
            self.log.aborted(run.cluster, 0, reason)
            run.job_failed, run.job_return, run.reason = True, RETURN_SUBMIT_FAILED, reason
            self._job_done(run)
            return
        self.say(f"Submitting HTCondor Node {node.name} job(s)...")
        self.say(f"node {node.name}: submitting {len(procs)} job(s) as cluster {run.cluster}"
                 f" (attempt {run.attempt})")
        self.say(f"\tassigned HTCondor ID ({run.cluster}.0.0)")
        if procs and procs[0].log:
            self.log.attach(run.cluster, procs[0].log)
        for spec in procs:
            self.log.submitted(run.cluster, spec.proc, node.name)
        self._jobstate(run, "SUBMIT", f"{run.cluster}.0")
        run.pending = list(procs)
        run.procs_left = run.nprocs = len(procs)
        run.exit_codes = []
        run.jobs_aborted = 0
        if procs:
            self._pending_runs.add(run)
        else:  # 'queue 0'
            self._job_done(run)

    def _procs(self, run: NodeRun) -> list[ProcSpec]:
        """The node's job procs, read the way condor_submit reads the submit file when
        DAGMan runs it in the node's directory (or, for SUBDAG EXTERNAL, the nested
        runner that is the node's job)."""
        node = run.node
        workdir = self._workdir(node)
        if node.subdag is not None:
            # like condor_submit_dag's .condor.sub: a scheduler universe job running
            # DAGMan on the nested DAG, which writes its own files and rescue DAG. A
            # nested DAG that finished in an earlier run of this one runs again in full
            # (one that failed continues from its rescue DAG)
            inner = dag_files((workdir / node.subdag).resolve())
            again = False
            with contextlib.suppress(OSError, ValueError):
                if json.loads(inner["metrics"].read_text()).get("status") == "complete":
                    inner["metrics"].unlink()
                    inner["progress"].unlink(missing_ok=True)
                    again = True
            argv = ["-m", "docket.engines.localdag", node.subdag,
                    "--max-jobs", str(self.max_jobs), *([] if again else ["--rescue"]),
                    *(f"--limit={k}={v}" for k, v in sorted(self.limits.items()))]
            if not self.shared_filesystem:
                argv.append("--no-shared-filesystem")
            return [ProcSpec(node=node.name, proc=0, executable=sys.executable,
                             arguments=argv, environment={}, initialdir=workdir,
                             transfer_input_files=[], transfer_output_files=None,
                             output=None, error=None, transfer_files=False,
                             universe="scheduler", getenv=True)]
        return expand_submit(workdir / node.submit_file, node.name, node.vars,
                             run.cluster, run.attempt - 1, node.append_vars, cwd=workdir,
                             text=node.inline_submit,
                             shared_filesystem=self.shared_filesystem)

    def _start_proc(self, run: NodeRun, spec: ProcSpec) -> None:
        cluster, proc, node = run.cluster, spec.proc, run.node.name
        run.last_proc = proc
        scratch = self.dir / ".scratch" / f"{node}.{cluster}.{proc}"
        if spec.transfer_files:  # only a sandboxed job gets a scratch directory
            if scratch.exists():
                shutil.rmtree(scratch)
            scratch.mkdir(parents=True)
        if not spec.initialdir.is_dir():
            self._held(run, spec, scratch, 14, 2,
                       f"Error from starter on local: cannot access initial working "
                       f"directory {spec.initialdir}: (errno 2) No such file or directory")
            return
        transferred_in = None
        if spec.transfer_files:
            problem = _transfer_inputs(spec, scratch)
            if problem:
                self._held(run, spec, scratch, 13, problem[0], problem[1])
                return
            transferred_in = _top_level_files(scratch)
        env = _job_environment(spec, scratch)
        marker, mark = self._marker(f"{cluster} {proc}")
        env.update(mark)
        cwd = scratch if spec.transfer_files else spec.initialdir
        argv = job_argv(spec)
        if spec.container_image:  # run inside the image, never outside it
            from docket.engines.container import ContainerUnavailable, job_command

            try:
                argv = job_command(spec.container_image, argv, cwd, spec.initialdir,
                                   spec.environment, env)
            except ContainerUnavailable as exc:
                self._held(run, spec, scratch, 6, 0, f"{exc.what}; {exc.hint}")
                return
            self.say(f"node {node}: running in container image {spec.container_image}")
        try:
            with contextlib.ExitStack() as stack:
                stdout, stderr = _open_streams(spec, stack)
                child = subprocess.Popen(argv, cwd=cwd,
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
        if proc == 0:
            self._jobstate(run, "EXECUTE", f"{cluster}.{proc}")
        deadline = time.monotonic() + spec.max_runtime[0] if spec.max_runtime else None
        self._track(Job(run, "proc", child, spec, scratch, deadline=deadline,
                        transferred_in=transferred_in), marker)

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
            run.jobs_aborted += 1
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
        if signum is None:
            run.exit_codes.append(code)
        if spec.proc == run.nprocs - 1 or run.nprocs == 1:
            self._jobstate(run, "JOB_TERMINATED", f"{run.cluster}.{spec.proc}")
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

    def _stopping_for(self, run: NodeRun) -> bool:
        """Stopping applies to every node but the FINAL one, which runs regardless."""
        return self._stopping() and not run.node.final

    def _job_done(self, run: NodeRun) -> None:
        """Every job of the node has ended: run the POST script or decide the node."""
        node = run.node
        self._pending_runs.discard(run)
        if not node.noop:
            self._jobstate(run, "JOB_SUCCESS" if not run.job_failed else "JOB_FAILURE",
                           str(run.job_return))
        if self._stopping_for(run):
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
            self._queue_post(run)
            return
        # with no POST script, the job's value is the node's (ABORT-DAG-ON is checked here)
        self._check_abort(run, run.job_return)
        self._node_result(run, ok=not run.job_failed)

    def _queue_post(self, run: NodeRun) -> None:
        run.state = "post"
        if self.max_post and self._posts_running() >= self.max_post:
            self._post_queue.append(run)  # DAGMAN_MAX_POST_SCRIPTS: it waits its turn
            return
        self._spawn_script(run, run.node.post, "post")  # type: ignore[arg-type]

    def _script_ended(self, run: NodeRun, kind: str, value: int, reason: str = "",
                      signum: int | None = None) -> None:
        node = run.node
        script = node.pre if kind == "pre" else node.post
        if (script is not None and script.defer is not None and signum is None
                and value == script.defer[0] and not self._stopping_for(run)):
            # SCRIPT DEFER status time: not a failure; run the script again later
            seconds = script.defer[1]
            self.say(f"Deferring {kind.upper()} script of node {node.name} for {seconds:g} "
                     f"seconds (exit value {value})")
            run.defer = (time.monotonic() + seconds, kind)
            self._deferred.append(run)
            return
        self._jobstate(run, f"{kind.upper()}_SCRIPT_" + (
            "SUCCESS" if value == 0 and signum is None else "FAILURE"), str(value))
        if kind == "pre":
            run.pre_return = value
            if value == 0 and signum is None and self._check_abort(run, value):
                run.reason = "PRE script exited with 0, the ABORT-DAG-ON value"
                self._node_result(run, ok=False)
                return
            if value == 0 and signum is None:
                if self._stopping_for(run):
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
            self.say(f"PRE Script of node {node.name} failed with status {value}")
            self._check_abort(run, value)
            if self.always_run_post and node.post is not None and not self._stopping():
                # DAGMAN_ALWAYS_RUN_POST: the POST script runs and decides the node;
                # its $RETURN says the job was skipped (DAGMan's -1004)
                run.job_failed, run.job_return = True, RETURN_JOB_SKIPPED
                self._queue_post(run)
                return
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
            self.say(f"POST Script of node {node.name} failed with status {value}")
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
        self._changed = self._status_dirty = True
        if ok:
            run.state = "done"
            self._progress(f"DONE {node.name}", durable=True)
            self.say(f"node {node.name}: done (attempt {run.attempt})")
            for child in node.children:
                other = self.runs[child]
                if other.state == "waiting" and self._parents_done(other):
                    self._make_ready(other)
            return
        retries_left = run.attempt <= node.retry
        unless = (node.retry_unless_exit is not None
                  and run.job_return == node.retry_unless_exit)
        if run.state == "pre":
            unless = (node.retry_unless_exit is not None
                      and run.pre_return == node.retry_unless_exit)
        if retries_left and not unless and not self._stopping_for(run):
            self.say(f"node {node.name}: failed ({run.reason}); retry {run.attempt} of "
                     f"{node.retry}")
            run.state = "waiting"  # back through the ready list, PRE script included
            if node.final:
                self._start_node(run)  # the FINAL node is never in the ready list
            else:
                self._make_ready(run)
            return
        run.state = "failed"
        self.say(f"node {node.name}: failed ({run.reason})"
                 + ("; RETRY UNLESS-EXIT matched, no retry" if unless and retries_left
                    else ""))
        self._mark_futile(run)

    def _mark_futile(self, run: NodeRun) -> None:
        """Descendants of a failed node can never run: DAGMan counts them as futile."""
        todo = list(run.node.children)
        while todo:
            other = self.runs[todo.pop()]
            if other.state == "waiting":
                other.state = "futile"
                other.reason = "Had an ancestor node fail"
                todo.extend(other.node.children)

    def _node_removed(self, run: NodeRun, reason: str) -> None:
        run.state = "removed"
        run.reason = reason
        self._changed = self._status_dirty = True
        self._pending_runs.discard(run)
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
                if run.node.final and self._final_started:
                    continue
                if run.state in ("pre", "running", "post"):
                    run.stopped = True
                if run in self._deferred or run in self._post_queue:
                    self._deferred = [r for r in self._deferred if r is not run]
                    self._post_queue = [r for r in self._post_queue if r is not run]
                    self._node_removed(run, self.stop_reason)
                    continue
                if run.pending:
                    for spec in run.pending:
                        self.log.aborted(run.cluster, spec.proc, self.stop_reason)
                        run.procs_left -= 1
                    run.pending = []
                    if not any(j.run is run for j in self.jobs.values()):
                        self._node_removed(run, self.stop_reason)
            for job in self.jobs.values():
                if not job.killed_because and not job.run.node.final:
                    job.killed_because = self.stop_reason
            self._signal_jobs(signal.SIGTERM)
        elif self.jobs and time.monotonic() > self.kill_deadline:
            self._signal_jobs(signal.SIGKILL)
            self.kill_deadline = time.monotonic() + self.kill_grace_s

    def _signal_jobs(self, signum: int, everything: bool = False) -> None:
        for pid, job in list(self.jobs.items()):
            if everything or not job.run.node.final:
                _killpg(pid, signum)

    def _finish(self, started: float) -> int:
        runs = self.runs
        failed = {n: r.reason for n, r in runs.items() if r.state == "failed"}
        removed = sorted(n for n, r in runs.items() if r.state == "removed")
        succeeded = [n for n, r in runs.items() if r.state == "done"]
        final = runs[self.dag.final] if self.dag is not None and self.dag.final else None
        if self.removing:
            status, exitcode = "removed", EXIT_REMOVED
        elif final is not None and final.state in ("done", "failed"):
            # the FINAL node's result is the DAG's (the manual; seen on a pool too)
            status, exitcode = ("complete", 0) if final.state == "done" else (
                "failed", EXIT_FAILED)
        elif self.abort is not None:
            status, exitcode = "aborted", self.abort[1]
        elif failed or len(succeeded) != len(runs):
            status, exitcode = "failed", EXIT_FAILED
        else:
            status, exitcode = "complete", 0
        metrics: dict[str, object] = {
            "status": status, "exitcode": exitcode,
            "jobs": len(runs), "jobs_succeeded": len(succeeded),
            "jobs_failed": len(failed), "failed_nodes": failed,
            "removed_nodes": removed,
            "not_run": sorted(n for n, r in runs.items() if r.state in ("waiting", "futile"))}
        if self.abort is not None:
            metrics["aborted_by"] = self.abort[0]
        if self.dag is not None and self.dag.job_attrs:
            metrics["dagman_job_attrs"] = dict(self.dag.job_attrs)
        states = self._states()
        block = dagman_files.failed_block(states)
        for line in block:
            self.say(line)
        if exitcode != 0:
            if block:
                self.say("Aborting DAG...")
            rescue = dagman_files.next_rescue(self.dag_path)
            self.say(f"Writing Rescue DAG to {rescue}...")
            atomic_write(rescue, dagman_files.rescue_text(self.dag_path, states, time.time()))
            metrics["rescue_dag"] = rescue.name
        for line in dagman_files.counts_table(self._table_counts(), self._dag_status()):
            self.say(line)
        self._write_status(states, final=True, succeeded=exitcode == 0)
        self._write_dot(states)
        self._jobstate_event("INTERNAL", f"*** DAGMAN_FINISHED {exitcode} ***")
        self._write_metrics(metrics, started)
        self.say(f"DAG {status}: exit code {exitcode}; {len(succeeded)} of {len(runs)} nodes "
                 f"done" + (f"; failed: {', '.join(sorted(failed))}" if failed else ""))
        self._exiting(exitcode)
        return exitcode

    def _exiting(self, exitcode: int) -> None:
        # DAGMan's last line, which scripts grep for
        self.say(f"**** docket.engines.localdag (condor_DAGMAN) pid {os.getpid()} "
                 f"EXITING WITH STATUS {exitcode}")
        if self._out is not None:
            self._out.close()
            self._out = None

    # what DAGMan writes about the DAG -------------------------------------------

    _CODES = {"waiting": 0, "pre": 2, "running": 3, "post": 4, "done": 5, "failed": 6,
              "futile": 7, "removed": 6}

    def _states(self) -> list[NodeState]:
        queued: dict[int, int] = {}
        for job in self.jobs.values():
            if job.kind == "proc":
                queued[id(job.run)] = queued.get(id(job.run), 0) + 1
        out = []
        for number, run in enumerate(self.runs.values()):
            code = self._CODES[run.state]
            if code == 0 and not run.node.final and self._parents_done(run):
                code = 1  # ready
            node = run.node
            details = run.reason if code in (6, 7) else (
                "not_idle" if code == 3 else "")
            if code == 6 and run.reason.startswith("job exited with"):
                details = (f"Job proc ({run.cluster}.{run.last_proc}.0) failed with "
                           f"status {run.job_return}")
            post = node.post
            out.append(NodeState(
                name=node.name, status=code, details=details,
                retries=max(0, run.attempt - 1),
                procs_queued=len(run.pending) + queued.get(id(run), 0),
                noop=node.noop, submit_file=node.subdag or node.submit_file,
                job_id=f"({run.cluster}.{run.last_proc}.0)" if run.cluster else "",
                return_value=run.job_return, parents=tuple(sorted(node.parents)),
                children=tuple(sorted(node.children)), node_id=number,
                post_script=(" ".join([post.executable, *post.arguments]) if post else "")))
        return out

    def _write_status(self, states: list[NodeState], final: bool,
                      succeeded: bool = False) -> None:
        dag = self.dag
        if dag is None or not dag.node_status_file:
            return
        now = time.time()
        self._next_status = time.monotonic() + dag.node_status_interval_s
        self._status_dirty = False
        path = self.dir / dag.node_status_file
        next_update = None if final else now + dag.node_status_interval_s
        with contextlib.suppress(OSError):  # a status file must never stop the DAG
            atomic_write(path, dagman_files.node_status_text(
                self.dag_path, states, self._dag_status(), now, next_update,
                succeeded), durable=False)

    def _write_dot(self, states: list[NodeState] | None = None) -> None:
        dag = self.dag
        if dag is None or not dag.dot_file:
            return
        with contextlib.suppress(OSError):
            atomic_write(self.dir / dag.dot_file,
                         dagman_files.dot_text(states or self._states(), time.time()),
                         durable=False)

    def _jobstate(self, run: NodeRun, event: str, value: str = "-") -> None:
        self._jobstate_event(run.node.name, event, value, run.attempt - 1)

    def _jobstate_event(self, node: str, event: str, value: str = "-",
                        sequence: int = 0) -> None:
        dag = self.dag
        if dag is None or not dag.jobstate_log:
            return
        if self._jobstate_fh is None:
            try:
                self._jobstate_fh = open(self.dir / dag.jobstate_log, "a",  # noqa: SIM115
                                      buffering=1)
            except OSError:
                return
        if node == "INTERNAL":
            self._jobstate_fh.write(f"{int(time.time())} INTERNAL {event}\n")
        else:
            self._jobstate_fh.write(dagman_files.jobstate_line(time.time(), node, event, value,
                                                            sequence))

    def _write_metrics(self, metrics: dict[str, object], started: float) -> int:
        ended = time.time()
        metrics.update({"engine": "local", "start_time": started, "end_time": ended,
                        "duration": round(ended - started, 3)})
        metrics.setdefault("failed_nodes", {})
        atomic_write(self.files["metrics"], json.dumps(metrics, indent=2, sort_keys=True))
        self.log.close()
        if self._progress_fh is not None:
            self._sync(now=True)
            self._progress_fh.close()
        if self._jobstate_fh is not None:
            self._jobstate_fh.close()
        return int(metrics["exitcode"])  # type: ignore[call-overload]


# jobs: files and environment ------------------------------------------------------


def job_argv(spec: ProcSpec) -> list[str]:
    """The command line one job proc runs, before a container image (if any) wraps it in
    the container runtime's command line (docket/engines/container.py)."""
    return [spec.executable, *spec.arguments]


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


def _top_level_files(scratch: Path) -> dict[str, tuple[int, int]]:
    """Name -> (size, mtime in ns) of each regular file at the top of a sandbox."""
    found = {}
    with os.scandir(scratch) as entries:
        for entry in entries:
            if entry.is_file(follow_symlinks=False):
                info = entry.stat(follow_symlinks=False)
                found[entry.name] = (info.st_size, info.st_mtime_ns)
    return found


def _transfer_outputs(spec: ProcSpec, scratch: Path,
                      transferred_in: dict[str, tuple[int, int]]) -> str:
    """Copy outputs back to initialdir; the hold reason on failure, else ''.

    HTCondor's rule: a listed output (``transfer_output_files``) comes back whether or
    not the job changed it (a directory with its contents, or only its contents with a
    trailing slash); without a list, every file at the top of the sandbox that is new,
    or whose size or modification time differs from when input transfer wrote it,
    comes back, and subdirectories do not. (HTCondor compares whole seconds; this
    compares nanoseconds, so a change HTCondor could miss in the second after the
    transfer is not missed here.)"""
    if spec.transfer_output_files is not None:
        names = spec.transfer_output_files
    else:
        now = _top_level_files(scratch)
        names = sorted(name for name, seen in now.items()
                       if transferred_in.get(name) != seen)
    for name in names:
        source = scratch / name
        # 'd/' is the directory's contents, as in transfer_input_files
        target = spec.initialdir if name.endswith("/") else spec.initialdir / Path(name).name
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
    parser.add_argument("--max-submitted", type=int, default=0, metavar="N",
                        help="at most N nodes with jobs at once, like condor_submit_dag "
                             "-maxjobs (default: the CONFIG file's "
                             "DAGMAN_MAX_JOBS_SUBMITTED, else no limit)")
    parser.add_argument("--rescue", action="store_true",
                        help="after a failed run, run again from the newest rescue DAG")
    parser.add_argument("--lock-fd", type=int, default=None, metavar="FD",
                        help=argparse.SUPPRESS)  # the DAG's lock, taken by the launcher
    parser.add_argument("--no-shared-filesystem", dest="shared_filesystem",
                        action="store_false",
                        help="sandbox every vanilla job, as a pool without a shared "
                             "filesystem would")
    args = parser.parse_args(argv)
    limits = {}
    for item in args.limit:
        name, _, value = item.partition("=")
        try:
            limits[name] = float(value)
        except ValueError:
            parser.error(f"--limit {item!r}: give NAME=NUMBER")
    return DagRun(args.dag, args.max_jobs, args.kill_grace_s, limits,
                  shared_filesystem=args.shared_filesystem, rescue=args.rescue,
                  max_submitted=args.max_submitted, lock_fd=args.lock_fd).run()


if __name__ == "__main__":
    sys.exit(main())
