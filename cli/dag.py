"""``docket dag run FILE.dag`` and ``docket dag check FILE.dag``: any DAG file on this
machine, as condor_submit_dag would run it on a pool (mounted on the ``docket`` app)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.common import JsonOption, emit, run

__all__ = ["app", "main"]

app = typer.Typer(help="Run or check a DAGMan DAG file on this machine.",
                  add_completion=False, pretty_exceptions_enable=False)

DagArgument = Annotated[Path, typer.Argument(help="The DAG file.", show_default=False)]


@app.command("run")
def run_command(
        dag: DagArgument,
        max_jobs: Annotated[int | None, typer.Option(
            "--max-jobs", help="At most N nodes with jobs at once (condor_submit_dag "
                               "-maxjobs).", show_default=False)] = None,
        follow: Annotated[bool, typer.Option(
            "--follow", help="Print dagman.out as the DAG runs.")] = False,
        no_shared_filesystem: Annotated[bool, typer.Option(
            "--no-shared-filesystem", help="Sandbox every vanilla job, as a pool "
                                           "without a shared filesystem would.")] = False,
        as_json: JsonOption = False) -> int:
    """Run the DAG here with DAGMan's files beside it; exit with DAGMan's status.

    A DAG whose last run failed runs again from its newest rescue DAG, as
    condor_submit_dag does; Ctrl-C removes it (its jobs are stopped)."""
    from docket.dagrun import run_dag_file

    def echo(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    code, metrics = run_dag_file(dag, max_jobs, on_line=echo if follow else None,
                                 shared_filesystem=not no_shared_filesystem)
    result = {"dag": str(dag), "exit_status": code, "metrics": metrics}
    emit(result, as_json, _render_run)
    return code


def _render_run(r: dict[str, Any]) -> str:
    m = r["metrics"]
    out = [f"{r['dag']}: {m.get('status', 'failed')}, exit status {r['exit_status']}; "
           f"{m.get('jobs_succeeded', 0)} of {m.get('jobs', 0)} nodes done"]
    for node, reason in sorted((m.get("failed_nodes") or {}).items()):
        out.append(f"  node {node}: {reason}")
    if m.get("rescue_dag"):
        out.append(f"rescue DAG: {m['rescue_dag']} (run 'docket dag run {r['dag']}' "
                   "again to continue from it)")
    return "\n".join(out)


@app.command("check")
def check_command(dag: DagArgument, as_json: JsonOption = False) -> int:
    """Say what in the DAG would not run on the local engine, before running anything."""
    from docket.dagrun import check_dag_file

    found = check_dag_file(dag)
    emit({"dag": found.dag, "nodes": found.nodes, "runs_locally": found.runs_locally,
          "problems": found.problems, "notes": found.notes}, as_json, _render_check)
    return 0 if found.runs_locally else 1


def _render_check(r: dict[str, Any]) -> str:
    head = (f"{r['dag']}: {r['nodes']} nodes; "
            + ("runs on the local engine" if r["runs_locally"] else
               "would NOT run on the local engine"))
    return "\n".join([head, *(f"  problem: {p}" for p in r["problems"]),
                      *(f"  note: {n}" for n in r["notes"])])


def main(argv: list[str] | None = None) -> int:
    return run(app, argv)


if __name__ == "__main__":
    sys.exit(main())
