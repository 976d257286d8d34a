"""The HTCondor engine: run a rendered DAG under DAGMan on a pool, through ``htcondor2``.

``submit`` builds DAGMan's job with ``htcondor2.Submit.from_dag`` and queues it on the
site's schedd (this machine's, or one located through a collector); the DAGMan cluster id
is kept in ``<dag>.condor.json`` and becomes the engine id ``condor:<schedd>:<cluster>``.
Whether the DAG still runs and how it ended is read from DAGMan's own files, never by
polling ``condor_q``:

- ``<dag>.dagman.log``  the DAGMan job's own event log (held, released, terminated, aborted);
- ``<dag>.metrics``     written by DAGMan when it exits: exit code and DAG status;
- ``<dag>.status``      the node status file (``NODE_STATUS_FILE``, added to the DAG here):
  which nodes failed and why;
- ``<dag>.dagman.out``  DAGMan's own account, read for failed nodes when there is no
  status file, and for the last error when DAGMan exits without metrics;
- ``<dag>.halt``        written by docket to pause: DAGMan's halt file (HTCondor manual,
  "Suspending a Running DAG"; dag.cpp checks it before each submit cycle): no new node
  job is submitted and no PRE script runs; running jobs and POST scripts finish, then
  DAGMan writes a rescue DAG and exits with DAG status 6 (halted). A DAG with a FINAL
  node would run it at that point (dagman_main.cpp, main_shutdown_rescue), so such a DAG
  is paused by holding its DAGMan job instead.

Node job events come from ``<dag>.nodes.log`` (DAGMan's default node log), read by
``docket.engines.nodelog`` exactly as for the local engine.

Every call into the bindings goes through the ``htc_*`` wrappers below; everything else is
plain functions over files, tested without a pool. The processing directory must be on a
filesystem that the schedd's host sees at the same path (DAGMan runs there and writes
these files beside the DAG), and not under /tmp, where stock DAGMan refuses node logs.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from docket.engines.base import DagResult, Engine, metrics_file
from docket.errors import DocketError, ExternalFailure, Invalid, NotFound
from docket.fileio import atomic_write
from docket.quoting import quote
from docket.submitedit import classad_string
from schemas.sites import ScheddLocation, Site

__all__ = ["HTCondorEngine", "check_processing_dir", "parse_engine_id", "engine_id",
           "with_node_status_file", "parse_node_status", "dagman_out_failures",
           "dagman_out_exit", "dagman_job_state", "translate_metrics", "condor_files",
           "htc_module", "htc_dag_description", "htc_schedd", "htc_submit", "htc_act",
           "htc_query", "htc_read_events", "DAG_STATUS", "NODE_STATUS"]

log = logging.getLogger("docket.engines.htcondor")

# DagStatus in <dag>.metrics (condor_dagman's enum)
DAG_STATUS = {0: "ok", 1: "error", 2: "node failed", 3: "aborted", 4: "removed", 5: "cycle",
              6: "halted"}
# NodeStatus in the node status file
NODE_STATUS = {0: "not ready", 1: "ready", 2: "pre", 3: "submitted", 4: "post", 5: "done",
               6: "error", 7: "futile"}
STATUS_UPDATE_S = 30
HALTED = 6  # DagStatus of a DAG that stopped because of its halt file
# the DAGMan job's events (htcondor2.JobEventType names) and the state each leaves it in
_ENDED = {"JOB_TERMINATED": "terminated", "JOB_ABORTED": "aborted"}
_LIFECYCLE = {"SUBMIT": "idle", "EXECUTE": "running", "JOB_EVICTED": "idle",
              "JOB_HELD": "held", "JOB_RELEASED": "idle", **_ENDED}


def condor_files(dag: Path) -> dict[str, Path]:
    """The files DAGMan (and this engine) keep beside ``dag``."""
    return {name: dag.with_name(f"{dag.name}.{name}")
            for name in ("condor.sub", "condor.json", "dagman.log", "dagman.out", "metrics",
                         "status", "nodes.log", "lib.out", "lib.err", "lock", "halt")}


# pure parts ------------------------------------------------------------------------


def check_processing_dir(directory: Path) -> str | None:
    """Why DAGMan would refuse to run a DAG in ``directory``, or None."""
    for candidate in {directory.absolute(), directory.resolve()}:
        text = candidate.as_posix()
        if text == "/tmp" or text.startswith("/tmp/"):
            return (f"the processing directory {directory} is under /tmp: stock DAGMan "
                    f"refuses a node log there (\"default node log file ... is in /tmp\", "
                    f"fatal under DAGMAN_USE_STRICT)")
    return None


def engine_id(schedd: str, cluster: int) -> str:
    return f"condor:{schedd}:{cluster}"


def parse_engine_id(value: str) -> tuple[str, int]:
    """``condor:<schedd>:<cluster>`` -> (schedd, cluster); schedd names may hold colons."""
    match = re.fullmatch(r"condor:(.+):(\d+)", value or "")
    if not match:
        raise Invalid(f"{value!r} is not an HTCondor engine id (condor:<schedd>:<cluster>)")
    return match[1], int(match[2])


def with_node_status_file(dag_text: str, status_name: str,
                          interval_s: int = STATUS_UPDATE_S) -> str:
    """The DAG text with a NODE_STATUS_FILE line (unless it has one already)."""
    if any(line.split()[:1] and line.split()[0].upper() == "NODE_STATUS_FILE"
           for line in dag_text.splitlines()):
        return dag_text
    sep = "" if dag_text.endswith("\n") or not dag_text else "\n"
    return (f"{dag_text}{sep}# added by docket's HTCondor engine: which nodes failed and why\n"
            f"NODE_STATUS_FILE {status_name} {interval_s} ALWAYS-UPDATE\n")


def parse_node_status(text: str) -> dict[str, dict[str, Any]]:
    """A node status file -> ``{node: {status, details, retry_count, held}}``."""
    os.environ.setdefault("CONDOR_CONFIG", "/dev/null")
    import classad2

    nodes: dict[str, dict[str, Any]] = {}
    try:
        ads = list(classad2.parseAds(text))
    except Exception:  # a status file caught mid-write: DAGMan rewrites it whole
        return nodes
    for ad in ads:
        if ad.get("Type") != "NodeStatus" or "Node" not in ad:
            continue
        code = int(ad.get("NodeStatus", -1))
        nodes[str(ad["Node"])] = {"status": NODE_STATUS.get(code, str(code)),
                                  "details": str(ad.get("StatusDetails") or ""),
                                  "retry_count": int(ad.get("RetryCount") or 0),
                                  "held": int(ad.get("JobProcsHeld") or 0)}
    return nodes


_FAILED_HEADER = re.compile(r"ERROR: the following job\(s\) failed:")
_FIELD = re.compile(r"^\S+ \S+\s+(Node Name|Error):\s?(.*)$")


def dagman_out_failures(text: str) -> dict[str, str]:
    """Failed nodes and their errors, from the last failure report in a dagman.out."""
    at = None
    for match in _FAILED_HEADER.finditer(text):
        at = match.end()
    if at is None:
        return {}
    failed: dict[str, str] = {}
    node = None
    for line in text[at:].splitlines():
        if "<END>" in line:
            break
        match = _FIELD.match(line)
        if not match:
            continue
        if match[1] == "Node Name":
            node = match[2].strip()
            failed[node] = "failed"
        elif node is not None:
            failed[node] = match[2].strip()
    return failed


_EXITING = re.compile(r"EXITING WITH STATUS (-?\d+)")
_ERROR_LINE = re.compile(r"^\S+ \S+ (ERROR|Warning: .* is in /tmp).*$", re.MULTILINE)


def dagman_out_exit(text: str) -> tuple[int | None, str | None]:
    """DAGMan's exit status and its last ERROR line (or /tmp warning), from dagman.out."""
    codes = _EXITING.findall(text)
    errors = [m.group(0).split(" ", 2)[2] for m in _ERROR_LINE.finditer(text)
              if "the following job(s) failed" not in m.group(0)]
    return (int(codes[-1]) if codes else None), (errors[-1] if errors else None)


