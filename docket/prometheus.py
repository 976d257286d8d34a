"""``docket metrics --prometheus FILE``: the metrics in node_exporter's textfile format.

node_exporter's textfile collector reads ``*.prom`` files from a directory; cron runs
``docket metrics --prometheus /var/lib/node_exporter/docket.prom`` every minute.
``prometheus_client`` writes the file (through a temporary name and a rename, so the
collector never reads half of it). It is an optional extra: ``docket[prometheus]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from docket.errors import UsageError
from docket.store import Store

__all__ = ["write_textfile", "write_prometheus"]


def write_textfile(store: Store, metrics: dict[str, Any], queues: list[Any],
                   path: Path) -> int:
    """Write ``path``; returns the number of samples written."""
    try:
        from prometheus_client import CollectorRegistry, Gauge, write_to_textfile
    except ImportError:
        raise UsageError("--prometheus needs prometheus_client, an optional extra",
                         "pip install 'docket[prometheus]'") from None
    registry = CollectorRegistry()
    samples = 0

    def gauge(name: str, text: str, labels: list[str]) -> Any:
        return Gauge(name, text, labels, registry=registry)

    executions = gauge("docket_executions", "Executions by capability and state.",
                       ["capability", "state"])
    for capability, states in metrics["counts"].items():
        for state, n in states.items():
            executions.labels(capability, state).set(n)
            samples += 1
    requests = gauge("docket_requests", "Requests by state.", ["state"])
    for state, n in store.request_counts().items():
        requests.labels(state).set(n)
        samples += 1
    wait = gauge("docket_queue_wait_seconds", "Time from creation to start (quantiles).",
                 ["capability", "quantile"])
    run = gauge("docket_run_seconds", "Time from start to stop (quantiles).",
                ["capability", "quantile"])
    for capability, timing in metrics["timing"].items():
        for key, quantile in (("p50", "0.5"), ("p95", "0.95")):
            for metric, field in ((wait, "queue_wait_s"), (run, "run_time_s")):
                value = timing[field][key]
                if value is not None:
                    metric.labels(capability, quantile).set(value)
                    samples += 1
    waiting = gauge("docket_queue_waiting", "Executions waiting to start.", ["capability"])
    running = gauge("docket_queue_running", "Executions starting or running.", ["capability"])
    paused = gauge("docket_queue_paused", "1 when the queue is paused or disabled.",
                   ["capability"])
    limit = gauge("docket_queue_max_jobs", "The queue's limit of running executions.",
                  ["capability"])
    for q in queues:
        waiting.labels(q.capability).set(q.waiting)
        running.labels(q.capability).set(q.running)
        paused.labels(q.capability).set(int(q.paused or not q.enabled))
        limit.labels(q.capability).set(q.max_jobs)
        samples += 4
    failures = gauge("docket_failures", "Failed executions by cause.", ["cause"])
    for cause, n in metrics["failures_by_cause"].items():
        failures.labels(cause).set(n)
        samples += 1
    notifications = gauge("docket_notifications", "Notifications by outbox state "
                          "(pending, sent, dead).", ["state"])
    for state, n in store.notification_counts().items():
        notifications.labels(state).set(n)
        samples += 1
    last = gauge("docket_last_event_timestamp_seconds", "When the last event was recorded.",
                 [])
    last_s = store.last_event_time_s()
    if last_s is not None:
        last.set(last_s)
        samples += 1
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)
    return samples


def write_prometheus(home: Any, store: Store, metrics: dict[str, Any], path: Path) -> int:
    """``write_textfile`` with the home's queues (for the CLI)."""
    from docket.capabilities import CapabilityCache
    from docket.rules import Rules

    queues = Rules(store, CapabilityCache(home.templates), home.work).queues()
    return write_textfile(store, metrics, queues, path)
