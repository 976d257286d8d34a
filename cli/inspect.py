"""``docket inspect NAME``: get into a running workflow (mounted on the ``docket`` app).

The owner of ``cli/docket.py`` mounts the command with
``app.command("inspect")(cli.inspect.inspect)``; ``app`` below runs it on its own too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cli.common import JsonOption, emit, run, table

__all__ = ["app", "inspect", "render", "main"]

app = typer.Typer(help="Get into a running workflow.", add_completion=False,
                  pretty_exceptions_enable=False)

HomeOption = Annotated[Path | None, typer.Option(
    "--home", help="The docket home (default: $DOCKET_HOME, else the current directory).",
    show_default=False)]


def render(r: dict[str, Any]) -> str:
    """The human view of ``docket.inspect.inspect_request``'s result."""
    e = r["execution"]
    engine = e["engine"] or "-"
    where = f" on site {e['site']}" if e["site"] else ""
    ident = f", {e['engine_id']}" if e["engine_id"] else ""
    out = [f"{r['request']} v{e['version']} e{e['number']} (execution {e['id']}): {e['state']}"
           f"{where} ({engine}{ident}, engine {e['engine_state']})",
           f"directory: {e['directory'] or '(not created yet)'}"]
    if e["reason"]:
        out.append(f"reason: {e['reason']}")
    dagman = r.get("dagman")
    if dagman and dagman["state"] != "unknown":
        why = f" ({dagman['reason']})" if dagman.get("reason") else ""
        code = f", exit code {dagman['exit_code']}" if dagman.get("exit_code") is not None else ""
        paused = (", paused: no new node job starts until 'docket resume' (halt file)"
                  if dagman.get("paused") else "")
        out.append(f"DAGMan job: {dagman['state']}{code}{why}{paused}")
    if r["nodes"]:
        rows = []
        for n in r["nodes"]:
            hold = (f"{n['hold_code']}/{n['hold_subcode']} {n['hold_reason'] or ''}".strip()
                    if n["hold_code"] is not None else "")
            exit_ = (f"signal {n['signal']}" if n["signal"] is not None
                     else "" if n["exit_code"] is None else str(n["exit_code"]))
            rows.append((n["node"], n["state"], n["engine"] or "-", n["site"] or "-",
                         n["host_name"] or "", n["attempts"], exit_, hold[:60]))
        out += ["", table(rows, ["NODE", "STATE", "ENGINE", "SITE", "HOST", "ATTEMPTS", "EXIT",
                                 "HOLD"])]
    else:
        out += ["", "no node has been submitted yet"]
    for f in r["failing"]:
        out += ["", f"node {f['node']}: {f['summary']}"]
        if f.get("policy"):
            d = f["policy"]
            wait = f", after {d['delay_s']:g}s" if d["delay_s"] else ""
            label = "failure policy (decided)" if d.get("decided") else "failure policy"
            out.append(f"  {label}: {d['action']}{wait} ({d['reason']})")
        if f.get("problem"):
            out.append(f"  {f['problem']}")
        for p in f.get("procs", []):
            for stream in ("stdout", "stderr"):
                s = p[stream]
                if s["path"] is None:
                    continue
                label = f"  {stream} of proc {p['proc']}: {s['path']}"
                if s["lines"] is None:
                    out.append(f"{label} (not there)")
                elif not s["lines"]:
                    out.append(f"{label} (empty)")
                else:
                    out.append(f"{label} (last {len(s['lines'])} lines)")
                    out += [f"    | {line}" for line in s["lines"]]
    if r["adjustments"] and r["adjustments"].get("nodes"):
        out += ["", "adjusted by the failure policy:"]
        for node, a in sorted(r["adjustments"]["nodes"].items()):
            parts = []
            if a.get("request_memory_mb"):
                parts.append(f"request_memory {a['request_memory_mb']} MB")
            if a.get("avoid_hosts"):
                parts.append("avoiding " + ", ".join(a["avoid_hosts"]))
            out.append(f"  {node}: {'; '.join(parts)} ({a.get('submit')})")
    if r["commands"]:
        out += ["", "next:"]
        out += [f"  {c['command']}    # {c['what']}" for c in r["commands"]]
    if r["files"]:
        out += ["", "files:"] + [f"  {path}" for _, path in sorted(r["files"].items())]
    return "\n".join(out)


@app.command("inspect")
def inspect(name: Annotated[str, typer.Argument(help="Request name.")],
            execution: Annotated[int | None, typer.Option(
                help="Execution id or number (default: the request's current one).")] = None,
            lines: Annotated[int, typer.Option(
                min=0, help="Lines of each failing node's stdout/stderr.")] = 20,
            home: HomeOption = None, as_json: JsonOption = False) -> int:
    """Get into a workflow: directory, nodes, failing output, commands to run next."""
    from docket.home import resolve_home
    from docket.inspect import inspect_request

    result = inspect_request(resolve_home(home), name, execution, lines)
    emit(result, as_json, render)
    return 0


def main(argv: list[str] | None = None) -> None:
    raise SystemExit(run(app, argv, prog="docket inspect"))


if __name__ == "__main__":
    main()
