"""What the local DAG runner does next, as DAGMan decides it: pure code, no processes.

DAGMan keeps a ready queue (dag.cpp ``StartNode``): a node whose parents are all done
joins it ordered by PRIORITY, higher first; among equal priorities it joins at the end
(breadth-first, the default) or, with ``DAGMAN_SUBMIT_DEPTH_FIRST``, at the front. The
runner takes nodes from the front while the throttles allow: the machine's job slots,
``DAGMAN_MAX_JOBS_SUBMITTED``, ``MAXJOBS`` per CATEGORY and ``DAGMAN_MAX_PRE_SCRIPTS``.
A node a throttle holds back keeps its place.

``Scheduler`` holds every node's state and judges each event the runner reports (a PRE
script, a job, a POST script ended): PRE_SKIP, ABORT-DAG-ON, RETRY ... UNLESS-EXIT,
DAGMAN_ALWAYS_RUN_POST, DONE, FINAL and the DAG's exit code, as src/condor_dagman does.
The runner (docket.engines.localdag) starts, watches and stops the processes and moves
the files; it never decides what a result means.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from docket.dag import Dag, Node

if TYPE_CHECKING:
    from docket.submit import ProcSpec

__all__ = ["ReadyQueue", "StateCounts", "ACTIVE", "NodeRun", "Next", "DagResult",
           "Scheduler", "EXIT_FAILED", "EXIT_REMOVED", "RETURN_JOB_SKIPPED"]

# states in which a node holds a place against the throttles
ACTIVE = frozenset({"pre", "running", "post"})

# $RETURN of a POST script that DAGMAN_ALWAYS_RUN_POST runs after a failed PRE script
RETURN_JOB_SKIPPED = -1004

# DAG exit codes, as condor_dagman uses them
EXIT_FAILED = 1
EXIT_REMOVED = 2


class ReadyQueue:
    """Nodes ready to start, in DAGMan's order."""

    def __init__(self, depth_first: bool = False) -> None:
        self.depth_first = depth_first
        self._heap: list[tuple[int, int, str]] = []
        self._serial = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, name: str, priority: int = 0) -> None:
        serial = next(self._serial)
        heapq.heappush(self._heap, (-priority, -serial if self.depth_first else serial,
                                    name))

    def take(self, allowed: Callable[[str], bool | None]) -> list[str]:
        """Offer the nodes in order: True takes a node off the queue (the caller started
        it, or it is no longer waiting), False holds it back in its place (a throttle),
        None stops the offer there (no slot is free for anyone); return those taken."""
        taken: list[str] = []
        held: list[tuple[int, int, str]] = []
        while self._heap:
            item = heapq.heappop(self._heap)
            verdict = allowed(item[2])
            if verdict is None:
                held.append(item)
                break
            if verdict:
                taken.append(item[2])
            else:
                held.append(item)
        for item in held:
            heapq.heappush(self._heap, item)
        return taken


class StateCounts(Counter):  # type: ignore[type-arg]
    """How many nodes are in each state, and active in each CATEGORY, kept as nodes
    change state so no decision has to look at every node."""

    def move(self, old: str | None, new: str, category: str | None) -> None:
        if old is not None:
            self[old] -= 1
        self[new] += 1
        if category:
            if old in ACTIVE:
                self[("category", category)] -= 1
            if new in ACTIVE:
                self[("category", category)] += 1

    def active(self) -> int:
        return self["pre"] + self["running"] + self["post"]

    def in_category(self, category: str) -> int:
        return self[("category", category)]


@dataclass(eq=False)
class NodeRun:
    """One node's place in the run: its state and what its attempts returned."""

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


class Next(enum.Enum):
    """What the runner does for a node after an event the scheduler has judged."""

    SUBMIT = "submit"  # run the node's job(s)
    POST = "post"  # run the POST script (or queue it for a DAGMAN_MAX_POST_SCRIPTS place)
    DONE = "done"  # the node succeeded (node_result with ok=True)
    FAIL = "fail"  # the attempt failed (node_result with ok=False)
    REMOVED = "removed"  # the DAG is stopping: the node is removed
    DEFER = "defer"  # SCRIPT DEFER: the script runs again later (due_deferred)
    RETRY = "retry"  # node_result: back in the ready queue for another attempt
    RETRY_NOW = "retry now"  # node_result: the FINAL node's retry, started at once


