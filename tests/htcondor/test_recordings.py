"""Every recorded run of a real HTCondor 25.13.2 pool (data/pool/), followed by docket's
watcher as it happened: the request is dropped into a home whose site is that pool, the
watcher renders and submits it through the real HTCondor engine, and the recorded pool
lays down what DAGMan and the node jobs wrote (see recorded.py). What a DA then sees with
``docket show`` and ``docket inspect`` is checked, and for the runs the local engine can
reproduce (demo, demo failing), compared with the same request run on the local engine."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from docket.engines.htcondor import HTCondorEngine
from docket.home import resolve_home
from docket.watcher import Watcher
from tests.conftest import CURRENT_USER, run_docket
from tests.htcondor.condorkit import DATA, TEMPLATES, outside_tmp, stub_dagman
from tests.htcondor.recorded import POOL, RECORDINGS, RecordedSchedd

NAMES = {"a-demo-example": "demo-example", "c-null-kill-signal9": "null-kill",
         "c2-null-kill-signal9-policy-retry": "null-kill",
         "d-null-hold-user-hold": "null-hold",
         "d2-memhog-memory-hold-policy-retry": "memhog-1", "i-demo-fail": "demo-fail"}


def _home(root: Path, site: str | None, shared: bool = True) -> Path:
    shutil.copytree(TEMPLATES, root / "templates")
    for extra in ("memhog", "killed"):
        shutil.copytree(DATA / "capabilities" / extra, root / "templates" / extra)
    (root / "spool" / "incoming").mkdir(parents=True)
    (root / "analysts.yaml").write_text(
        f"analysts:\n  {CURRENT_USER}:\n    roles: [da, aod, operator]\n")
    if site:
        (root / "sites.yaml").write_text(
            f"default: [{site}]\nsites:\n  - name: {site}\n    schedd: local\n"
            + ("" if shared else "    shared_filesystem: false\n"))
    return root


class Played:
    """A home following one recorded run: its watcher, the recorded pool, the request."""

    def __init__(self, root: Path, recording: str, shared: bool = True) -> None:
        self.root = _home(root, "pool", shared)
        self.name = NAMES[recording]
        self.recording = POOL / recording
        shutil.copy(self.recording / "request.yaml",
                    root / "spool" / "incoming" / "request.yaml")
        self.watcher = Watcher(resolve_home(root))
        self.watcher.load_sites()
        site = next(s for s in self.watcher.rules.sites.sites if s.name == "pool")
        self.pool = RecordedSchedd(recording)
        self.watcher.engines.install("pool", HTCondorEngine(
            site, dagman_path=str(stub_dagman(root)), schedd=self.pool))

    @property
    def directory(self) -> Path:
        return self.root / "work" / self.name / "v1" / "e1"

    def passes(self, count: int = 6) -> None:
        for _ in range(count):
            self.watcher.step()

    def show(self) -> str:
        result = run_docket("show", self.name, "--home", str(self.root), "--events", "0")
        assert result.code == 0, result.err
        return result.out

    def inspect(self, *args: str) -> str:
        result = run_docket("inspect", self.name, "--home", str(self.root), *args)
        assert result.code == 0, result.err
        return result.out

    def events(self, kind: str) -> list[dict]:
        return [json.loads(r["data"]) for r in self.watcher.store.all(
            "SELECT data FROM events WHERE type=? ORDER BY id", kind)]


@pytest.fixture
def played() -> Iterator:
    with contextlib.ExitStack() as stack:

        def play(recording: str, shared: bool = True) -> Played:
            root = stack.enter_context(outside_tmp())  # DAGMan refuses node logs in /tmp
            run = Played(root, recording, shared)
            stack.callback(run.watcher.close)
            return run

        yield play


def node_table(show: str) -> list[str]:
    """The stage lines and the node table of ``docket show``, as a DA reads them."""
    lines = show.splitlines()
    kept = [line for line in lines if line.startswith("  stage ")]
    at = next(i for i, line in enumerate(lines) if line.startswith("  NODE "))
    for line in lines[at:]:
        if not line.strip():
            break
        kept.append(line.rstrip())
    return kept


def local_run(root: Path, recording: str) -> str:
    """The same request run on the local engine; its ``docket show``."""
    _home(root, None)
    shutil.copy(POOL / recording / "request.yaml",
                root / "spool" / "incoming" / "request.yaml")
    assert run_docket("tick", "--wait", "--home", str(root)).code in (0, 1)
    return run_docket("show", NAMES[recording], "--home", str(root), "--events", "0").out


def test_the_recordings_are_all_here():
    assert sorted(NAMES) == RECORDINGS
    assert (POOL / "README.md").is_file()


def test_the_recorded_dags_are_what_docket_renders_today(played):
    for recording in ("a-demo-example", "i-demo-fail"):
        run = played(recording)
        run.passes(1)
        assert run.directory.joinpath("workflow.dag").read_text() == (
            run.recording / "workflow.dag").read_text()


def test_demo_on_the_pool_shows_what_the_local_engine_shows(played, tmp_path, capfd):
    run = played("a-demo-example")
    run.passes()
    assert run.pool.finished
    assert [c[:2] for c in run.pool.calls] == [("submit", '"demo-example v1 e1"')]
    show = run.show()
    assert "demo-example: demo request, version 1, complete" in show
    assert node_table(show) == node_table(local_run(tmp_path / "local", "a-demo-example"))
    assert node_table(show) == [
        "  stage fetch (gathering data): done (1/1 nodes)",
        "  stage process (processing each item): done (3/3 nodes)",
        "  stage deliver (delivering the summary): done (1/1 nodes)",
        "  NODE       STATE  ATTEMPTS  EXIT  SIGNAL  REASON",
        "  deliver    done   1         0", "  fetch      done   1         0",
        "  process_0  done   1         0", "  process_1  done   1         0",
        "  process_2  done   1         0"]
    out = run.inspect()
    assert "(htcondor, condor:local:233, engine done)" in out
    assert "\nDAGMan job: terminated, exit code 0\n" in out
    assert "  condor_history 233    # the DAGMan job, from the schedd's history" in out
    assert "condor_q" not in out  # the DAG has ended: the queue shows nothing
    assert "names no DAG node" not in capfd.readouterr().err


def test_a_failing_demo_on_the_pool_fails_as_on_the_local_engine(played, tmp_path):
    run = played("i-demo-fail")
    run.passes()
    show = run.show()
    assert "demo-fail: demo request, version 1, failed" in show
    assert "  attempt 1 failed: node process_1 → fail (rule #4 exit_code 1,2 -> fail)" in show
    assert node_table(show) == node_table(local_run(tmp_path / "local", "i-demo-fail"))
    assert "  process_1  failed  1         1" in node_table(show)
    out = run.inspect("--lines", "2")
    assert ("node process_1: exited with 1\n  failure policy (decided): fail (rule #4 "
            "exit_code 1,2 -> fail)\n") in out
    assert "    | processed item m33" in out
    assert "  condor_history -l 552    # node process_1's job as it ended" in out
    decided = run.events("policy.decided")
    assert [(d["node"], d["action"], d["rule_index"]) for d in decided] == [
        ("process_1", "fail", 4)]


def test_a_node_killed_by_signal_9_is_retried_by_the_policy(played, caplog, tmp_path):
    run = played("c-null-kill-signal9")
    with caplog.at_level(logging.WARNING, logger="docket.launch"):
        run.passes(3)
    show = run.show()
    assert "  run   failed  1               9" in node_table(show)
    assert ("  attempt 1 failed: node run → retry (rule #3 signal 9 -> retry (limit 1): "
            "retry 1 of 1)") in show
    retrying = run.events("execution.retrying")
    assert [r["attempt"] for r in retrying] == [2]
    # the recording ends there (the policy did not run on that pool): the second DAGMan
    # submission is refused, and the watcher goes on and asks again on the next pass
    assert "could not start attempt 2" in caplog.text
    assert "recorded no further DAGMan run" in caplog.text
    assert run.watcher.store.one("SELECT engine_state FROM executions")[0] == "running"
    out = run.inspect()
    assert ("node run: killed by signal 9\n  failure policy (decided): retry (rule #3 "
            "signal 9 -> retry (limit 1): retry 1 of 1)") in out
    # the local engine, a job killed by SIGKILL: the same verdict on the first attempt
    local = tmp_path / "local"
    _home(local, None)
    (local / "spool" / "incoming" / "k.yaml").write_text(
        "apiVersion: docket/v1\nkind: CapabilityRequest\nmetadata: {name: null-kill}\n"
        "spec: {capability: killed, parameters: {sleep_s: 0}}\n")
    run_docket("tick", "--wait", "--home", str(local))
    shown = run_docket("show", "null-kill", "--home", str(local)).out
    first = [line for line in show.splitlines() if "attempt 1 failed" in line]
    assert first and first == [line for line in shown.splitlines()
                               if "attempt 1 failed" in line]
    assert "  run   failed  2               9" in node_table(shown)  # retried once, here too


def test_a_signal_9_retry_runs_the_rescue_dag_to_the_end(played, capfd, caplog):
    run = played("c2-null-kill-signal9-policy-retry")
    with caplog.at_level(logging.INFO, logger="docket.engines.htcondor"):
        run.passes()
    assert run.pool.finished
    show = run.show()
    assert "null-kill: null request, version 1, complete" in show
    assert node_table(show)[-1] == "  run   done   2         0"
    assert [c[0] for c in run.pool.calls] == ["submit", "submit"]
    # the first attempt's files are kept beside, as the recording has them
    for name in ("workflow.dag.metrics.attempt1", "workflow.dag.nodes.log.attempt1"):
        assert (run.directory / name).read_text() == (run.recording / name).read_text()
    # the bindings' "Running rescue DAG 1" goes to the log, not the watcher's output
    assert "Running rescue DAG 1" not in capfd.readouterr().out
    assert "Running rescue DAG 1" in caplog.text
    out = run.inspect()
    assert "(htcondor, condor:local:602, engine done)" in out  # the DAGMan run that ended
    assert "condor_history 602" in out


def test_a_memory_hold_is_removed_and_retried_with_more_memory(played):
    run = played("d2-memhog-memory-hold-policy-retry")
    run.passes(1)
    # held with code 3/34 (periodic_hold: this pool has no cgroups): recorded, and the
    # held job removed through the engine so that DAGMan moves on
    row = run.watcher.store.one("SELECT * FROM nodes WHERE node='run'")
    assert (row["hold_code"], row["hold_subcode"]) == (3, 34)
    reason = "docket: node run was held (code 3/34); its failure policy decides what next"
    assert ("Remove", "619", reason) in run.pool.calls
    assert f"`{reason}`" in (Path(__file__).parents[2] / "docs" / "htcondor.md").read_text()
    run.passes()
    assert run.pool.finished
    show = run.show()
    assert "memhog-1: memhog request, version 1, complete" in show
    assert ("  attempt 1 failed: node run → retry-with-more-memory (rule #1 hold_code 3 and "
            "hold_subcode 34 -> retry-with-more-memory (limit 2, x4 up to 4096 MB): retry 1 "
            "of 2, request_memory 64 MB -> 256 MB)") in show
    assert node_table(show)[-1] == "  run   done   2         0"
    # what docket wrote for the second attempt is what the pool ran
    for name in ("hog.run.adjusted.sub", "adjustments.json"):
        assert (run.directory / name).read_text().strip() == (
            run.recording / name).read_text().strip(), name
    assert (run.directory / "workflow.dag").read_text().splitlines()[:2] == (
        run.recording / "workflow.dag").read_text().splitlines()[:2]
    out = run.inspect()
    assert "  run: request_memory 256 MB (hog.run.adjusted.sub)" in out
    assert "(htcondor, condor:local:620, engine done)" in out


def test_a_user_hold_is_recorded_its_job_removed_and_the_policy_fails_it(played):
    run = played("d-null-hold-user-hold")
    run.passes(2)
    row = run.watcher.store.one("SELECT * FROM nodes WHERE node='run'")
    assert (row["state"], row["hold_code"], row["hold_subcode"]) == ("held", 1, 0)
    removals = [c for c in run.pool.calls if c[0] == "Remove"]
    assert removals == [("Remove", "364", "docket: node run was held (code 1/0); its "
                         "failure policy decides what next")]  # once, not every pass
    out = run.inspect()
    assert "run   held   htcondor  pool  vm    1               1/0 via condor_hold" in out
    assert ("node run: held (code 1/0): via condor_hold (by user da)\n  failure policy: "
            "fail (rule #6 hold_code 1 -> fail)") in out
    assert "  condor_q -better-analyze 364    # why node run is held" in out
    # on that pool the user then cancelled the request: DAGMan removed, as recorded
    assert run_docket("cancel", run.name, "--home", str(run.root)).code == 0
    run.passes(2)
    assert ("Remove", "362", "cancelled by docket") in run.pool.calls
    assert run.pool.finished
    show = run.show()
    assert "null-hold: null request, version 1, cancelled" in show
    out = run.inspect()
    assert "node run: held, then removed (code 1/0): via condor_hold (by user da)" in out
    assert "condor_history 362" in out


def test_an_event_no_node_claims_is_warned_about_once(played, caplog):
    run = played("d-null-hold-user-hold")
    run.passes(1)
    log = run.directory / "workflow.dag.nodes.log"
    with open(log, "a") as fh:  # a job that is none of this DAG's nodes
        fh.write("001 (999.000.000) 2026-12-01 22:50:00 Job executing on host: "
                 "<127.0.0.1:9618?addrs=127.0.0.1-9618&alias=vm>\n...\n")
    before = run.watcher.store.cursor_position(1)
    with caplog.at_level(logging.WARNING, logger="docket.engines.nodelog"):
        run.passes(4)
    assert caplog.text.count("names no DAG node") == 1
    assert "EXECUTE event of job 999.0 names no DAG node" in caplog.text
    assert run.watcher.store.cursor_position(1) != before  # moved past it, and saved


def test_a_pool_without_a_shared_filesystem_runs_the_pex_files(played):
    from docket.render import DEFAULT_PEX_DIR
    from docket.submit import expand_submit

    run = played("a-demo-example", shared=False)
    run.passes()
    assert "demo-example: demo request, version 1, complete" in run.show()
    for sub in ("fetch.sub", "process.sub", "deliver.sub"):
        (proc,) = expand_submit(run.directory / sub, "process_0", {"message": "m",
                                                                    "code": "0"}, 1)
        assert proc.executable == str(DEFAULT_PEX_DIR / "null.pex"), sub


def test_docket_pause_and_resume_on_the_pool_use_dagmans_halt_file(played):
    run = played("d-null-hold-user-hold")
    run.passes(1)
    halt = run.directory / "workflow.dag.halt"
    paused = run_docket("pause", run.name, "--home", str(run.root), "--json")
    assert paused.code == 0, paused.err
    assert halt.read_text() == "paused by a user\n"
    assert ("\nDAGMan job: running, paused: no new node job starts until 'docket resume' "
            "(halt file)\n") in run.inspect()
    assert run_docket("resume", run.name, "--home", str(run.root)).code == 0
    assert not halt.exists()
    assert "\nDAGMan job: running\n" in run.inspect()
    # neither holds nor releases the DAGMan job: no cool-down on resume
    assert [c for c in run.pool.calls if c[0] in ("Hold", "Release")] == []


def test_a_removal_the_schedd_refused_is_asked_again_later(played, caplog):
    run = played("d-null-hold-user-hold")
    refusals = []
    real_act = run.pool.act

    def act(action, spec, reason=None):  # noqa: ANN001, ANN202
        if not refusals:
            refusals.append(spec)
            raise RuntimeError("Failed to connect to schedd")
        return real_act(action, spec, reason)

    run.pool.act = act
    with caplog.at_level(logging.WARNING, logger="docket.launch"):
        run.passes(4)
    assert refusals == ["364"]
    assert caplog.text.count("could not remove held job 364 of node run (asked again in "
                             "30 s)") == 1  # not on every pass
    assert [c for c in run.pool.calls if c[0] == "Remove"] == []
    launcher = run.watcher.launcher
    launcher._removal_retry_at = dict.fromkeys(launcher._removal_retry_at, 0.0)  # 30 s on
    run.passes(1)
    assert [c[:2] for c in run.pool.calls if c[0] == "Remove"] == [("Remove", "364")]


def test_pool_tests_find_and_remove_every_dagman_job_they_submitted():
    from tests.htcondor.condorkit import dagman_clusters, remove_jobs

    assert dagman_clusters(POOL / "d2-memhog-memory-hold-policy-retry") == {618, 620}
    schedd = RecordedSchedd("a-demo-example")
    remove_jobs(schedd, {618, 620})
    assert schedd.calls[0] == ("Remove", "ClusterId == 618 || DAGManJobId == 618 || "
                               "ClusterId == 620 || DAGManJobId == 620",
                               "docket test clean-up")
    assert schedd.calls[1][0] == "query"  # and waits until the queue has none of them