def dagman_job_state(events: list[dict[str, Any]], cluster: int | None) -> dict[str, Any]:
    """The DAGMan job's state from its own event log: ``{state, exit_code, reason}``;
    state is ``unknown`` (no event yet), idle, running, held, terminated or aborted."""
    event_type = htc_module().JobEventType
    state: dict[str, Any] = {"state": "unknown", "exit_code": None, "reason": None}
    for event in events:
        if cluster is not None and event["cluster"] != cluster:
            continue
        try:
            name = event_type(event["type"]).name
        except ValueError:
            continue
        kind = _LIFECYCLE.get(name)
        if kind is None:
            continue
        state["state"] = kind
        if name == "JOB_TERMINATED":
            state["exit_code"] = (event.get("ReturnValue") if event.get("TerminatedNormally",
                                                                         True)
                                  else None)
            if not event.get("TerminatedNormally", True):
                state["reason"] = f"DAGMan was killed by signal {event.get('TerminatedBySignal')}"
        elif name in ("JOB_ABORTED", "JOB_HELD"):
            state["reason"] = event.get("Reason") or event.get("HoldReason")
    return state


def translate_metrics(metrics: Mapping[str, Any], failed_nodes: Mapping[str, str]) -> dict[
        str, Any]:
    """DAGMan's metrics JSON -> docket's result shape (as the local engine writes it)."""
    code = metrics.get("DagStatus")
    exitcode = metrics.get("exitcode")
    if code == 0 and exitcode == 0:
        status = "complete"
    elif code == 4:
        status = "removed"
    elif code == 3:
        status = "aborted"
    else:
        status = "failed"
    result = {"engine": "htcondor", "exitcode": exitcode, "status": status,
              "dag_status": DAG_STATUS.get(code, code) if code is not None else None,
              "failed_nodes": dict(failed_nodes), "jobs": metrics.get("jobs"),
              "jobs_failed": metrics.get("jobs_failed"),
              "jobs_succeeded": metrics.get("jobs_succeeded"),
              "duration_s": metrics.get("duration"), "dagman_id": metrics.get("dagman_id")}
    if status == "failed" and not failed_nodes:
        result["reason"] = (f"DAGMan ended with exit code {exitcode} "
                            f"(DAG status: {result['dag_status']})")
    return result


