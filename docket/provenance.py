"""Provenance of a request's products: from archive inputs to delivered files.

Each recipe run's post-CASA work writes ``products/provenance.json`` (envoys.casa.postcasa):
the inputs with their locators and sha256, the recipe and its rendered task calls, the
CASA version, node and attempt, and every product with its sha256. ``lineage`` adds what
happened after the run (the hand-offs: ingested as which locator, delivered where) and
returns one record per execution, for ``docket show NAME --provenance``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from docket.store import Store

__all__ = ["PROVENANCE_FILE", "lineage", "render_lineage"]

PROVENANCE_FILE = "products/provenance.json"


def lineage(store: Store, name: str) -> dict[str, Any] | None:
    """Every execution of request ``name`` with its products' provenance; None if unknown."""
    request = store.request(name)
    if request is None:
        return None
    executions = []
    for row in store.executions(name):
        record: dict[str, Any] = {"execution": row.id, "version": row.version,
                                  "state": row.state, "directory": row.directory,
                                  "provenance": None, "problem": None}
        path = Path(row.directory) / PROVENANCE_FILE if row.directory else None
        if path is not None and path.is_file():
            try:
                record["provenance"] = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                record["problem"] = f"{path}: unreadable ({exc})"
        elif path is not None:
            record["problem"] = f"no {PROVENANCE_FILE} in {row.directory}"
        record["handoffs"] = [
            {"action": e["data"]["action"], "time": e["time"],
             "results": e["data"].get("results") or {}}
            for e in store.events(executions=[row.id], types=("handoff.done",))]
        record["archive_locator"] = (row.results or {}).get("archive_locator")
        executions.append(record)
    return {"request": name, "capability": request.capability, "executions": executions}


def render_lineage(result: dict[str, Any]) -> str:
    """The lineage for people: inputs → recipe (CASA, node, attempt) → products → hand-offs."""
    out = [f"{result['request']}: {result['capability']} request, provenance"]
    for e in result["executions"]:
        out.append(f"\nexecution {e['execution']} (v{e['version']}): {e['state']}")
        p = e["provenance"]
        if p is None:
            out.append(f"  {e['problem'] or 'no provenance recorded'}")
            continue
        for item in p.get("inputs") or []:
            out.append(f"  input   {item['locator']}  {item['path']}  "
                       f"sha256:{(item.get('sha256') or '')[:12]}")
        casa = p.get("casa") or {}
        recipe = p.get("recipe") or {}
        tasks = ", ".join(t.get("task", "?") for t in recipe.get("tasks") or [])
        out.append(f"  recipe  {recipe.get('name')} (sha256:{(recipe.get('sha256') or '')[:12]})"
                   f": {tasks}")
        out.append(f"  ran     {casa.get('program')} {casa.get('version')} on "
                   f"{casa.get('host')}, attempt {casa.get('attempt')}, "
                   f"{casa.get('started')} → {casa.get('finished')}")
        for item in p.get("products") or []:
            out.append(f"  product {item['path']}  {item['size_bytes']} B  "
                       f"sha256:{item['sha256'][:12]}")
        for h in e["handoffs"]:
            shown = ", ".join(f"{k} {v}" for k, v in h["results"].items())
            out.append(f"  then    {h['action']}" + (f" → {shown}" if shown else ""))
    return "\n".join(out)
