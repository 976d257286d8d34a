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

What runs next, and what a PRE script's, a job's or a POST script's outcome means for
its node, is decided by ``docket.engines.dagsched.Scheduler`` (pure code, tested with
synthetic events); this module starts, watches and stops the processes, moves the
files and writes DAGMan's files. Jobs start through ``os.posix_spawn`` (see ``spawn``).

Where this differs from DAGMan, it is on purpose and listed in ``docs/htcondor.md``:
held jobs are removed at once (nobody can release them here), ``--max-jobs`` limits
running processes (so a ``queue 100`` node cannot start 100 processes on a laptop),
and a restarted runner re-runs nodes that were running rather than re-attaching to
their jobs.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
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
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from docket.dag import Dag, DagCycle, DagError, Node, Script, parse_dag, read_dag
from docket.engines import dagman_files
from docket.engines.dagman_files import NodeState
from docket.engines.dagsched import (
    EXIT_FAILED,
    Next,
    NodeRun,
    Scheduler,
)
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
# How long the runner waits at its end for the waiter threads still removing sandboxes.
WAITER_JOIN_S = 60.0

# $RETURN values DAGMan uses when no job exit code exists
RETURN_SUBMIT_FAILED = -1001
RETURN_REMOVED = -1002


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


def _started_as_recorded(pid: int, recorded: str) -> bool:
    """False if ``pid`` is alive but started outside ``recorded`` (its start time in
    /proc, or the range "low:high" read around the spawn): an unrelated process reusing
    the pid. True if no process has it any more (its group may live on)."""
    now = _start_time(pid)
    if now is None:
        return True
    low, _, high = recorded.partition(":")
    if not high:
        return now == low
    try:
        return int(low) <= int(now) <= int(high)
    except ValueError:
        return False


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
            if not _started_as_recorded(pgid, started):
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


