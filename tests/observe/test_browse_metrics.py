"""'docket browse' (datasette on loopback) and 'docket metrics --prometheus'."""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import BIN, drop, request_doc
from tests.observe.receivers import wait_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, object]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _ready(url: str) -> bool:
    try:
        return _get(url)[0] == 200
    except OSError:
        return False


@pytest.fixture
def worked(home, docket):
    docket("tick")
    docket("queue", "pause", "null")
    drop(home, "ok.yaml", request_doc("ok"))
    drop(home, "bad.yaml", request_doc("bad", exit_code=3))
    docket("tick")  # both wait in the paused queue
    return home


@pytest.mark.parametrize("snapshot", [False, True], ids=["live", "snapshot"])
def test_browse_serves_canned_queries_read_only(worked, docket, snapshot):
    pytest.importorskip("datasette", reason="needs the browse extra: pip install "
                                            "'docket[browse]'")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([str(BIN / "docket"), "browse", "--port", str(port),
                               "--home", str(worked), *(["--snapshot"] if snapshot else [])],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: server.poll() is None and _ready(f"{base}/-/versions.json"), 120,
                 "datasette to answer")
        status, rows = _get(f"{base}/docket/waiting_by_queue.json?_shape=array")
        assert status == 200
        assert rows == [{"queue": "null", "waiting": 2, "oldest_since": rows[0]["oldest_since"],
                         "top_priority": 0}]
        if not snapshot:  # the live database: a change is seen without a restart
            docket("queue", "resume", "null")
            docket("tick", "--wait")
            rows = _get(f"{base}/docket/failures_by_cause.json?_shape=array")[1]
            assert [(r["capability"], r["failures"]) for r in rows] == [("null", 1)]
            days = _get(f"{base}/docket/runs_per_day.json?_shape=array")[1]
            assert [(d["runs"], d["complete"], d["failed"]) for d in days] == [(2, 1, 1)]
        meta = _get(f"{base}/-/metadata.json")[1]
        tables = meta["databases"]["docket"]["tables"]
        assert "outbox" in tables["notifications"]["description"]
        # read-only: datasette refuses anything but a SELECT, and the data is unchanged
        status, _ = _get(f"{base}/docket.json?sql=DELETE+FROM+events")
        assert status == 400
        count = _get(f"{base}/docket.json?sql=SELECT+count(*)+AS+n+FROM+requests"
                     "&_shape=array")[1]
        assert count == [{"n": 2}]
    finally:
        server.terminate()
        server.wait(timeout=60)


def test_metrics_writes_the_textfile_collector_format(worked, docket, tmp_path):
    pytest.importorskip("prometheus_client", reason="needs docket[prometheus]")
    from prometheus_client.parser import text_string_to_metric_families

    docket("queue", "resume", "null")
    docket("tick", "--wait")
    target = tmp_path / "textfile" / "docket.prom"
    result = docket("metrics", "--prometheus", str(target))
    assert result.code == 0, result.err
    families = {f.name: f for f in text_string_to_metric_families(target.read_text())}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in families.values() for s in f.samples}
    assert samples[("docket_executions", (("capability", "null"), ("state", "complete")))] == 1
    assert samples[("docket_executions", (("capability", "null"), ("state", "failed")))] == 1
    assert samples[("docket_requests", (("state", "failed"),))] == 1
    assert samples[("docket_queue_paused", (("capability", "null"),))] == 0
    assert samples[("docket_queue_max_jobs", (("capability", "null"),))] == 4
    assert ("docket_run_seconds", (("capability", "null"), ("quantile", "0.5"))) in samples
    assert any(name == "docket_failures" for name, _ in samples)
    assert families["docket_executions"].type == "gauge"
    # nothing else is left beside it for the collector to read half-written
    assert [p.name for p in Path(target.parent).iterdir()] == ["docket.prom"]