# the bindings, wrapped -------------------------------------------------------------


def htc_module():  # noqa: ANN201 - the htcondor2 module
    """``htcondor2``, imported on first use (it costs ~50 ms) with a harmless config when
    none is set, so everything that needs no daemon works on any machine."""
    os.environ.setdefault("CONDOR_CONFIG", "/dev/null")
    import htcondor2

    return htcondor2


@contextlib.contextmanager
def _stdout_to_log(what: str) -> Iterator[None]:
    """Catch what C++ code prints on file descriptor 1 (``Submit.from_dag`` prints
    "Running rescue DAG 1") and log it instead: the watcher's output is its own."""
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 1)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, AttributeError):
                ctypes.CDLL(None).fflush(None)  # C stdio's buffer, before fd 1 goes back
            os.dup2(saved, 1)
            os.close(saved)
            caught.seek(0)
            for line in caught.read().decode(errors="replace").splitlines():
                if line.strip():
                    log.info("%s: %s", what, line.strip())


def htc_dag_description(dag: Path, options: Mapping[str, Any]):  # noqa: ANN201 - Submit
    """``Submit.from_dag``: writes ``<dag>.condor.sub`` and returns DAGMan's description."""
    htcondor2 = htc_module()
    try:
        with _stdout_to_log(str(dag)):
            return htcondor2.Submit.from_dag(str(dag), dict(options))
    except KeyError as exc:
        raise Invalid(f"DAGMan option refused: {exc.args[0]}",
                      "see htcondor2.Submit.from_dag_options()") from None
    except Exception as exc:  # HTCondorException, without a stable subclass per cause
        message = str(exc)
        hint = "check the DAG and the HTCondor installation"
        if "Failed to locate condor_dagman" in message:
            hint = "install HTCondor on this machine (condor_dagman must be on PATH)"
        raise ExternalFailure(f"{dag}: DAGMan's submit description could not be made: "
                              f"{message}", hint) from None


def htc_schedd(location: str | ScheddLocation):  # noqa: ANN201 - Schedd
    """The schedd to talk to: this machine's ('local'), or one located via a collector."""
    htcondor2 = htc_module()
    try:
        if location == "local" or location is None:
            return htcondor2.Schedd()
        assert isinstance(location, ScheddLocation)
        ad = htcondor2.Collector(location.collector).locate(htcondor2.DaemonType.Schedd,
                                                            location.name)
        return htcondor2.Schedd(ad)
    except Exception as exc:
        where = ("this machine's schedd" if location in ("local", None)
                 else f"schedd {location.name} via collector {location.collector}")
        raise ExternalFailure(f"cannot reach {where}: {exc}",
                              "check that HTCondor runs there (condor_q -name ...) and the "
                              "site's schedd settings in sites.yaml") from None