@dataclass
class Job:
    """One running process: a job proc of a node, or its PRE/POST script."""

    run: NodeRun
    kind: str  # "pre", "post" or "proc"
    popen: Spawned
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
        # what runs next is decided there; made once the DAG is read
        self.sched: Scheduler | None = None
        self._summary_seen = -1  # the scheduler's changes at the last status table
        self._status_seen = -1  # and at the last node status file
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
        self.removing = False  # SIGTERM: the DAG is being removed
        self.held = False  # set by SIGUSR1, cleared by SIGUSR2 (docket pause/resume)
        self._said_held = False
        self.kill_deadline: float | None = None
        self.next_cluster = 1
        self.jobs: dict[int, Job] = {}  # pid -> job
        self._waiters: list[threading.Thread] = []  # of sandboxed jobs (see _wait)
        self.dag: Dag | None = None
        self._progress_fh: IO[str] | None = None
        self._out: IO[str] | None = None
        self._need_sync = False
        self._last_sync = 0.0
        self._syncer: _Syncer | None = None
        self._stamp = (0, "")  # dagman.out's time stamp, made once a second
        self._serial = 0  # numbers the markers of the processes this runner starts

    # bookkeeping files --------------------------------------------------------

    def say(self, message: str) -> None:
        if self._out is None:
            # block-buffered: flushed once per pass of the loop, before it waits (see
            # _loop), so a reader sees every line as soon as the runner is idle, without
            # a write per line (a node writes five)
            self._out = open(self.files["dagman.out"], "a")  # noqa: SIM115
        now = int(time.time())
        if self._stamp[0] != now:
            self._stamp = (now, time.strftime("%m/%d/%y %H:%M:%S", time.localtime(now)))
        self._out.write(f"{self._stamp[1]} {message}\n")

    def _flush_out(self) -> None:
        if self._out is not None:
            self._out.flush()

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
        _no_inherited_fds()
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
        sched = self.sched = Scheduler(self.dag, self.max_jobs, self.max_submitted)
        sched.removing = self.removing
        if self.dag.config:
            self.say(f"CONFIG {self.dag.config_file}: " + ", ".join(
                f"{k} = {v}" for k, v in sorted(self.dag.config.items())))
        done = self._recover()
        if self.rescue:
            done |= self._rescue_done()
        sched.begin(done)
        self._jobstate_event("INTERNAL", "*** DAGMAN_STARTED 0.0 ***")
        already = sched.counts["done"]
        self.say(f"starting DAG {self.dag_path.name}: {len(sched.runs)} nodes, "
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
        code = self._finish(started)
        for waiter in self._waiters:  # the last sandboxes' removal (the result is out)
            waiter.join(WAITER_JOIN_S)
        with contextlib.suppress(OSError):  # no job runs: the sandboxes' parent, if empty
            (self.dir / ".scratch").rmdir()
        return code

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

    def say_notes(self) -> None:
        """Write the scheduler's dagman.out lines, in the order it made them."""
        assert self.sched is not None
        for line in self.sched.take_notes():
            self.say(line)

    def _loop(self) -> None:
        sched = self.sched
        assert sched is not None
        while True:
            if self.removing or sched.abort is not None:
                sched.removing = self.removing
                self._stop_everything()
            elif self.held != self._said_held:
                self._said_held = self.held
                self.say("held: running jobs go on, no new job starts" if self.held
                         else "released: starting jobs again")
                continue
            if not self.held or sched.final_started:
                # a node or job can end at once (NOOP, a broken submit file, a missing
                # input) and be retried or free a child: start until nothing changes
                while (self._start_deferred() | self._start_posts() | self._start_ready()
                       | self._start_pending_procs()):
                    pass
            self._sync()
            self._report()
            if not self.jobs and not sched.counts.active():
                if self._start_final():
                    continue
                if not (self.held and not self.removing and sched.abort is None and (
                        sched.counts["waiting"] or sched.pending_runs)):
                    return
                self._flush_out()
                time.sleep(POLL_S)  # held with work left: wait for the release
                continue
            self._enforce_runtimes()
            self._flush_out()
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

    def _sync(self) -> None:
        """fsync the progress file: a node's DONE line must survive a machine crash.

        Every line is flushed at once, so a killed runner's successor always reads it;
        the fsync (for a crash of the machine itself) is made at most every
        SYNC_INTERVAL_S, so a wide DAG does not wait on the disk once per node."""
        if not self._need_sync or self._progress_fh is None:
            return
        if time.monotonic() - self._last_sync >= SYNC_INTERVAL_S:
            # on a busy disk one fsync can take tens of milliseconds: a thread waits for
            # it, so starting and reaping jobs never does
            if self._syncer is None:
                self._syncer = _Syncer(self._progress_fh.fileno())
            self._syncer.request()
            self._need_sync = False
            self._last_sync = time.monotonic()

    def _report(self, force: bool = False) -> None:
        """dagman.out's status table, at most once a second and only after a change (as
        DAGMan prints it once per cycle), and the node status file on its schedule."""
        sched = self.sched
        assert sched is not None
        now = time.monotonic()
        if self._summary_seen != sched.changes and (force or now - self._last_summary >= 1.0):
            self._summary_seen = sched.changes
            self._last_summary = now
            for line in dagman_files.counts_table(sched.table_counts(), sched.dag_status()):
                self.say(line)
            if self.dag is not None and self.dag.dot_update:
                self._write_dot()  # DOT file UPDATE: rewritten as the DAG changes
        if force or (self.dag is not None and self.dag.node_status_file
                     and now >= self._next_status
                     and (self.dag.node_status_always
                          or self._status_seen != sched.changes)):
            self._write_status(self._states(), final=False)

    def _start_final(self) -> bool:
        """The FINAL node, once nothing else can run; True if it started."""
        assert self.sched is not None
        run = self.sched.final_to_start()
        self.say_notes()
        if run is None:
            return False
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
        assert self.sched is not None
        return len(self.jobs) + sum(len(r.pending) for r in self.sched.pending_runs)

    def _start_ready(self) -> bool:
        """Start the ready nodes that the throttles allow; True if any started."""
        assert self.sched is not None
        return self.sched.start_ready(self._slots_used, self._start_node)

    def _start_pending_procs(self) -> bool:
        """Start waiting job procs while process slots are free; True if any started."""
        sched = self.sched
        assert sched is not None
        any_started = started = False
        while len(self.jobs) < self.max_jobs and sched.pending_runs:
            started = False
            for run in sched.pending_in_order():
                if len(self.jobs) >= self.max_jobs:
                    break
                if not run.pending:
                    sched.pending_runs.discard(run)
                    continue
                if not self._within_limits(run.pending[0]):
                    continue  # waits for a running job holding the same limit
                self._start_proc(run, run.pending.pop(0))
                if not run.pending:
                    sched.pending_runs.discard(run)
                started = any_started = True
            if not started:
                break
        return any_started

    def _start_deferred(self) -> bool:
        """Run again the scripts SCRIPT DEFER put off, once their time has come."""
        assert self.sched is not None
        if not self.sched.deferred:
            return False
        due = self.sched.due_deferred(time.monotonic())
        for run, kind in due:
            script = run.node.pre if kind == "pre" else run.node.post
            assert script is not None
            self._spawn_script(run, script, kind)
        return bool(due)

    def _start_posts(self) -> bool:
        """POST scripts waiting for a DAGMAN_MAX_POST_SCRIPTS place."""
        assert self.sched is not None
        return self.sched.start_posts(self._posts_running, self._spawn_post)

    def _spawn_post(self, run: NodeRun) -> None:
        self._spawn_script(run, run.node.post, "post")  # type: ignore[arg-type]

    def _posts_running(self) -> int:
        return sum(1 for j in self.jobs.values() if j.kind == "post")

    # nodes ------------------------------------------------------------------

    def _start_node(self, run: NodeRun) -> None:
        assert self.sched is not None
        if self.sched.attempt(run):
            self._spawn_script(run, run.node.pre, "pre")  # type: ignore[arg-type]
        else:
            self._submit(run)

    def _workdir(self, node: Node) -> Path:
        return self.dir / node.directory if node.directory else self.dir

    def _script_argv(self, run: NodeRun, script: Script, kind: str) -> list[str]:
        """The script's words with DAGMan's macros replaced (script.cpp): a macro is
        replaced only when it is a whole word, its name matched case-blind; those about
        the job are left as written in a PRE script."""
        sched = self.sched
        assert sched is not None
        counts = sched.counts
        macros = {"$JOB": run.node.name, "$NODE": run.node.name,
                  "$RETRY": str(run.attempt - 1), "$MAX_RETRIES": str(run.node.retry),
                  "$DAG_STATUS": str(sched.dag_status()),
                  "$FAILED_COUNT": str(counts["failed"]),
                  "$FUTILE_COUNT": str(counts["futile"]),
                  "$DONE_COUNT": str(counts["done"]),
                  "$QUEUED_COUNT": str(len(sched.pending_runs) + sum(
                      1 for j in self.jobs.values() if j.kind == "proc")),
                  "$NODE_COUNT": str(len(sched.runs))}
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
            child = spawn([exe, *argv[1:]], workdir, {**os.environ, **mark})
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
        self._progress(f"START {pid} {job.popen.started} {marker}{label}")
        if job.scratch is not None and job.spec is not None and job.spec.transfer_files:
            # its outputs are moved back, and its sandbox removed, off the main thread
            self._start_waiter(job)
            return
        try:
            fd = os.pidfd_open(pid)
        except OSError:  # an old kernel: a waiter thread does the same job
            self._start_waiter(job)
            return
        self._selector.register(fd, selectors.EVENT_READ, job)

    def _start_waiter(self, job: Job) -> None:
        waiter = threading.Thread(target=self._wait, args=(job,), daemon=True)
        waiter.start()
        self._waiters = [w for w in self._waiters if w.is_alive()] + [waiter]

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
        if job.scratch is not None:
            # after the end is reported: the next node starts while this sandbox (its
            # inputs, hundreds of files for an MS) is removed; run() waits for it
            shutil.rmtree(job.scratch, ignore_errors=True)

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
            self.sched.pending_runs.add(run)  # type: ignore[union-attr]
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
            from docket.container import ContainerUnavailable, job_command

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
                child = spawn(argv, cwd, env, stdout, stderr)
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

    def _job_done(self, run: NodeRun) -> None:
        """Every job of the node has ended: run the POST script or decide the node."""
        assert self.sched is not None
        if not run.node.noop:
            self._jobstate(run, "JOB_SUCCESS" if not run.job_failed else "JOB_FAILURE",
                           str(run.job_return))
        self._carry_out(run, self.sched.jobs_ended(run))

    def _carry_out(self, run: NodeRun, step: Next) -> None:
        """Do what the scheduler said comes next for the node."""
        sched = self.sched
        assert sched is not None
        self.say_notes()
        if step is Next.SUBMIT:
            self._submit(run)
        elif step is Next.POST:
            if sched.queue_post(run, self._posts_running()):
                self._spawn_post(run)
        elif step is Next.REMOVED:
            self._node_removed(run, sched.stop_reason)
        elif step is Next.DONE or step is Next.FAIL:
            self._node_result(run, ok=step is Next.DONE)

    def _script_ended(self, run: NodeRun, kind: str, value: int, reason: str = "",
                      signum: int | None = None) -> None:
        assert self.sched is not None
        step = self.sched.script_ended(run, kind, value, reason, signum, time.monotonic())
        if step is not Next.DEFER:
            self._jobstate(run, f"{kind.upper()}_SCRIPT_" + (
                "SUCCESS" if value == 0 and signum is None else "FAILURE"), str(value))
            if kind == "post":
                self.log.post_script(run.cluster, run.last_proc, run.node.name,
                                     None if signum is not None else value, signum)
        self._carry_out(run, step)

    def _node_result(self, run: NodeRun, ok: bool) -> None:
        assert self.sched is not None
        step = self.sched.node_result(run, ok)
        if step is Next.DONE:
            self._progress(f"DONE {run.node.name}", durable=True)
        self.say_notes()
        if step is Next.RETRY_NOW:
            self._start_node(run)  # the FINAL node is never in the ready queue

    def _node_removed(self, run: NodeRun, reason: str) -> None:
        assert self.sched is not None
        self.sched.node_removed(run, reason)
        self.say_notes()

    # stopping -----------------------------------------------------------------

    def _on_hold(self, signum: int, _frame: object) -> None:
        self.held = True

    def _on_release(self, signum: int, _frame: object) -> None:
        self.held = False

    def _on_term(self, signum: int, _frame: object) -> None:
        # Only set a flag: the main loop notices within POLL_S (no locks in a handler).
        self.removing = True
        if self.sched is not None:
            self.sched.removing = True

    def _stop_everything(self) -> None:
        sched = self.sched
        assert sched is not None
        if self.kill_deadline is None:
            if self.removing:
                sched.stop_reason = ("removed: the DAG was cancelled (SIGTERM to its "
                                     "runner)")
                self.say("the DAG is being removed; stopping every running job")
            else:
                self.say("ABORT-DAG-ON: stopping every running job")
            self.kill_deadline = time.monotonic() + self.kill_grace_s
            dropped = sched.stop(lambda run: any(j.run is run for j in self.jobs.values()))
            for run, specs in dropped:
                for spec in specs:
                    self.log.aborted(run.cluster, spec.proc, sched.stop_reason)
            self.say_notes()
            for job in self.jobs.values():
                if not job.killed_because and not job.run.node.final:
                    job.killed_because = sched.stop_reason
            self._signal_jobs(signal.SIGTERM)
        elif self.jobs and time.monotonic() > self.kill_deadline:
            self._signal_jobs(signal.SIGKILL)
            self.kill_deadline = time.monotonic() + self.kill_grace_s

    def _signal_jobs(self, signum: int, everything: bool = False) -> None:
        for pid, job in list(self.jobs.items()):
            if everything or not job.run.node.final:
                _killpg(pid, signum)

    def _finish(self, started: float) -> int:
        sched = self.sched
        assert sched is not None and self.dag is not None
        sched.removing = self.removing
        result = sched.result()
        status, exitcode, failed = result.status, result.exitcode, result.failed
        succeeded, runs = result.succeeded, sched.runs
        metrics: dict[str, object] = {
            "status": status, "exitcode": exitcode,
            "jobs": len(runs), "jobs_succeeded": len(succeeded),
            "jobs_failed": len(failed), "failed_nodes": failed,
            "removed_nodes": result.removed, "not_run": result.not_run}
        if sched.abort is not None:
            metrics["aborted_by"] = sched.abort[0]
        if self.dag.job_attrs:
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
        for line in dagman_files.counts_table(sched.table_counts(), sched.dag_status()):
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
        sched = self.sched
        assert sched is not None
        for number, run in enumerate(sched.runs.values()):
            code = self._CODES[run.state]
            if code == 0 and not run.node.final and sched.parents_done(run):
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
        assert self.sched is not None
        self._status_seen = self.sched.changes
        path = self.dir / dag.node_status_file
        next_update = None if final else now + dag.node_status_interval_s
        with contextlib.suppress(OSError):  # a status file must never stop the DAG
            atomic_write(path, dagman_files.node_status_text(
                self.dag_path, states, self.sched.dag_status(), now, next_update,
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
        # no last fsync of the progress file: the durable metrics file written above
        # says the DAG is over, and a later runner reads nothing else
        if self._syncer is not None:
            self._syncer.close()
        if self._progress_fh is not None:
            self._progress_fh.close()
        if self._jobstate_fh is not None:
            self._jobstate_fh.close()
        return int(metrics["exitcode"])  # type: ignore[call-overload]


# jobs: files and environment ------------------------------------------------------


def job_argv(spec: ProcSpec) -> list[str]:
    """The command line one job proc runs, before a container image (if any) wraps it in
    the container runtime's command line (docket/container.py)."""
    return [spec.executable, *spec.arguments]


class _StreamError(OSError):
    pass


def _killpg(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def _boot_ticks() -> int:
    """Now, in the clock and unit of a process's start time in /proc/<pid>/stat."""
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME) * _TICKS_PER_S // 1_000_000_000


class Spawned:
    """A started process: its pid, wait() giving the exit code (or -N for signal N),
    and ``started``, the range of boot-clock ticks its start time lies in (read around
    the spawn: reading /proc/<pid>/stat of a process that is still exec'ing costs more
    than the spawn's other work)."""

    __slots__ = ("pid", "returncode", "started", "_popen")

    def __init__(self, pid: int, started: str,
                 popen: subprocess.Popen[bytes] | None = None) -> None:
        self.pid = pid
        self.started = started
        self.returncode: int | None = None
        self._popen = popen

    def wait(self) -> int:
        if self.returncode is None:
            if self._popen is not None:
                self.returncode = self._popen.wait()
            else:
                _, status = os.waitpid(self.pid, 0)
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


_devnull_fd: int | None = None


def spawn(argv: list[str], cwd: Path, env: dict[str, str], stdout: object = None,
          stderr: object = None) -> Spawned:
    """Start ``argv`` in ``cwd`` in a session of its own, stdin from /dev/null; stdout
    and stderr are an open file, subprocess.DEVNULL, or (stderr) subprocess.STDOUT.

    os.posix_spawn where it can (glibc spawns with vfork, and skips the Python-level
    work of subprocess.Popen: a wide DAG starts one process per node), Popen otherwise
    (a program found on PATH, or a runner whose standard descriptors are closed).
    posix_spawn closes no descriptors: every descriptor the runner opens is
    close-on-exec, and run() makes inherited ones so (see _no_inherited_fds)."""
    global _devnull_fd
    streams = [subprocess.DEVNULL if s is None else s for s in (stdout, stderr)]
    fds = [-1, -1]
    if os.path.isabs(argv[0]):
        if _devnull_fd is None:
            _devnull_fd = os.open(os.devnull, os.O_RDWR)
        for i, stream in enumerate(streams):
            if stream == subprocess.DEVNULL:
                fds[i] = _devnull_fd
            elif stream == subprocess.STDOUT:
                fds[i] = fds[0]
            else:
                fds[i] = stream.fileno()  # type: ignore[attr-defined]
    try:
        here = os.getcwd()
    except OSError:  # the runner's own directory is gone; Popen needs none
        here = ""
    # fds stay -1 for a program looked up on PATH; one below 3 would be dup2'ed onto
    # itself, which keeps it close-on-exec
    before = _boot_ticks()
    if not here or _devnull_fd is None or min(fds[0], fds[1], _devnull_fd) < 3:
        popen = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                 stdout=streams[0], stderr=streams[1],  # type: ignore[arg-type]
                                 start_new_session=True)
        return Spawned(popen.pid, f"{before}:{_boot_ticks()}", popen)
    assert _devnull_fd is not None
    actions = [(os.POSIX_SPAWN_DUP2, _devnull_fd, 0), (os.POSIX_SPAWN_DUP2, fds[0], 1),
               (os.POSIX_SPAWN_DUP2, fds[1], 2)]
    # posix_spawn has no cwd argument (before Python 3.13): the runner's main thread
    # moves there for the spawn, as expand_submit does for condor_submit's reading
    moved = here != str(cwd)
    if moved:
        os.chdir(cwd)
    try:
        pid = os.posix_spawn(argv[0], argv, env, file_actions=actions, setsid=True)
        return Spawned(pid, f"{before}:{_boot_ticks()}")
    finally:
        if moved:
            os.chdir(here)


def _no_inherited_fds() -> None:
    """Make every descriptor above 2 close-on-exec: the runner may have inherited some
    from whatever started it, and a job must not (Popen's close_fds, for posix_spawn)."""
    with contextlib.suppress(OSError):
        for name in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError, ValueError):
                if int(name) > 2:
                    os.set_inheritable(int(name), False)


class _Syncer:
    """A thread that fsyncs one file when asked, so the runner's loop never waits on
    the disk; its own duplicate of the descriptor, so a close elsewhere cannot race."""

    def __init__(self, fd: int) -> None:
        self._fd = os.dup(fd)
        self._wanted = threading.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def request(self) -> None:
        self._wanted.set()

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            if self._closing:
                break
            with contextlib.suppress(OSError):
                os.fsync(self._fd)
        os.close(self._fd)

    def close(self) -> None:
        # not joined: an fsync in progress on a busy disk need not delay the exit
        self._closing = True
        self._wanted.set()


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


def _copy_out(source: Path, target: Path) -> None:
    """Copy ``source`` (followed if it is a symlink) to ``target``; a directory's files
    join what ``target`` holds."""
    if source.is_dir():
        shutil.copytree(source, target, symlinks=True, dirs_exist_ok=True)
    else:
        shutil.copy2(source, target)


def _move_out(source: Path, target: Path) -> None:
    """Move ``source`` from a finished job's sandbox to ``target``: a file, or a symlink
    below a listed directory (as itself), replaces what is there; a directory's entries
    join what ``target`` holds, as ``_copy_out`` would, and a directory that is not there
    yet arrives by one rename. Moving, not copying: the sandbox is removed right after
    and nothing else reads it, so an MS of hundreds of files costs a rename, not a copy
    of each file and the removal of each copy. Across filesystems (an initialdir on
    another mount) it copies."""
    try:
        if source.is_dir() and not source.is_symlink():
            if not os.path.lexists(target):
                os.rename(source, target)
                return
            if not target.is_dir() or target.is_symlink():
                raise NotADirectoryError(20, "Not a directory", str(target))
            for entry in os.scandir(source):
                _move_out(Path(entry.path), target / entry.name)
            return
        os.replace(source, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        if source.is_symlink():
            os.symlink(os.readlink(source), target)  # as copytree(symlinks=True) did
        else:
            _copy_out(source, target)


def _transfer_outputs(spec: ProcSpec, scratch: Path,
                      transferred_in: dict[str, tuple[int, int]]) -> str:
    """Move outputs back to initialdir; the hold reason on failure, else ''.

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
            # a directory's files join what is there, not replace it: the parallel
            # pieces of a fan-out each bring their own files back into products/. A
            # listed symlink is followed, as always (what it points to may be in the
            # sandbox, which is removed next)
            if source.is_symlink():
                _copy_out(source, target)
            else:
                _move_out(source, target)
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