@dataclass
class DagResult:
    """How the DAG ended, as condor_dagman reports it."""

    status: str  # complete, failed, aborted, removed
    exitcode: int
    failed: dict[str, str]  # node -> reason
    removed: list[str]
    succeeded: list[str]
    not_run: list[str]


class Scheduler:
    """DAGMan's decisions for one DAG: which node starts next under the throttles, what a
    PRE script's, a job's or a POST script's outcome means for its node (PRE_SKIP,
    ABORT-DAG-ON, RETRY ... UNLESS-EXIT, DAGMAN_ALWAYS_RUN_POST), when the FINAL node
    runs, and the DAG's status and exit code. Pure: it starts no process and touches no
    file. The runner reports events to it, carries out the ``Next`` it answers, and
    copies ``notes`` (dagman.out lines) into dagman.out."""

    def __init__(self, dag: Dag, max_jobs: int, max_submitted: int = 0) -> None:
        self.dag = dag
        self.max_jobs = max(1, max_jobs)  # job and script processes at once
        # DAGMan 23's defaults: 20 PRE and 20 POST scripts at once, breadth-first
        self.max_pre = dag.number("DAGMAN_MAX_PRE_SCRIPTS", 20)
        self.max_post = dag.number("DAGMAN_MAX_POST_SCRIPTS", 20)
        # nodes with jobs at once (0: no limit); condor_submit_dag -maxjobs wins
        self.max_submitted = max_submitted or dag.number("DAGMAN_MAX_JOBS_SUBMITTED", 0)
        self.depth_first = dag.flag("DAGMAN_SUBMIT_DEPTH_FIRST")
        self.always_run_post = dag.flag("DAGMAN_ALWAYS_RUN_POST")
        self.counts = StateCounts()
        self.ready = ReadyQueue(self.depth_first)
        self.runs: dict[str, NodeRun] = {}
        self.removing = False  # the DAG is being removed (condor_rm of DAGMan)
        self.abort: tuple[str, int] | None = None  # (node, DAG return value)
        self.stop_reason = ""
        self.final_started = False
        self.pending_runs: set[NodeRun] = set()  # nodes with procs waiting for a slot
        self.deferred: list[NodeRun] = []  # scripts SCRIPT DEFER will run again
        self.post_queue: list[NodeRun] = []  # POST scripts waiting for a place
        self.changes = 0  # counts node results and removals, for the status reports
        self.notes: list[str] = []  # dagman.out lines, taken by the runner

    def note(self, line: str) -> None:
        self.notes.append(line)

    def take_notes(self) -> list[str]:
        notes, self.notes = self.notes, []
        return notes

    # the nodes and the ready queue ------------------------------------------------

    def begin(self, done: set[str]) -> None:
        """Every node of the DAG, those in ``done`` (or marked DONE) already done, and
        the ready queue filled with the nodes whose parents are done."""
        for order, (name, node) in enumerate(self.dag.nodes.items()):
            run = self.runs[name] = NodeRun(node, order, self.counts)
            if name in done or node.done:
                run.state = "done"
        for run in self.runs.values():
            if run.state == "waiting" and self.parents_done(run):
                self.make_ready(run)

    def parents_done(self, run: NodeRun) -> bool:
        return all(self.runs[p].state == "done" for p in run.node.parents)

    def make_ready(self, run: NodeRun) -> None:
        if run.node.final:
            return  # the FINAL node waits for everything else (see final_to_start)
        self.ready.push(run.node.name, run.node.priority)

    def start_ready(self, slots_used: Callable[[], int],
                    start: Callable[[NodeRun], None]) -> bool:
        """``start`` the ready nodes the throttles allow, in DAGMan's order; True if any
        started. ``slots_used()`` is the process slots in use (running processes and
        job procs waiting for one), asked again after every start."""
        if self.stopping():
            return False
        started = False
        full: set[str] = set()  # categories at their MAXJOBS, checked once per pass

        def offer(name: str) -> bool | None:
            nonlocal started
            run = self.runs[name]
            if run.state != "waiting":
                return True  # stale: it was removed or marked futile meanwhile
            if slots_used() >= self.max_jobs:
                return None
            if self.max_submitted and self.counts["running"] >= self.max_submitted:
                return None
            category = run.node.category
            if category:
                if category in full:
                    return False
                if self.counts.in_category(category) >= self.dag.maxjobs.get(category,
                                                                             1 << 30):
                    full.add(category)
                    return False
            if run.node.pre is not None and self.max_pre and self.counts["pre"] >= \
                    self.max_pre:
                return False
            start(run)
            started = True
            return True

        self.ready.take(offer)
        return started

    def attempt(self, run: NodeRun) -> bool:
        """A new attempt of the node begins; True if it starts with its PRE script."""
        run.attempt += 1
        run.job_failed = False
        run.job_return = 0
        run.pre_return = -1
        run.reason = ""
        if run.node.pre is not None:
            run.state = "pre"
            return True
        return False

    def pending_in_order(self) -> list[NodeRun]:
        """Nodes with job procs waiting for a slot, higher PRIORITY first, then in the
        DAG file's order."""
        return sorted(self.pending_runs, key=lambda r: (-r.node.priority, r.order))

    def final_to_start(self) -> NodeRun | None:
        """The FINAL node, once nothing else can run (after success, failure, an
        ABORT-DAG-ON or a removal: DAGMan runs it in every case), with $DAG_STATUS and
        $FAILED_COUNT set; None if there is none or it has started."""
        if self.dag.final is None or self.final_started:
            return None
        run = self.runs[self.dag.final]
        if run.state != "waiting":
            return None
        self.final_started = True
        status = self.dag_status()
        failed = self.counts["failed"]
        run.node.vars = {**run.node.vars, "DAG_STATUS": str(status),
                         "FAILED_COUNT": str(failed)}
        self.note(f"Starting final node {run.node.name} (DAG status {status}, "
                  f"{failed} failed node(s))")
        return run

    # scripts ----------------------------------------------------------------------

    def due_deferred(self, now: float) -> list[tuple[NodeRun, str]]:
        """(node, "pre"/"post") of the scripts SCRIPT DEFER put off whose time came."""
        due = [r for r in self.deferred if r.defer is not None and r.defer[0] <= now]
        out = []
        for run in due:
            self.deferred.remove(run)
            assert run.defer is not None
            out.append((run, run.defer[1]))
            run.defer = None
        return out

    def post_has_place(self, posts_running: int) -> bool:
        return not (self.max_post and posts_running >= self.max_post)

    def queue_post(self, run: NodeRun, posts_running: int) -> bool:
        """The node's POST script is due: True to start it now, False if it waits for a
        DAGMAN_MAX_POST_SCRIPTS place (start_posts starts it later)."""
        run.state = "post"
        if self.post_has_place(posts_running):
            return True
        self.post_queue.append(run)
        return False

    def start_posts(self, posts_running: Callable[[], int],
                    start: Callable[[NodeRun], None]) -> bool:
        """``start`` the queued POST scripts while there is a place; True if any."""
        started = False
        while self.post_queue and self.post_has_place(posts_running()):
            start(self.post_queue.pop(0))
            started = True
        return started

    def script_ended(self, run: NodeRun, kind: str, value: int, reason: str = "",
                     signum: int | None = None, now: float = 0.0) -> Next:
        """A PRE or POST script exited with ``value`` (or was killed by ``signum``);
        ``now`` is the monotonic time, for SCRIPT DEFER."""
        node = run.node
        script = node.pre if kind == "pre" else node.post
        if (script is not None and script.defer is not None and signum is None
                and value == script.defer[0] and not self.stopping_for(run)):
            # SCRIPT DEFER status time: not a failure; run the script again later
            seconds = script.defer[1]
            self.note(f"Deferring {kind.upper()} script of node {node.name} for "
                      f"{seconds:g} seconds (exit value {value})")
            run.defer = (now + seconds, kind)
            self.deferred.append(run)
            return Next.DEFER
        if kind == "pre":
            run.pre_return = value
            if value == 0 and signum is None and self.check_abort(run, value):
                run.reason = "PRE script exited with 0, the ABORT-DAG-ON value"
                return Next.FAIL
            if value == 0 and signum is None:
                return Next.REMOVED if self.stopping_for(run) else Next.SUBMIT
            if node.pre_skip is not None and value == node.pre_skip and signum is None:
                self.note(f"node {node.name}: PRE script exited with {value}; PRE_SKIP: "
                          "the node is done without running its job")
                return Next.DONE
            run.reason = reason or f"PRE script exited with {value}"
            self.note(f"PRE Script of node {node.name} failed with status {value}")
            self.check_abort(run, value)
            if self.always_run_post and node.post is not None and not self.stopping():
                # DAGMAN_ALWAYS_RUN_POST: the POST script runs and decides the node;
                # its $RETURN says the job was skipped (DAGMan's -1004)
                run.job_failed, run.job_return = True, RETURN_JOB_SKIPPED
                return Next.POST
            return Next.FAIL
        # POST: its exit decides the node, whatever the job did
        ok = value == 0 and signum is None
        if not ok:
            run.reason = reason or (f"POST script exited with {value}" + (
                f" (job: {run.reason})" if run.job_failed else ""))
            run.job_return = value
            self.note(f"POST Script of node {node.name} failed with status {value}")
        self.check_abort(run, value)
        return Next.DONE if ok else Next.FAIL

    # jobs and results -------------------------------------------------------------

    def jobs_ended(self, run: NodeRun) -> Next:
        """Every job of the node has ended (run.job_failed and run.job_return say how):
        its POST script runs, or the jobs decide the node."""
        node = run.node
        self.pending_runs.discard(run)
        if self.stopping_for(run):
            # stopping: no POST script starts; a node whose jobs all succeeded and that
            # has no POST script is done all the same
            if run.job_failed and not run.stopped:
                return Next.FAIL
            if node.post is None and not run.job_failed:
                return Next.DONE
            return Next.REMOVED
        if node.post is not None:
            return Next.POST
        # with no POST script, the job's value is the node's (ABORT-DAG-ON is checked here)
        self.check_abort(run, run.job_return)
        return Next.FAIL if run.job_failed else Next.DONE

    def check_abort(self, run: NodeRun, value: int) -> bool:
        """ABORT-DAG-ON: True if ``value`` aborts the DAG (the first match wins)."""
        node = run.node
        if node.abort_on is None or value != node.abort_on[0] or self.abort is not None:
            return False
        dag_return = node.abort_on[1] if node.abort_on[1] is not None else value
        self.abort = (node.name, dag_return)
        self.stop_reason = (f"removed by the local engine: node {node.name} exited with "
                            f"{value} (ABORT-DAG-ON)")
        self.note(f"node {node.name}: exit value {value} matches ABORT-DAG-ON; aborting "
                  f"the DAG with return value {dag_return}")
        return True

    def node_result(self, run: NodeRun, ok: bool) -> Next:
        """The attempt succeeded (DONE: its children may be ready) or failed: RETRY,
        RETRY_NOW (the FINAL node, never in the ready queue) or FAIL (for good; its
        descendants are futile)."""
        node = run.node
        self.changes += 1
        if ok:
            run.state = "done"
            self.note(f"node {node.name}: done (attempt {run.attempt})")
            # in the DAG file's order (DAGMan keeps children by node id): a set's order
            # would change from run to run, and with it who gets a free slot first
            for child in sorted(node.children, key=lambda c: self.runs[c].order):
                other = self.runs[child]
                if other.state == "waiting" and self.parents_done(other):
                    self.make_ready(other)
            return Next.DONE
        retries_left = run.attempt <= node.retry
        unless = (node.retry_unless_exit is not None
                  and run.job_return == node.retry_unless_exit)
        if run.state == "pre":
            unless = (node.retry_unless_exit is not None
                      and run.pre_return == node.retry_unless_exit)
        if retries_left and not unless and not self.stopping_for(run):
            self.note(f"node {node.name}: failed ({run.reason}); retry {run.attempt} of "
                      f"{node.retry}")
            run.state = "waiting"  # back through the ready list, PRE script included
            if node.final:
                return Next.RETRY_NOW
            self.make_ready(run)
            return Next.RETRY
        run.state = "failed"
        self.note(f"node {node.name}: failed ({run.reason})"
                  + ("; RETRY UNLESS-EXIT matched, no retry" if unless and retries_left
                     else ""))
        self.mark_futile(run)
        return Next.FAIL

    def mark_futile(self, run: NodeRun) -> None:
        """Descendants of a failed node can never run: DAGMan counts them as futile."""
        todo = list(run.node.children)
        while todo:
            other = self.runs[todo.pop()]
            if other.state == "waiting":
                other.state = "futile"
                other.reason = "Had an ancestor node fail"
                todo.extend(other.node.children)

    def node_removed(self, run: NodeRun, reason: str) -> None:
        run.state = "removed"
        run.reason = reason
        self.changes += 1
        self.pending_runs.discard(run)
        self.note(f"node {run.node.name}: {reason}")

    # stopping ---------------------------------------------------------------------

    def stopping(self) -> bool:
        return self.removing or self.abort is not None

    def stopping_for(self, run: NodeRun) -> bool:
        """Stopping applies to every node but the FINAL one, which runs regardless."""
        return self.stopping() and not run.node.final

    def stop(self, has_jobs: Callable[[NodeRun], bool]) -> list[tuple[NodeRun, list[ProcSpec]]]:
        """The DAG stops (removal or ABORT-DAG-ON): active nodes are marked stopped,
        deferred and queued scripts are dropped, and job procs still waiting for a slot
        are dropped (returned, for their abort events); a node left with no running
        process is removed. The FINAL node, once started, is left alone."""
        dropped = []
        for run in self.runs.values():
            if run.node.final and self.final_started:
                continue
            if run.state in ACTIVE:
                run.stopped = True
            if run in self.deferred or run in self.post_queue:
                self.deferred = [r for r in self.deferred if r is not run]
                self.post_queue = [r for r in self.post_queue if r is not run]
                self.node_removed(run, self.stop_reason)
                continue
            if run.pending:
                dropped.append((run, run.pending))
                run.procs_left -= len(run.pending)
                run.pending = []
                if not has_jobs(run):
                    self.node_removed(run, self.stop_reason)
        return dropped

    # what the DAG's status is -----------------------------------------------------

    def dag_status(self) -> int:
        """$DAG_STATUS: 4 removed, 3 aborted, 2 a node failed, else 0."""
        if self.removing:
            return 4
        if self.abort is not None:
            return 3
        final = self.dag.final
        failed = self.counts["failed"] - (1 if final and self.runs[final].state ==
                                          "failed" else 0)
        return 2 if failed else 0

    def table_counts(self) -> list[int]:
        """Done, Pre, Queued, Post, Ready, Un-Ready, Failed, Futile, from the counts."""
        c = self.counts
        ready = len(self.ready)
        return [c["done"], c["pre"], c["running"], c["post"], ready,
                max(0, c["waiting"] - ready), c["failed"] + c["removed"], c["futile"]]

    def result(self) -> DagResult:
        """The DAG's status and exit code once nothing runs any more."""
        runs = self.runs
        failed = {n: r.reason for n, r in runs.items() if r.state == "failed"}
        removed = sorted(n for n, r in runs.items() if r.state == "removed")
        succeeded = [n for n, r in runs.items() if r.state == "done"]
        final = runs[self.dag.final] if self.dag.final else None
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
        return DagResult(status, exitcode, failed, removed, succeeded,
                         sorted(n for n, r in runs.items()
                                if r.state in ("waiting", "futile")))