def htc_submit(schedd: Any, description: Any) -> int:
    """Queue ``description`` once; the new cluster id."""
    try:
        return int(schedd.submit(description).cluster())
    except Exception as exc:
        raise ExternalFailure(f"the schedd refused the DAGMan job: {exc}",
                              "see the schedd's log, or run condor_submit_dag by hand "
                              "to see its message") from None


def htc_act(schedd: Any, action: str, job_spec: str, reason: str | None = None) -> dict[
        str, Any]:
    """``Schedd.act`` (Hold, Release, Remove) on a job spec such as ``"1234"``."""
    htcondor2 = htc_module()
    try:
        result = schedd.act(getattr(htcondor2.JobAction, action), job_spec, reason)
    except Exception as exc:
        raise ExternalFailure(f"condor {action.lower()} of job {job_spec} failed: {exc}",
                              "check the schedd and that you own the job") from None
    return dict(result.items()) if result is not None else {}


def htc_query(schedd: Any, constraint: str, projection: list[str]) -> list[dict[str, Any]]:
    """``Schedd.query``: used once, to find a DAGMan job whose id a crash lost."""
    try:
        return [dict(ad) for ad in schedd.query(constraint=constraint, projection=projection)]
    except Exception as exc:
        raise ExternalFailure(f"condor_q ({constraint}) failed: {exc}",
                              "check the schedd") from None


def htc_read_events(path: Path) -> list[dict[str, Any]]:
    """Every event of a job event log, as dicts with ``type`` (a ``JobEventType``),
    ``cluster`` and ``proc``."""
    htcondor2 = htc_module()
    if not path.exists():
        return []
    out = []
    with contextlib.closing(htcondor2.JobEventLog(str(path))) as jel:
        for event in jel.events(stop_after=0):
            record = dict(event.items())
            # type: the htcondor2.JobEventType member (an IntEnum: its value is the code)
            record.update(type=event.type, cluster=event.cluster, proc=event.proc)
            out.append(record)
    return out


# the engine --------------------------------------------------------------------------


def _batch_name(dag: Path) -> str:
    """``<request> v<N> e<M>``: the numbering of the processing directory and of show."""
    with contextlib.suppress(OSError, ValueError, KeyError):
        meta = json.loads((dag.parent / "metadata.json").read_text())
        number = meta.get("execution_number") or meta["execution"]
        return f"{meta['request']} v{meta['version']} e{number}"
    return dag.parent.name or "docket"


def _halted(metrics: Mapping[str, Any] | None) -> bool:
    return metrics is not None and metrics.get("DagStatus") == HALTED


