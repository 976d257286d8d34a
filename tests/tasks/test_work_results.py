"""`docket results` answers for CHIME-style works: every filter, `--json`, the table."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from tests.conftest import CURRENT_USER, drop
from tests.tasks.test_work import run_here, work_doc


def _at(iso: str) -> float:
    return datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp()


def _deposit_the_night(home: Path, docket, tmp_path: Path) -> None:  # noqa: ANN001
    """Five works: three of sample-pipeline (two then run), two of others, known creation."""
    out = tmp_path / "out"
    base = {"site": "local", "user": CURRENT_USER}
    (tmp_path / "night.json").write_text(json.dumps([
        {**base, "pipeline": "sample-pipeline", "parameters": {"a": 1, "b": 3, "out": f"{out}/a"},
         "tags": ["nightly"], "group": "epoch-1", "event": [9385707], "priority": 5,
         "creation": _at("2026-01-10T03:00")},
        {**base, "pipeline": "sample-pipeline", "parameters": {"a": 2, "b": 4, "out": f"{out}/b"},
         "tags": ["nightly", "rerun"], "group": "epoch-2", "event": [9385708, 9385709],
         "priority": 4, "creation": _at("2026-02-10T03:00")},
        {**base, "pipeline": "sample-pipeline", "parameters": {"x": 0}, "priority": 1,
         "tags": ["weekly"], "group": "epoch-2", "creation": _at("2026-03-10T03:00")}]))
    assert docket("work", "deposit", str(tmp_path / "night.json")).code == 0
    # one through the spool, of another pipeline, site and user
    drop(home, "chime.yaml", work_doc("chime", pipeline="frb_search", site="chime",
                                      user="shinybrar", tags=["nightly"], event=[9385707],
                                      creation=_at("2026-03-20T03:00")))
    assert docket("tick", "--json").json()["applied"] == 1
    # the two higher-priority sample-pipeline works run; the priority-1 one stays queued
    ran = run_here(home, "sample-pipeline", "workfuncs.mean", "--lives", "2", "--sleep-s",
                   "0.1")
    assert ran.returncode == 0, ran.stderr


def _found(docket, *args: str) -> list[dict]:  # noqa: ANN001
    result = docket("results", "--json", *args)
    assert result.code == 0, result.err
    return result.json()["works"]


def _means(works: list[dict]) -> list[float | None]:
    return [(w["results"] or {}).get("mean") for w in works]


def test_results_finds_works_by_every_filter(home: Path, docket,  # noqa: ANN001
                                             tmp_path: Path) -> None:
    _deposit_the_night(home, docket, tmp_path)
    everything = _found(docket, "--works")
    assert [w["pipeline"] for w in everything] == [  # newest first
        "frb-search", "sample-pipeline", "sample-pipeline", "sample-pipeline"]
    done = _found(docket, "--pipeline", "sample-pipeline", "--status", "success")
    assert sorted(_means(done)) == [2.0, 3.0]
    assert all(w["products"] and w["docket"]["checksums"] for w in done)
    # the pipeline as CHIME users spell it in Python finds the hyphen-case one
    assert [w["user"] for w in _found(docket, "--pipeline", "frb_search")] == ["shinybrar"]
    assert [w["status"] for w in _found(docket, "--works", "--status", "queued")] == [
        "queued", "queued"]
    assert len(_found(docket, "--works", "--tag", "nightly")) == 3
    assert _means(_found(docket, "--works", "--tag", "rerun")) == [3.0]
    assert _means(_found(docket, "--works", "--group", "epoch-1")) == [2.0]
    assert [w["event"] for w in _found(docket, "--works", "--event", "9385709")] == [
        [9385708, 9385709]]
    assert {w["pipeline"] for w in _found(docket, "--works", "--event", "9385707")} == {
        "sample-pipeline", "frb-search"}
    assert [w["site"] for w in _found(docket, "--works", "--site", "chime")] == ["chime"]
    assert len(_found(docket, "--works", "--user", CURRENT_USER)) == 3
    february = _found(docket, "--works", "--since", "2026-02-01", "--until", "2026-03-01")
    assert _means(february) == [3.0]
    assert len(_found(docket, "--works", "--since", "2026-03-10T03:00Z")) == 2
    assert len(_found(docket, "--works", "--until", "2026-03-10T03:00Z")) == 2
    combined = _found(docket, "--pipeline", "sample-pipeline", "--group", "epoch-2",
                      "--status", "queued")
    assert [w["parameters"] for w in combined] == [{"x": 0}]
    assert _found(docket, "--works", "--site", "nowhere") == []
    assert len(_found(docket, "--works", "--limit", "1")) == 1


def test_results_table_of_works_and_executions_unchanged(home: Path, docket,  # noqa: ANN001
                                                         tmp_path: Path) -> None:
    _deposit_the_night(home, docket, tmp_path)
    human = docket("results", "--pipeline", "sample-pipeline", "--status", "success")
    assert human.code == 0, human.err
    lines = human.out.splitlines()
    assert "PIPELINE" in lines[0] and "GROUP" in lines[0] and len(lines) == 3
    assert all("sample-pipeline" in line and "success" in line for line in lines[1:])
    # without --works or --pipeline it is still executions (there are none here)
    assert docket("results", "--json").json()["executions"] == []


def test_results_refuses_filters_that_do_not_apply(home: Path, docket,  # noqa: ANN001
                                                   tmp_path: Path) -> None:
    _deposit_the_night(home, docket, tmp_path)
    alone = docket("results", "--group", "epoch-1", "--user", CURRENT_USER)
    assert alone.code != 0
    assert "--group, --user filter works, not executions" in alone.err
    assert "--works" in alone.err
    both = docket("results", "--works", "--capability", "null")
    assert both.code != 0 and "--capability selects executions" in both.err
    state = docket("results", "--works", "--status", "complete")
    assert state.code != 0 and "queued, running, success, failure" in state.err
    when = docket("results", "--works", "--since", "last tuesday")
    assert when.code != 0 and "'last tuesday' is not a date/time" in when.err
    # nothing was changed by the refusals
    assert len(_found(docket, "--works")) == 4
