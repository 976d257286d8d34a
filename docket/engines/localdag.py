"""The local engine's DAG runner: DAGMan's job on this machine, as a detached process.

``python -m docket.engines.localdag WORKFLOW.dag [--max-jobs N]`` runs one DAG and writes
what DAGMan would beside it:

- ``<dag>.nodes.log``  node job events in HTCondor's user-log format;
- ``<dag>.dagman.out`` a human-readable account of what ran and why;
- ``<dag>.progress``   nodes that finished successfully (read back on a restart, like a
  rescue DAG, so completed nodes never run twice);
- ``<dag>.metrics``    JSON written once at the end, with the DAG's exit code;
- ``<dag>.lock``       held (flock) for as long as the runner lives: a second runner for
  the same DAG exits at once, and the watcher tests the lock to know it is alive.

The runner belongs to no terminal or watcher (it starts its own session), so killing or
restarting the watcher never kills a workflow.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
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

from docket.dag import Dag, Node, Script, read_dag
from docket.engines.eventlog import EventLogWriter
from docket.fileio import atomic_write
from docket.submit import ProcSpec, expand_submit

__all__ = ["DagRun", "main", "lock_is_held", "dag_files"]

KILL_GRACE_S = 5.0


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


@dataclass
class NodeRun:
    node: Node
    state: str = "waiting"  # waiting, ready, pre, running, post, done, failed
    attempt: int = 0
    cluster: int = 0
    exit_value: int | None = None
    reason: str = ""
    procs_left: int = 0
    proc_results: list[tuple[int | None, int | None, str]] = field(default_factory=list)
    pids: set[int] = field(default_factory=set)


class DagRun:
    def __init__(self, dag_path: Path, max_jobs: int) -> None:
        self.dag_path = dag_path.resolve()
        self.dir = self.dag_path.parent
        self.files = dag_files(self.dag_path)
        self.max_jobs = max(1, max_jobs)
        self.events: queue.Queue[tuple[str, str, int, int | None, int | None, str]] = (
            queue.Queue())
        self.removing = False
        self.abort: tuple[str, int] | None = None
        self.next_cluster = 1

    # bookkeeping files --------------------------------------------------------

    def say(self, message: str) -> None:
        stamp = time.strftime("%m/%d/%y %H:%M:%S")
        with open(self.files["dagman.out"], "a") as out:
            out.write(f"{stamp} {message}\n")

    def _progress(self, line: str) -> None:
        with open(self.files["progress"], "a") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def _recover(self) -> set[str]:
        done: set[str] = set()
        path = self.files["progress"]
        if path.exists():
            for line in path.read_text().splitlines():
                word, _, value = line.partition(" ")
                if word == "DONE":
                    done.add(value)
                elif word == "CLUSTER" and value.isdigit():
                    self.next_cluster = max(self.next_cluster, int(value) + 1)
        return done

    # the run ----------------------------------------------------------------

    def run(self) -> int:
        lock_fd = os.open(self.files["lock"], os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + 2.0
        while True:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                # a watcher's liveness probe holds it for microseconds; a runner forever
                if time.monotonic() > deadline:
                    self.say("another runner holds the lock for this DAG; exiting")
                    return 0
                time.sleep(0.01)
        os.ftruncate(lock_fd, 0)
        os.write(lock_fd, f"{os.getpid()}\n".encode())
        if self.files["metrics"].exists():
            self.say("the DAG already finished (metrics file present); nothing to do")
            return 0
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        started = time.time()
        dag = read_dag(self.dag_path)
        done = self._recover()
        self.log = EventLogWriter(self.files["nodes.log"])
        runs = {name: NodeRun(node) for name, node in dag.nodes.items()}
        for name in done:
            if name in runs:
                runs[name].state = "done"
        for name, node in dag.nodes.items():
            if node.done and runs[name].state != "done":
                runs[name].state = "done"
        self.say(f"starting DAG {self.dag_path.name}: {len(runs)} nodes, "
                 f"{len(done)} already done, at most {self.max_jobs} jobs at once "
                 f"(pid {os.getpid()})")
        self._loop(dag, runs)
        return self._finish(runs, started)

    def _ready(self, dag: Dag, runs: dict[str, NodeRun]) -> list[NodeRun]:
        ready = []
        for run in runs.values():
            if run.state == "waiting" and all(runs[p].state == "done"
                                              for p in run.node.parents):
                ready.append(run)
        ready.sort(key=lambda r: (-r.node.priority, r.node.name))
        return ready

    def _loop(self, dag: Dag, runs: dict[str, NodeRun]) -> None:
        busy = 0
        per_category: dict[str, int] = {}
        while True:
            if not self.removing and self.abort is None:
                for run in self._ready(dag, runs):
                    if busy >= self.max_jobs:
                        break
                    cat = run.node.category
                    if cat and per_category.get(cat, 0) >= dag.maxjobs.get(cat, 1 << 30):
                        continue
                    busy += 1
                    if cat:
                        per_category[cat] = per_category.get(cat, 0) + 1
                    self._start_node(run)
            active = [r for r in runs.values() if r.state in ("pre", "running", "post")]
            if not active:
                return
            kind, name, proc, code, sig, note = self.events.get()
            run = runs[name]
            ended = self._handle(run, kind, proc, code, sig, note)
            if ended:
                busy -= 1
                if run.node.category:
                    per_category[run.node.category] -= 1
            if (self.removing or self.abort) and any(r.pids for r in runs.values()):
                self._kill_all(runs)

    # nodes ------------------------------------------------------------------

    def _start_node(self, run: NodeRun) -> None:
        run.attempt += 1
        run.proc_results = []
        if run.node.noop:
            run.state = "running"
            self.events.put(("noop", run.node.name, 0, 0, None, ""))
            return
        if run.node.pre is not None:
            run.state = "pre"
            self._spawn_script(run, run.node.pre, "pre", None)
        else:
            self._submit(run)

    def _script_args(self, run: NodeRun, script: Script, retval: int | None) -> list[str]:
        subst = {"$JOB": run.node.name, "$RETRY": str(run.attempt - 1),
                 "$MAX_RETRIES": str(run.node.retry),
                 "$RETURN": str(retval if retval is not None else -1),
                 "$DAG_STATUS": "0", "$FAILED_COUNT": "0"}
        out = []
        for arg in [script.executable, *script.arguments]:
            for key, value in subst.items():
                arg = arg.replace(key, value)
            out.append(arg)
        return out

    def _spawn_script(self, run: NodeRun, script: Script, kind: str,
                      retval: int | None) -> None:
        argv = self._script_args(run, script, retval)
        workdir = self.dir / run.node.directory if run.node.directory else self.dir
        exe = argv[0] if os.path.isabs(argv[0]) else str(workdir / argv[0])
        if not os.path.exists(exe) and shutil.which(argv[0]):
            exe = shutil.which(argv[0]) or exe
        self.say(f"node {run.node.name}: running {kind.upper()} script {' '.join(argv)}")
        try:
            child = subprocess.Popen([exe, *argv[1:]], cwd=workdir, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        except OSError as exc:
            self.events.put((kind, run.node.name, 0, None, None, f"cannot start: {exc}"))
            return
        run.pids.add(child.pid)
        threading.Thread(target=self._wait, args=(child, kind, run, 0), daemon=True).start()

    def _wait(self, child: subprocess.Popen[bytes], kind: str, run: NodeRun, proc: int) -> None:
        code = child.wait()
        run.pids.discard(child.pid)
        if code < 0:
            self.events.put((kind, run.node.name, proc, None, -code, ""))
        else:
            self.events.put((kind, run.node.name, proc, code, None, ""))

    def _submit(self, run: NodeRun) -> None:
        run.state = "running"
        run.cluster = self.next_cluster
        self.next_cluster += 1
        self._progress(f"CLUSTER {run.cluster}")
        node = run.node
        workdir = self.dir / node.directory if node.directory else self.dir
        try:
            procs = expand_submit(workdir / node.submit_file, node.name, node.vars,
                                  run.cluster, run.attempt - 1)
        except Exception as exc:  # a broken submit file fails the node, not the runner
            self.say(f"node {node.name}: submit failed: {exc}")
            self.log.submitted(run.cluster, 0, node.name)
            self.log.aborted(run.cluster, 0, f"submit failed: {exc}")
            self.events.put(("proc", node.name, 0, None, None, f"submit failed: {exc}"))
            run.procs_left = 1
            return
        run.procs_left = len(procs)
        self.say(f"node {node.name}: submitting {len(procs)} job(s) as cluster {run.cluster}"
                 f" (attempt {run.attempt})")
        for spec in procs:
            self.log.submitted(run.cluster, spec.proc, node.name)
            self._start_proc(run, spec)

    def _start_proc(self, run: NodeRun, spec: ProcSpec) -> None:
        cluster, proc, node = run.cluster, spec.proc, run.node.name
        scratch = self.dir / ".scratch" / f"{node}.{cluster}.{proc}"
        if scratch.exists():
            shutil.rmtree(scratch)
        scratch.mkdir(parents=True)
        for item in spec.transfer_input_files:
            source = Path(item) if os.path.isabs(item) else spec.initialdir / item
            try:
                if source.is_dir():
                    shutil.copytree(source, scratch / source.name, symlinks=True)
                else:
                    shutil.copy2(source, scratch / source.name)
            except OSError as exc:
                reason = (f"Transfer input files failure at execution point local while "
                          f"receiving files from access point: reading from file {source}: "
                          f"(errno {exc.errno}) {exc.strerror}")
                self.log.held(cluster, proc, reason, 13, exc.errno or 0)
                self.log.aborted(cluster, proc, "via local engine: held jobs are removed "
                                                "(no one can release them here)")
                self.say(f"node {node}: job {cluster}.{proc} held: {reason}")
                self.events.put(("proc", node, proc, None, None, f"held: {reason}"))
                return
        if spec.container_image:
            self.say(f"node {node}: container_image {spec.container_image} is ignored by "
                     "the local engine; the command runs directly on this machine")
        exe = spec.executable
        if not os.path.isabs(exe):
            exe = str(spec.initialdir / exe)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
               "HOME": os.environ.get("HOME", str(scratch)), "TMPDIR": str(scratch),
               "_CONDOR_SCRATCH_DIR": str(scratch),
               "OMP_NUM_THREADS": spec.request.get("request_cpus", "1") or "1"}
        for key in ("LANG", "LC_ALL", "DOCKET_HOME", "DOCKET_TOOLS_CONFIG"):
            if key in os.environ:
                env[key] = os.environ[key]
        env.update(spec.environment)
        cwd = scratch if spec.transfer_files else spec.initialdir
        try:
            with contextlib.ExitStack() as stack:
                stdout = (stack.enter_context(open(spec.initialdir / spec.output, "wb"))
                          if spec.output else subprocess.DEVNULL)
                stderr = (stack.enter_context(open(spec.initialdir / spec.error, "wb"))
                          if spec.error else subprocess.DEVNULL)
                child = subprocess.Popen([exe, *spec.arguments], cwd=cwd, env=env,
                                         stdin=subprocess.DEVNULL, stdout=stdout,
                                         stderr=stderr, start_new_session=True)
        except OSError as exc:
            self.log.executing(cluster, proc)
            self.say(f"node {node}: cannot run {exe}: {exc.strerror}")
            self.log.terminated(cluster, proc, 127, None)
            shutil.rmtree(scratch, ignore_errors=True)
            self.events.put(("proc", node, proc, 127, None, f"cannot run {exe}: "
                                                            f"{exc.strerror}"))
            return
        self.log.executing(cluster, proc)
        run.pids.add(child.pid)
        threading.Thread(target=self._wait_proc, args=(child, run, spec, scratch),
                         daemon=True).start()

    def _wait_proc(self, child: subprocess.Popen[bytes], run: NodeRun, spec: ProcSpec,
                   scratch: Path) -> None:
        code = child.wait()
        run.pids.discard(child.pid)
        sig = -code if code < 0 else None
        exit_code = None if sig else code
        note = ""
        if spec.transfer_files and sig is None:
            note = self._transfer_outputs(spec, scratch)
        if note:
            self.log.held(run.cluster, spec.proc, note, 12, 2)
            self.log.aborted(run.cluster, spec.proc, "via local engine: held jobs are removed")
        else:
            self.log.terminated(run.cluster, spec.proc, exit_code, sig)
        shutil.rmtree(scratch, ignore_errors=True)
        self.events.put(("proc", run.node.name, spec.proc, exit_code, sig,
                         f"held: {note}" if note else ""))

    def _transfer_outputs(self, spec: ProcSpec, scratch: Path) -> str:
        inputs = {Path(i).name for i in spec.transfer_input_files}
        if spec.transfer_output_files is not None:
            names = spec.transfer_output_files
        else:
            names = [p.name for p in scratch.iterdir() if p.is_file() and p.name not in inputs]
        for name in names:
            source = scratch / name
            target = spec.initialdir / Path(name).name
            try:
                if source.is_dir():
                    if target.exists():
                        shutil.rmtree(target)
                    shutil.copytree(source, target, symlinks=True)
                else:
                    shutil.copy2(source, target)
            except OSError as exc:
                return (f"Transfer output files failure at access point while receiving "
                        f"files from execution point local: reading from file {source}: "
                        f"(errno {exc.errno}) {exc.strerror}")
        return ""

    def _handle(self, run: NodeRun, kind: str, proc: int, code: int | None,
                sig: int | None, note: str) -> bool:
        """Advance a node after one of its processes ended; True when the node is over."""
        node = run.node
        if kind == "pre":
            if code == 0:
                self._submit(run)
                return False
            run.exit_value = code
            run.reason = note or (f"PRE script exited with {code}" if sig is None
                                  else f"PRE script killed by signal {sig}")
            return self._node_result(run, ok=False)
        if kind in ("proc", "noop"):
            run.proc_results.append((code, sig, note))
            run.procs_left -= 1
            if kind == "proc" and run.procs_left > 0:
                return False
            failures = [r for r in run.proc_results if r[0] != 0 or r[1] is not None]
            run.exit_value = failures[0][0] if failures else 0
            if failures:
                c, s, n = failures[0]
                run.reason = n or (f"job exited with {c}" if s is None
                                   else f"job killed by signal {s}")
            if node.abort_on and failures and run.exit_value == node.abort_on[0] or (
                    node.abort_on and not failures and node.abort_on[0] == 0):
                value = node.abort_on[1] if node.abort_on[1] is not None else run.exit_value
                self.abort = (node.name, int(value or 0))
                self.say(f"node {node.name}: exit value {run.exit_value} matches ABORT-DAG-ON;"
                         f" aborting the DAG with return value {value}")
            if node.post is not None and not self.removing:
                run.state = "post"
                self._spawn_script(run, node.post, "post", run.exit_value)
                return False
            return self._node_result(run, ok=not failures)
        if kind == "post":
            self.log.post_script(run.cluster, 0, node.name, code, sig)
            ok = code == 0 and sig is None
            if not ok:
                run.reason = (f"POST script exited with {code}" if sig is None
                              else f"POST script killed by signal {sig}")
                run.exit_value = code
            return self._node_result(run, ok=ok)
        return False

    def _node_result(self, run: NodeRun, ok: bool) -> bool:
        node = run.node
        if ok:
            run.state = "done"
            self._progress(f"DONE {node.name}")
            self.say(f"node {node.name}: done (attempt {run.attempt})")
            return True
        retries_left = run.attempt <= node.retry
        unless = node.retry_unless_exit is not None and run.exit_value == node.retry_unless_exit
        if retries_left and not unless and not self.removing and self.abort is None:
            self.say(f"node {node.name}: failed ({run.reason}); retry {run.attempt} of "
                     f"{node.retry}")
            run.state = "waiting"
            # a retried node goes back through the ready list, PRE script included
            return True
        run.state = "failed"
        self.say(f"node {node.name}: failed ({run.reason})"
                 + ("; RETRY UNLESS-EXIT matched, no retry" if unless else ""))
        return True

    # ending -----------------------------------------------------------------

    def _on_term(self, signum: int, _frame: object) -> None:
        self.removing = True
        self.events.put(("wake", "", 0, None, None, ""))

    def _kill_all(self, runs: dict[str, NodeRun]) -> None:
        pids = [pid for r in runs.values() for pid in r.pids]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + KILL_GRACE_S
        while any(r.pids for r in runs.values()) and time.monotonic() < deadline:
            time.sleep(0.05)
        for r in runs.values():
            for pid in list(r.pids):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)

    def _finish(self, runs: dict[str, NodeRun], started: float) -> int:
        failed = {n: r.reason for n, r in runs.items() if r.state == "failed"}
        succeeded = [n for n, r in runs.items() if r.state == "done"]
        if self.removing:
            status, exitcode = "removed", 2
        elif self.abort is not None:
            status, exitcode = "aborted", self.abort[1] or 1
        elif failed or len(succeeded) != len(runs):
            status, exitcode = "failed", 1
        else:
            status, exitcode = "complete", 0
        metrics = {"engine": "local", "status": status, "exitcode": exitcode,
                   "jobs": len(runs), "jobs_succeeded": len(succeeded),
                   "jobs_failed": len(failed), "failed_nodes": failed,
                   "not_run": sorted(n for n, r in runs.items()
                                     if r.state in ("waiting", "ready")),
                   "start_time": started, "end_time": time.time()}
        if self.abort is not None:
            metrics["aborted_by"] = self.abort[0]
        atomic_write(self.files["metrics"], json.dumps(metrics, indent=2, sort_keys=True))
        self.say(f"DAG {status}: exit code {exitcode}; {len(succeeded)} of {len(runs)} nodes "
                 f"done" + (f"; failed: {', '.join(sorted(failed))}" if failed else ""))
        self.log.close()
        return exitcode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m docket.engines.localdag",
                                     description="Run one DAG on this machine.")
    parser.add_argument("dag", type=Path)
    parser.add_argument("--max-jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    return DagRun(args.dag, args.max_jobs).run()


if __name__ == "__main__":
    sys.exit(main())
