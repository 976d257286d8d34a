"""Write job events in HTCondor's user-log format, so one reader serves both engines.

The local engine writes its node events with these functions; ``htcondor2.JobEventLog``
reads them back exactly as it reads a pool's node log (tests check the round trip).
Formats follow the HTCondor manual's "Job Event Log Codes"; each event is named by its
``htcondor2.JobEventType`` (``SUBMIT``, ``EXECUTE``, ``JOB_TERMINATED``, ...), whose value
is the three-digit code at the start of the event.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

__all__ = ["EventLogWriter", "event_types", "node_log"]


def node_log(dag: Path) -> Path:
    """Where the node job events of ``dag`` are (DAGMan's default node log)."""
    return dag.with_name(f"{dag.name}.nodes.log")


def event_types():  # noqa: ANN201 - the htcondor2.JobEventType enum
    """``htcondor2.JobEventType``, imported on first use (the bindings cost ~50 ms to
    import, which a CLI that writes no event should not pay)."""
    os.environ.setdefault("CONDOR_CONFIG", "/dev/null")
    import htcondor2

    return htcondor2.JobEventType

_USAGE = ("\t\tUsr 0 00:00:00, Sys 0 00:00:00  -  Run Remote Usage\n"
          "\t\tUsr 0 00:00:00, Sys 0 00:00:00  -  Run Local Usage\n"
          "\t\tUsr 0 00:00:00, Sys 0 00:00:00  -  Total Remote Usage\n"
          "\t\tUsr 0 00:00:00, Sys 0 00:00:00  -  Total Local Usage\n"
          "\t0  -  Run Bytes Sent By Job\n\t0  -  Run Bytes Received By Job\n"
          "\t0  -  Total Bytes Sent By Job\n\t0  -  Total Bytes Received By Job\n")


def _one_line(text: str) -> str:
    return " ".join(text.split())


class EventLogWriter:
    """Appends events to one log file; each event is written with a single write()."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.host = f"<127.0.0.1:0?addrs=127.0.0.1-0&alias={socket.gethostname()}>"
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._types = event_types()

    def close(self) -> None:
        os.close(self._fd)

    def _write(self, kind: str, cluster: int, proc: int, headline: str, body: str = "") -> None:
        code = int(self._types[kind])
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
        text = f"{code:03d} ({cluster:03d}.{proc:03d}.000) {stamp} {headline}\n{body}...\n"
        os.write(self._fd, text.encode())

    def submitted(self, cluster: int, proc: int, node: str) -> None:
        self._write("SUBMIT", cluster, proc, f"Job submitted from host: {self.host}",
                    f"    DAG Node: {node}\n")

    def executing(self, cluster: int, proc: int) -> None:
        self._write("EXECUTE", cluster, proc, f"Job executing on host: {self.host}")

    def terminated(self, cluster: int, proc: int, exit_code: int | None,
                   signal: int | None) -> None:
        if signal is not None:
            body = f"\t(0) Abnormal termination (signal {signal})\n\t(0) No core file\n"
        else:
            body = f"\t(1) Normal termination (return value {exit_code})\n"
        self._write("JOB_TERMINATED", cluster, proc, "Job terminated.", body + _USAGE)

    def held(self, cluster: int, proc: int, reason: str, code: int, subcode: int) -> None:
        self._write("JOB_HELD", cluster, proc, "Job was held.",
                    f"\t{_one_line(reason)}\n\tCode {code} Subcode {subcode}\n")

    def aborted(self, cluster: int, proc: int, reason: str) -> None:
        self._write("JOB_ABORTED", cluster, proc, "Job was aborted.", f"\t{_one_line(reason)}\n")

    def generic(self, cluster: int, proc: int, text: str) -> None:
        """A free-text note (``GENERIC``), e.g. that a container image is not used here."""
        self._write("GENERIC", cluster, proc, _one_line(text))

    def post_script(self, cluster: int, proc: int, node: str, exit_code: int | None,
                    signal: int | None) -> None:
        if signal is not None:
            body = f"\t(0) Abnormal termination (signal {signal})\n"
        else:
            body = f"\t(1) Normal termination (return value {exit_code})\n"
        self._write("POST_SCRIPT_TERMINATED", cluster, proc, "POST Script terminated.",
                    body + f"    DAG Node: {node}\n")
