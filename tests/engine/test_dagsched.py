"""DAGMan's decisions (docket.engines.dagsched.Scheduler) driven by synthetic events: no
process starts and no file is read or written. ``Sim`` plays the runner's part: a node
it is told to start takes a process slot, and the test says how each PRE script, job and
POST script ended. What each outcome must be is DAGMan's (the manual's "DAGMan
Workflows" chapter); the same DAGs run for real in test_dagman_language.py."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from docket.dag import parse_dag
from docket.engines.dagsched import (
    EXIT_FAILED,
    EXIT_REMOVED,
    RETURN_JOB_SKIPPED,
    Next,
    NodeRun,
    Scheduler,
)


class Sim:
    """The runner with no processes: what started, in which order, with slots counted."""

    def __init__(self, text: str, max_jobs: int = 10, config: dict[str, str] | None = None,
                 max_submitted: int = 0, done: frozenset[str] = frozenset()) -> None:
        dag = parse_dag(textwrap.dedent(text), Path("/nowhere/test.dag"))
        dag.config.update(config or {})
        self.sched = Scheduler(dag, max_jobs, max_submitted)
        self.sched.begin(set(done))
        self.started: list[str] = []
        self.slots = 0

    def run(self, name: str) -> NodeRun:
        return self.sched.runs[name]

    def _start(self, run: NodeRun) -> None:
        self.started.append(run.node.name)
        self.slots += 1
        if not self.sched.attempt(run):
            run.state = "running"  # the runner's submit

    def tick(self) -> list[str]:
        """Start what the scheduler allows; return the nodes started by this tick."""
        before = len(self.started)
        self.sched.start_ready(lambda: self.slots, self._start)
        return self.started[before:]

    def _carry_out(self, run: NodeRun, step: Next) -> Next:
        if step is Next.SUBMIT:
            run.state = "running"
            self.slots += 1
        elif step is Next.POST:
            assert self.sched.queue_post(run, 0)
            self.slots += 1
        elif step in (Next.DONE, Next.FAIL):
            return self.sched.node_result(run, ok=step is Next.DONE)
        elif step is Next.REMOVED:
            self.sched.node_removed(run, self.sched.stop_reason)
        return step

    def pre_ends(self, name: str, value: int, now: float = 0.0) -> Next:
        run = self.run(name)
        self.slots -= 1
        return self._carry_out(run, self.sched.script_ended(run, "pre", value, now=now))

    def job_ends(self, name: str, code: int) -> Next:
        run = self.run(name)
        self.slots -= 1
        if code:
            run.job_failed, run.job_return = True, code
        return self._carry_out(run, self.sched.jobs_ended(run))

    def post_ends(self, name: str, value: int) -> Next:
        run = self.run(name)
        self.slots -= 1
        return self._carry_out(run, self.sched.script_ended(run, "post", value))


def test_priority_then_category_maxjobs_decide_what_starts():
    sim = Sim("""
        JOB A a.sub
        JOB B a.sub
        JOB C a.sub
        JOB D a.sub
        CATEGORY A slow
        CATEGORY B slow
        CATEGORY C slow
        MAXJOBS slow 1
        PRIORITY D 5
    """)
    assert sim.tick() == ["D", "A"]  # B and C wait for A: one 'slow' node at a time
    assert sim.tick() == []
    assert sim.job_ends("A", 0) is Next.DONE
    assert sim.tick() == ["B"]
    assert sim.sched.table_counts()[:5] == [1, 0, 2, 0, 1]  # done, pre, queued, post, ready


def test_no_free_slot_stops_the_offer_and_a_throttled_node_keeps_its_place():
    sim = Sim("""
        JOB A a.sub
        JOB B a.sub
        JOB C a.sub
    """, max_jobs=2)
    assert sim.tick() == ["A", "B"]
    sim.job_ends("B", 0)
    assert sim.tick() == ["C"]


def test_max_jobs_submitted_counts_nodes_with_jobs():
    sim = Sim("JOB A a.sub\nJOB B a.sub\nJOB C a.sub\n", config={
        "DAGMAN_MAX_JOBS_SUBMITTED": "1"})
    assert sim.tick() == ["A"]
    sim.job_ends("A", 0)
    assert sim.tick() == ["B"]


def test_max_pre_scripts_holds_a_node_with_a_pre_script_but_not_one_without():
    sim = Sim("""
        JOB A a.sub
        JOB B a.sub
        JOB C a.sub
        SCRIPT PRE A pre.sh
        SCRIPT PRE B pre.sh
    """, config={"DAGMAN_MAX_PRE_SCRIPTS": "1"})
    assert sim.tick() == ["A", "C"]
    assert sim.run("A").state == "pre" and sim.run("B").state == "waiting"
    assert sim.pre_ends("A", 0) is Next.SUBMIT
    assert sim.tick() == ["B"]


def test_depth_first_runs_a_chain_before_its_siblings():
    sim = Sim("""
        JOB A a.sub
        JOB B a.sub
        JOB A2 a.sub
        PARENT A CHILD A2
    """, max_jobs=1, config={"DAGMAN_SUBMIT_DEPTH_FIRST": "True"})
    assert sim.tick() == ["B"]  # depth-first: the last node made ready goes first
    sim.job_ends("B", 0)
    assert sim.tick() == ["A"]
    sim.job_ends("A", 0)
    assert sim.tick() == ["A2"]


def test_retry_runs_again_until_unless_exit_matches_then_descendants_are_futile():
    sim = Sim("""
        JOB A a.sub
        JOB B a.sub
        JOB C a.sub
        PARENT A CHILD B
        PARENT B CHILD C
        RETRY A 3 UNLESS-EXIT 42
    """)
    sim.tick()
    assert sim.job_ends("A", 1) is Next.RETRY
    assert sim.run("A").state == "waiting"
    assert sim.tick() == ["A"] and sim.run("A").attempt == 2
    assert sim.job_ends("A", 42) is Next.FAIL  # UNLESS-EXIT: no third attempt
    assert [sim.run(n).state for n in "ABC"] == ["failed", "futile", "futile"]
    assert "RETRY UNLESS-EXIT matched, no retry" in sim.sched.notes[-1]
    result = sim.sched.result()
    assert (result.status, result.exitcode) == ("failed", EXIT_FAILED)
    assert result.not_run == ["B", "C"] and list(result.failed) == ["A"]


def test_retries_run_out():
    sim = Sim("JOB A a.sub\nRETRY A 1\n")
    sim.tick()
    assert sim.job_ends("A", 1) is Next.RETRY
    sim.tick()
    assert sim.job_ends("A", 1) is Next.FAIL
    assert sim.run("A").attempt == 2


def test_pre_skip_makes_the_node_done_without_its_job():
    sim = Sim("""
        JOB A a.sub
        JOB B a.sub
        PARENT A CHILD B
        SCRIPT PRE A pre.sh
        PRE_SKIP A 3
    """)
    sim.tick()
    assert sim.pre_ends("A", 3) is Next.DONE
    assert sim.run("A").state == "done" and sim.run("A").cluster == 0  # never submitted
    assert sim.tick() == ["B"]


def test_a_failed_pre_script_fails_the_node_and_skips_its_post():
    sim = Sim("JOB A a.sub\nSCRIPT PRE A pre.sh\nSCRIPT POST A post.sh\n")
    sim.tick()
    assert sim.pre_ends("A", 1) is Next.FAIL
    assert sim.sched.result().failed == {"A": "PRE script exited with 1"}


def test_always_run_post_runs_the_post_script_after_a_failed_pre_with_return_minus_1004():
    sim = Sim("JOB A a.sub\nSCRIPT PRE A pre.sh\nSCRIPT POST A post.sh\n",
              config={"DAGMAN_ALWAYS_RUN_POST": "True"})
    sim.tick()
    assert sim.pre_ends("A", 1) is Next.POST
    assert sim.run("A").job_return == RETURN_JOB_SKIPPED
    assert sim.post_ends("A", 0) is Next.DONE  # the POST script decides the node


def test_the_post_script_decides_the_node_whatever_the_job_did():
    sim = Sim("JOB A a.sub\nJOB B a.sub\nSCRIPT POST A post.sh\nSCRIPT POST B post.sh\n")
    sim.tick()
    assert sim.job_ends("A", 1) is Next.POST
    assert sim.post_ends("A", 0) is Next.DONE
    assert sim.job_ends("B", 0) is Next.POST
    assert sim.post_ends("B", 5) is Next.FAIL
    assert sim.run("B").job_return == 5  # $RETURN of the node is the POST's exit


def test_max_post_scripts_queues_a_post_script_until_a_place_is_free():
    sim = Sim("JOB A a.sub\nSCRIPT POST A post.sh\n", config={"DAGMAN_MAX_POST_SCRIPTS": "1"})
    sim.tick()
    run = sim.run("A")
    run.state = "running"
    assert sim.sched.queue_post(run, posts_running=1) is False
    started: list[str] = []
    assert not sim.sched.start_posts(lambda: 1, lambda r: started.append(r.node.name))
    assert sim.sched.start_posts(lambda: len(started), lambda r: started.append(r.node.name))
    assert started == ["A"]


def test_abort_dag_on_stops_new_starts_and_gives_the_return_value():
    sim = Sim("""
        JOB A a.sub
        JOB B a.sub
        JOB C a.sub
        PARENT A CHILD C
        ABORT-DAG-ON A 3 RETURN 7
    """, max_jobs=1)
    assert sim.tick() == ["A"]
    assert sim.job_ends("A", 3) is Next.FAIL
    assert sim.sched.abort == ("A", 7) and sim.sched.dag_status() == 3
    assert sim.tick() == []  # B never starts
    result = sim.sched.result()
    assert (result.status, result.exitcode) == ("aborted", 7)


def test_abort_dag_on_zero_in_a_pre_script_fails_the_node():
    sim = Sim("JOB A a.sub\nSCRIPT PRE A pre.sh\nABORT-DAG-ON A 0\n")
    sim.tick()
    assert sim.pre_ends("A", 0) is Next.FAIL
    assert sim.sched.result().exitcode == 0  # RETURN defaults to the exit value


def test_removal_drops_waiting_procs_removes_nodes_and_exits_2():
    sim = Sim("JOB A a.sub\nJOB B a.sub\nJOB C a.sub\n", max_jobs=2)
    sim.tick()
    a, b = sim.run("A"), sim.run("B")
    b.pending, b.procs_left = ["proc 0", "proc 1"], 2  # type: ignore[list-item]
    sim.sched.removing = True
    sim.sched.stop_reason = "removed"
    dropped = sim.sched.stop(has_jobs=lambda run: run is a)
    assert dropped == [(b, ["proc 0", "proc 1"])] and b.state == "removed"
    assert a.stopped and a.state == "running"
    a.job_failed = True
    assert sim.sched.jobs_ended(a) is Next.REMOVED  # a stopped job is a removal
    result = sim.sched.result()
    assert (result.status, result.exitcode) == ("removed", EXIT_REMOVED)
    assert sim.sched.dag_status() == 4


def test_done_nodes_are_done_from_the_start():
    sim = Sim("JOB A a.sub DONE\nJOB B a.sub\nJOB C a.sub\nPARENT A CHILD B\n"
              "PARENT B CHILD C\n", done=frozenset({"B"}))
    assert sim.tick() == ["C"]


@pytest.mark.parametrize(("ok", "status", "exitcode"), [(True, "complete", 0),
                                                        (False, "failed", EXIT_FAILED)])
def test_the_final_node_runs_last_with_dag_status_and_decides_the_exit(ok, status, exitcode):
    sim = Sim("JOB A a.sub\nJOB B a.sub\nFINAL F f.sub\n")
    assert sim.tick() == ["A", "B"]  # never F, which waits for everything
    sim.job_ends("A", 1)
    sim.job_ends("B", 0)
    final = sim.sched.final_to_start()
    assert final is sim.run("F")
    assert final.node.vars["DAG_STATUS"] == "2" and final.node.vars["FAILED_COUNT"] == "1"
    assert sim.sched.final_to_start() is None  # once only
    sim._start(final)
    sim.job_ends("F", 0 if ok else 1)
    result = sim.sched.result()
    assert (result.status, result.exitcode) == (status, exitcode)


def test_script_defer_puts_the_script_off_until_its_time():
    sim = Sim("JOB A a.sub\nSCRIPT DEFER 4 30 PRE A pre.sh\n")
    sim.tick()
    assert sim.pre_ends("A", 4, now=100.0) is Next.DEFER
    assert sim.sched.due_deferred(129.0) == []
    assert sim.sched.due_deferred(130.0) == [(sim.run("A"), "pre")]
    assert sim.pre_ends("A", 0) is Next.SUBMIT