class HTCondorEngine(Engine):
    """One site's pool. ``dagman_path`` is only for machines without condor_dagman on PATH
    (tests); ``dagman_options`` are condor_submit_dag options (MaxJobs, ...); ``schedd`` is
    a schedd object already at hand (tests give a recorded pool's)."""

    name = "htcondor"

    def __init__(self, site: Site | None = None, *, dagman_path: str | None = None,
                 dagman_options: Mapping[str, Any] | None = None,
                 schedd: Any = None) -> None:
        self.site = site
        self.site_name = site.name if site else None
        self.location: str | ScheddLocation = (site.schedd if site and site.schedd
                                                else "local")
        self.dagman_path = dagman_path
        self.dagman_options = {**(site.dagman_options if site else {}),
                               **(dagman_options or {})}
        self._schedd: Any = schedd

    @classmethod
    def for_site(cls, site: Site | None, config: Any = None) -> HTCondorEngine:
        """The engine of ``site`` (the registry's constructor; ``config`` is the home's
        configuration, which this engine does not need)."""
        return cls(site)

    # identity -------------------------------------------------------------------------

    @property
    def schedd_name(self) -> str:
        return self.location.name if isinstance(self.location, ScheddLocation) else "local"

    def schedd(self) -> Any:
        if self._schedd is None:
            self._schedd = htc_schedd(self.location)
        return self._schedd

    def _record(self, dag: Path) -> dict[str, Any]:
        try:
            return json.loads(condor_files(dag)["condor.json"].read_text())
        except FileNotFoundError:
            return {}
        except json.JSONDecodeError:
            return {"state": "unknown"}

    def _save(self, dag: Path, record: dict[str, Any]) -> None:
        atomic_write(condor_files(dag)["condor.json"], json.dumps(record, indent=2,
                                                                   sort_keys=True))

    # submitting -----------------------------------------------------------------------

    def options(self, dag: Path) -> dict[str, Any]:
        """condor_submit_dag options for this DAG (pure: no file is touched)."""
        # UpdateSubmit rewrites a <dag>.condor.sub left by an earlier try; -force would
        # also rename the rescue DAG that a resumed run needs to skip finished nodes
        options: dict[str, Any] = {"BatchName": _batch_name(dag), "AutoRescue": 1,
                                   "UpdateSubmit": True, **self.dagman_options}
        if self.dagman_path:
            options["DagmanPath"] = self.dagman_path
        return options

    def describe(self, dag: Path) -> Any:
        """Prepare the DAG for DAGMan and return DAGMan's submit description."""
        dag = dag.absolute()
        reason = check_processing_dir(dag.parent)
        if reason:
            # processing directories live under work_dir (output_dir only receives products)
            raise Invalid(reason, "set work_dir in docket.yaml to a directory outside /tmp "
                                  "that the schedd's host sees")
        if not dag.is_file():
            raise NotFound(f"{dag} does not exist", "render the execution first")
        files = condor_files(dag)
        text = dag.read_text()
        marked = with_node_status_file(text, files["status"].name)
        if marked != text:
            atomic_write(dag, marked, durable=False)
        description = htc_dag_description(dag, self.options(dag))
        # DAGMan resolves node submit files from its working directory: the DAG's
        description["initialdir"] = str(dag.parent)
        description["My.DocketDag"] = quote(classad_string(str(dag)), "submit")
        for key in ("accounting_group", "accounting_group_user"):
            value = (self.site.submit_attributes.get(key) if self.site else None)
            if value is not None:
                description[key] = quote(value, "submit")
        return description

    def submit(self, dag: Path) -> str:
        dag = dag.absolute()
        description = self.describe(dag)
        schedd = self.schedd()  # unreachable: nothing was submitted, nothing is recorded
        # remembered before the schedd call: a crash in between must not submit twice
        self._save(dag, {"state": "submitting", "site": self.site_name,
                         "schedd": self.schedd_name, "cluster": None,
                         "collector": getattr(self.location, "collector", None),
                         "since": time.time()})
        cluster = htc_submit(schedd, description)
        record = {"state": "submitted", "site": self.site_name, "schedd": self.schedd_name,
                  "collector": getattr(self.location, "collector", None),
                  "cluster": cluster, "engine_id": engine_id(self.schedd_name, cluster),
                  "since": time.time()}
        self._save(dag, record)
        log.info("%s: DAGMan job %s on %s", dag, cluster, self.schedd_name)
        return record["engine_id"]

    def resume(self, dag: Path) -> str:
        """Submit the DAG again; DAGMan runs its rescue DAG, skipping nodes already done."""
        if _halted(self._metrics(dag)):
            return self._resubmit_halted(dag)
        return self.submit(dag)

    def _resubmit_halted(self, dag: Path) -> str:
        """Submit a DAG that exited halted, then set its metrics aside: until they move,
        the watcher still sees a halted DAG. Submit.from_dag removes a halt file (as
        condor_submit_dag does), so a refused submission puts it back."""
        files = condor_files(dag)
        paused_by = files["halt"].read_text() if files["halt"].exists() else None
        try:
            engine_id = self.submit(dag)
        except DocketError:
            if paused_by is not None:
                atomic_write(files["halt"], paused_by)
            raise
        os.replace(files["metrics"], dag.with_name(f"{dag.name}.metrics.halted"))
        return engine_id

    def started(self, dag: Path) -> bool:
        return condor_files(dag)["condor.json"].exists()

    def reap(self) -> None:
        """Nothing to collect: DAGMan runs under the schedd, not as our child."""

    # following ------------------------------------------------------------------------

    def cluster(self, dag: Path) -> int | None:
        """The DAGMan cluster id; found again through the schedd if a crash lost it."""
        record = self._record(dag)
        if record.get("cluster") is not None:
            return int(record["cluster"])
        if record.get("state") != "submitting":
            return None
        ads = htc_query(self.schedd(), f"DocketDag == {classad_string(str(dag.absolute()))}",
                        ["ClusterId"])
        if not ads:
            return None
        cluster = int(ads[0]["ClusterId"])
        record.update(state="submitted", cluster=cluster,
                      engine_id=engine_id(record.get("schedd", self.schedd_name), cluster))
        self._save(dag, record)
        return cluster

    def job_state(self, dag: Path) -> dict[str, Any]:
        record = self._record(dag)
        events = htc_read_events(condor_files(dag)["dagman.log"])
        return dagman_job_state(events, record.get("cluster"))

    def _metrics(self, dag: Path) -> dict[str, Any] | None:
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            return json.loads(metrics_file(dag).read_text())
        return None

    def paused(self, dag: Path) -> bool:
        """True while docket's halt file stands (DAGMan may have ended, halted, meanwhile)."""
        return condor_files(dag)["halt"].exists()

    def _resume_owed(self, dag: Path) -> bool:
        """A DAG that exited halted and is owed a resubmission: paused (resume submits
        it), or resumed while DAGMan was already on its way out (it reads the halt file
        once per cycle and exits later in that cycle), unless it was cancelled since."""
        record = self._record(dag)
        return (record.get("state") != "cancelled"
                and (self.paused(dag) or bool(record.get("resumed"))))

    def alive(self, dag: Path) -> bool:
        files = condor_files(dag)
        record = self._record(dag)
        if files["metrics"].exists():
            # a DAG halted by docket's pause waits for resume, which submits it again; one
            # resumed as it exited is not alive, and the watcher resumes it (self.resume)
            return (_halted(self._metrics(dag)) and self.paused(dag)
                    and record.get("state") != "cancelled")
        if record.get("state") == "cancelled":
            return False
        state = self.job_state(dag)
        if state["state"] in _ENDED.values():
            return False
        if state["state"] != "unknown" or record.get("cluster") is not None:
            return True
        # no cluster remembered and no event: a crash between saving and submitting
        try:
            return self.cluster(dag) is not None
        except ExternalFailure as exc:
            log.warning("%s: cannot tell whether DAGMan runs: %s", dag, exc)
            return True  # ask again next pass rather than submit a second DAGMan

    def failed_nodes(self, dag: Path) -> dict[str, str]:
        files = condor_files(dag)
        failed: dict[str, str] = {}
        with contextlib.suppress(OSError):
            for node, info in parse_node_status(files["status"].read_text()).items():
                if info["status"] == "error":
                    failed[node] = info["details"] or "failed"
        if not failed:
            with contextlib.suppress(OSError):
                failed = dagman_out_failures(files["dagman.out"].read_text(errors="replace"))
        return failed

    def result(self, dag: Path) -> DagResult | None:
        found = self._result(dag)
        return DagResult.from_metrics(found, self.name) if found is not None else None

    def _result(self, dag: Path) -> dict[str, Any] | None:
        """The result in the metrics JSON shape, from whichever of DAGMan's files say."""
        files = condor_files(dag)
        record = self._record(dag)
        try:
            metrics = json.loads(metrics_file(dag).read_text())
        except FileNotFoundError:
            metrics = None
        except json.JSONDecodeError:
            return {"engine": self.name, "exitcode": 1, "status": "failed",
                    "failed_nodes": {}, "reason": f"{files['metrics'].name} is not valid JSON"}
        if metrics is not None and _halted(metrics):
            if self._resume_owed(dag):
                return None  # paused, or resumed as it exited: it is submitted again
            if record.get("state") == "cancelled" and (self.paused(dag)
                                                       or record.get("resumed")):
                return {"engine": self.name, "exitcode": 2, "status": "removed",
                        "failed_nodes": {}, "reason": "cancelled while paused"}
        if metrics is not None:
            return translate_metrics(metrics, self.failed_nodes(dag))
        if record.get("state") == "cancelled":
            return {"engine": self.name, "exitcode": 2, "status": "removed",
                    "failed_nodes": {}, "reason": "cancelled before DAGMan started"}
        state = self.job_state(dag)
        if state["state"] not in _ENDED.values():
            return None
        out_text = ""
        with contextlib.suppress(OSError):
            out_text = files["dagman.out"].read_text(errors="replace")
        code, error = dagman_out_exit(out_text)
        if state["state"] == "aborted":
            return {"engine": self.name, "exitcode": 2, "status": "removed",
                    "failed_nodes": self.failed_nodes(dag),
                    "reason": f"the DAGMan job was removed: {state['reason'] or 'no reason'}"}
        exitcode = state["exit_code"] if state["exit_code"] is not None else code
        reason = (f"DAGMan exited with status {exitcode} without writing "
                  f"{files['metrics'].name}" + (f": {error}" if error else "")
                  + f"; see {files['dagman.out'].name}")
        return {"engine": self.name, "exitcode": exitcode if exitcode is not None else 1,
                "status": "failed", "failed_nodes": self.failed_nodes(dag), "reason": reason}

    # acting ---------------------------------------------------------------------------

    def _act(self, dag: Path, action: str, reason: str | None) -> dict[str, Any] | None:
        cluster = self.cluster(dag)
        if cluster is None:
            return None
        return htc_act(self.schedd(), action, str(cluster), reason)

    def cancel(self, dag: Path) -> None:
        """Remove the DAGMan job (DAGMan removes its node jobs); idempotent."""
        record = self._record(dag)
        if not record or record.get("state") == "cancelled":
            return
        if metrics_file(dag).exists():
            if _halted(self._metrics(dag)) and self._resume_owed(dag):
                record["state"] = "cancelled"  # nothing runs: a paused DAG that halted
                self._save(dag, record)
            return
        try:
            acted = self._act(dag, "Remove", "cancelled by docket")
        except ExternalFailure as exc:
            # the watcher asks again next pass; a failed pass must not stop the others
            log.warning("%s: could not remove the DAGMan job: %s", dag, exc)
            return
        if acted is None:
            record["state"] = "cancelled"
            self._save(dag, record)

    def _has_final_node(self, dag: Path) -> bool:
        from docket.dag import DagError, read_dag

        try:
            return read_dag(dag).final is not None
        except (DagError, OSError):
            return False

    def hold(self, dag: Path, reason: str = "paused by docket") -> None:
        """Pause: write DAGMan's halt file. DAGMan submits no new node job and runs no PRE
        script; running jobs and POST scripts finish. Once they have, DAGMan writes a
        rescue DAG and exits halted, and ``release`` submits it again. Unlike holding
        the DAGMan job, this needs no schedd, and nothing waits out the schedd's
        SCHEDULER_UNIVERSE_COOL_DOWN_DURATION (300 s) on resume. A halted DAG with a
        FINAL node runs that node before it exits, so that DAG's DAGMan job is held
        instead: the same pause, at the price of the cool-down on resume."""
        if self._has_final_node(dag):
            if self._act(dag, "Hold", reason) is None:
                raise Invalid(f"{dag}: its DAGMan job is not known yet",
                              "pause it again once it has been submitted")
            record = self._record(dag)
            record["held_to_pause"] = True
            self._save(dag, record)
            return
        atomic_write(condor_files(dag)["halt"], f"{reason}\n")

    def release(self, dag: Path) -> None:
        """Resume: remove the halt file (a running DAGMan carries on); a DAG that ended
        halted meanwhile is submitted again and runs its rescue DAG. A held DAGMan job
        (a DAG with a FINAL node, or condor_hold by hand) is released, which the schedd
        delays by its cool-down."""
        files = condor_files(dag)
        metrics = self._metrics(dag)
        if _halted(metrics):
            self._resubmit_halted(dag)
        elif metrics is None and files["halt"].exists():
            # DAGMan may have read the halt file already and be exiting halted: then
            # the watcher submits it again (result None, not alive) instead of failing it
            record = self._record(dag)
            if record:
                record["resumed"] = True
                self._save(dag, record)
        with contextlib.suppress(FileNotFoundError):
            files["halt"].unlink()
        record = self._record(dag)
        if metrics is None and (record.get("held_to_pause")
                                or self.job_state(dag)["state"] == "held"):
            self._act(dag, "Release", None)
            record.pop("held_to_pause", None)
            self._save(dag, record)

    def remove_node_job(self, dag: Path, cluster: int, proc: int | None = None,
                        reason: str = "removed by docket's failure policy") -> None:
        """Remove one node job (a held one the policy will retry): DAGMan sees the node fail."""
        spec = f"{cluster}.{proc}" if proc is not None else str(cluster)
        htc_act(self.schedd(), "Remove", spec, reason)
