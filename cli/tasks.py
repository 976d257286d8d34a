"""How ``docket show`` prints a task workflow: directives, then taskforces, as EWMS relays."""

from __future__ import annotations

from typing import Any

from cli.common import table

__all__ = ["task_lines"]


def task_lines(workflow: dict[str, Any]) -> list[str]:
    out = ["  task directives:"]
    for d in workflow["directives"]:
        image = d["task_image"] or "(no image: on the worker's host)"
        out.append(f"    {d['task_id']} (tasks[{d['index']}]): {image}: {d['task_args']}")
        out.append(f"      in: {', '.join(d['input_queue_aliases']) or '-'}; "
                   f"out: {', '.join(d['output_queue_aliases']) or '-'}")
    rows = [(t["taskforce"], t["task_id"], t["location"], t["workers"]["requested"],
             t["workers"]["running"], t["workers"]["done"], t["workers"]["failed"],
             t["events_in"], t["events_out"], t["failures"], t["lost"])
            for t in workflow["taskforces"]]
    text = table(rows, ["TASKFORCE", "TASK", "LOCATION", "WORKERS", "RUNNING", "DONE",
                        "FAILED", "EVENTS IN", "EVENTS OUT", "FAILURES", "LOST"])
    out.extend("  " + line for line in text.splitlines())
    for t in workflow["taskforces"]:
        for error, count in sorted(t["top_task_errors"].items(), key=lambda x: -x[1])[:3]:
            out.append(f"  {t['taskforce']}: {count} × {error}")
        for reason in t.get("worker_errors", []):
            out.append(f"  {t['taskforce']}: worker failed: {reason}")
    if workflow["queues"]:
        queues = table([(q, v["total"], v["waiting"], v["leased"], v["done"], v["failed"])
                        for q, v in sorted(workflow["queues"].items())],
                       ["QUEUE", "EVENTS", "WAITING", "LEASED", "DONE", "FAILED"])
        out.extend("  " + line for line in queues.splitlines())
    return out
