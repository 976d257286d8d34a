"""``docket report``: a static HTML site of a home, rewritten only where something changed.

The site is ``index.html`` (requests by state, queues, recent failures, recently updated
requests), ``requests.html`` (every request) and ``requests/<name>.html`` (versions,
executions, stages, nodes, failed attempts with the rule that fired, products with their
checksums, links to logs, and the DAG drawn with node states coloured). The DAG is drawn
by Graphviz ``dot`` when it is installed and by a small layered SVG of our own when not.

``report.json`` in the output remembers the last event id of each request: a request
page is written again only when the request has newer events, so cron can run
``docket report`` every minute on a large home.
"""

from __future__ import annotations

import html
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jinja2
import markupsafe

from docket.fileio import atomic_write
from docket.store import Store

__all__ = ["write_report", "NODE_COLOURS", "dag_svg", "FORMAT"]

# bump when the pages change shape, so every page is written again
FORMAT = 1
MANIFEST = "report.json"
RECENT = 100

# node state -> fill colour (and the legend); 'waiting' is a node with no job yet
NODE_COLOURS = {"done": "#2e7d32", "failed": "#c62828", "running": "#1565c0",
                "held": "#ef6c00", "idle": "#78909c", "waiting": "#e0e0e0"}
_TEXT_COLOURS = {"waiting": "#000000"}

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#212121}
table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f5f5f5} code{font-size:90%}
.state-complete,.state-done{color:#2e7d32}.state-failed{color:#c62828}
.state-cancelled{color:#616161}.legend span{display:inline-block;padding:0 .5em;margin-right:.3em}
.dag{overflow:auto;border:1px solid #ddd;padding:.5em;max-height:80vh}
"""

_BASE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{{ title }}</title><style>{{ css }}</style></head>
<body>{% block body %}{% endblock %}
<p><small>written by docket report at {{ written }}</small></p></body></html>
"""

_INDEX = """{% extends "base" %}{% block body %}
<h1>docket: {{ home }}</h1>
<p><a href="requests.html">all {{ total }} requests</a></p>
<h2>Requests by state</h2>
<table id="states"><tr><th>state</th><th>requests</th></tr>
{% for state, n in counts %}<tr><td class="state-{{ state }}">{{ state }}</td>
<td>{{ n }}</td></tr>{% endfor %}</table>
<h2>Queues</h2>
<table id="queues"><tr><th>capability</th><th>running</th><th>waiting</th><th>limit</th>
<th>paused</th><th>enabled</th><th>oldest wait since</th></tr>
{% for q in queues %}<tr><td>{{ q.capability }}</td><td>{{ q.running }}</td>
<td>{{ q.waiting }}</td><td>{{ q.max_jobs }}</td><td>{{ "yes" if q.paused else "no" }}</td>
<td>{{ "yes" if q.enabled else "no" }}</td><td>{{ q.oldest_wait or "" }}</td></tr>
{% endfor %}</table>
<h2>Recent failures</h2>
<table id="failures"><tr><th>request</th><th>execution</th><th>stopped</th><th>reason</th></tr>
{% for f in failures %}<tr><td><a href="requests/{{ f.request }}.html">{{ f.request }}</a>
</td><td>{{ f.id }}</td><td>{{ f.stopped or "" }}</td><td>{{ f.reason or "" }}</td></tr>
{% else %}<tr><td colspan="4">none</td></tr>{% endfor %}</table>
<h2>Recently updated</h2>
{{ request_table(recent, "recent") }}
{% endblock %}"""

_ALL = """{% extends "base" %}{% block body %}
<p><a href="index.html">overview</a></p><h1>All requests ({{ total }})</h1>
<table id="all"><tr><th>request</th><th>capability</th><th>version</th><th>state</th>
<th>updated (UTC)</th></tr>{{ rows }}</table>{% endblock %}"""

_MACROS = """{% macro request_table(rows, id) %}
<table id="{{ id }}"><tr><th>request</th><th>capability</th><th>version</th><th>state</th>
<th>updated (UTC)</th></tr>
{% for r in rows %}<tr><td><a href="requests/{{ r.name }}.html">{{ r.name }}</a></td>
<td>{{ r.capability }}</td><td>v{{ r.current_version }}</td>
<td class="state-{{ r.state }}">{{ r.state }}</td><td>{{ r.updated }}</td></tr>
{% endfor %}</table>{% endmacro %}"""

_REQUEST = """{% extends "base" %}{% block body %}
<p><a href="../index.html">overview</a> · <a href="../requests.html">all requests</a></p>
<h1>{{ r.request.name }}</h1>
<p>{{ r.request.capability }} request, version {{ r.request.current_version }},
<strong class="state-{{ r.request.state }}" id="state">{{ r.request.state }}</strong>
{% if r.request.sealed %}(sealed){% endif %}</p>
<h2>Versions</h2>
<table id="versions"><tr><th>version</th><th>from</th><th>by</th><th>at</th><th>sha256</th></tr>
{% for v in r.versions %}<tr><td>v{{ v.number }}</td><td>{{ v.source_file or "" }}</td>
<td>{{ v.actor or "" }}</td><td>{{ v.created }}</td><td><code>{{ v.sha256 }}</code></td></tr>
{% endfor %}</table>
{% for e in r.executions %}
<h2 id="execution-{{ e.id }}">Execution {{ e.id }} (v{{ e.version }}, attempt {{ e.attempt }}):
<span class="state-{{ e.state }}">{{ e.state }}</span></h2>
<table class="execution"><tr><th>engine</th><td>{{ e.engine or "-" }} ({{ e.engine_state }})
{% if e.site %}on site {{ e.site }}{% endif %}</td></tr>
<tr><th>created</th><td>{{ e.created or "" }}</td></tr>
<tr><th>started</th><td>{{ e.started or "" }}</td></tr>
<tr><th>stopped</th><td>{{ e.stopped or "" }}</td></tr>
<tr><th>exit code</th><td>{{ e.exit_code if e.exit_code is not none else "" }}</td></tr>
<tr><th>reason</th><td>{{ e.reason or "" }}</td></tr>
<tr><th>directory</th><td>{% if e.directory %}<a href="{{ e.directory_uri }}">
{{ e.directory }}</a>{% endif %}</td></tr></table>
{% if e.stages %}<h3>Stages</h3><table class="stages"><tr><th>stage</th><th>state</th>
<th>nodes done</th></tr>{% for s in e.stages %}<tr><td>{{ s.stage }}
{% if s.description %}({{ s.description }}){% endif %}</td>
<td class="state-{{ s.state }}">{{ s.state }}</td><td>{{ s.done }}/{{ s.nodes }}</td></tr>
{% endfor %}</table>{% endif %}
{% if e.dag_svg %}<h3>DAG</h3><p class="legend">{% for state, colour in colours %}
<span style="background:{{ colour }};color:{{ '#000' if state == 'waiting' else '#fff' }}">
{{ state }}</span>{% endfor %} (drawn by {{ e.dag_drawn_by }})</p>
<div class="dag">{{ e.dag_svg | safe }}</div>{% endif %}
{% if e.nodes %}<h3>Nodes</h3><table class="nodes"><tr><th>node</th><th>state</th>
<th>attempts</th><th>exit</th><th>signal</th><th>hold</th><th>host</th><th>reason</th>
<th>logs</th></tr>{% for n in e.nodes %}<tr><td>{{ n.node }}</td>
<td class="state-{{ n.state }}">{{ n.state }}</td><td>{{ n.attempts }}</td>
<td>{{ n.exit_code if n.exit_code is not none else "" }}</td>
<td>{{ n.signal if n.signal is not none else "" }}</td>
<td>{{ n.hold_code if n.hold_code is not none else "" }}</td><td>{{ n.host or "" }}</td>
<td>{{ n.reason or "" }}</td>
<td>{% for name, uri in n.logs %}<a href="{{ uri }}">{{ name }}</a> {% endfor %}</td></tr>
{% endfor %}</table>{% endif %}
{% if e.attempts %}<h3>Failed attempts</h3><table class="attempts"><tr><th>attempt</th>
<th>node</th><th>action</th><th>rule</th><th>reason</th></tr>
{% for a in e.attempts %}{% for f in a.failures %}<tr><td>{{ a.attempt }}</td>
<td>{{ f.node }}</td><td>{{ f.action }}</td><td>{{ f.rule }}</td><td>{{ f.reason }}</td></tr>
{% endfor %}{% endfor %}</table>{% endif %}
{% if e.products %}<h3>Products</h3><table class="products"><tr><th>path</th><th>size</th>
<th>sha256</th></tr>{% for p in e.products %}<tr><td>{{ p.path }}</td>
<td>{{ p.size_bytes if p.size_bytes is not none else "" }}</td>
<td><code>{{ p.sha256 or "" }}</code></td></tr>{% endfor %}</table>{% endif %}
{% if e.workflow_logs %}<p>Workflow logs: {% for name, uri in e.workflow_logs %}
<a href="{{ uri }}">{{ name }}</a> {% endfor %}</p>{% endif %}
{% endfor %}
<h2>Events</h2><table id="events"><tr><th>time (UTC)</th><th>event</th><th>execution</th>
<th>by</th><th>what</th></tr>{% for ev in r.events %}<tr><td>{{ ev.time }}</td>
<td>{{ ev.type }}</td><td>{{ ev.execution or "" }}</td><td>{{ ev.actor or "" }}</td>
<td>{{ ev.text }}</td></tr>{% endfor %}</table>
{% endblock %}"""


def _request_row(r: Any) -> str:
    """One row of requests.html (the macro request_table, as a string)."""
    name, state = html.escape(r["name"]), html.escape(r["state"])
    return (f'<tr><td><a href="requests/{name}.html">{name}</a></td>'
            f"<td>{html.escape(r['capability'])}</td><td>v{r['current_version']}</td>"
            f'<td class="state-{state}">{state}</td>'
            f"<td>{html.escape(r['updated'] or '')}</td></tr>\n")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.DictLoader({"base": _BASE, "index": _MACROS + _INDEX,
                                  "all": _ALL, "request": _REQUEST}),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
        lstrip_blocks=True)
    return env


def _dot_id(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def dag_svg(dag: Any, states: dict[str, str], dot: str | None = None) -> tuple[str, str]:
    """The DAG as inline SVG, each node coloured by its state; and what drew it.

    Each node is a ``<g class="node STATE">`` with a ``<title>`` of its name, drawn by
    ``dot`` when ``dot`` is the path of Graphviz's program, else by ``_layered_svg``.
    """
    if dot is not None:
        lines = ["digraph workflow {", "  rankdir=TB;",
                 '  node [shape=box, style="rounded,filled", fontname="sans-serif"];']
        for name in dag.nodes:
            state = states.get(name, "waiting")
            lines.append(f'  {_dot_id(name)} [class="{state}", '
                         f'fillcolor="{NODE_COLOURS[state]}", '
                         f'fontcolor="{_TEXT_COLOURS.get(state, "#ffffff")}", '
                         f'tooltip={_dot_id(name + ": " + state)}];')
        for name, node in dag.nodes.items():
            for child in sorted(node.children):
                lines.append(f"  {_dot_id(name)} -> {_dot_id(child)};")
        lines.append("}")
        try:
            done = subprocess.run([dot, "-Tsvg"], input="\n".join(lines).encode(),
                                  capture_output=True, timeout=60, check=True)
            svg = done.stdout.decode()
            return svg[svg.index("<svg"):], "Graphviz dot"
        except (OSError, subprocess.SubprocessError, ValueError):
            pass  # a broken dot: the plain drawing below still shows the states
    return _layered_svg(dag, states), "docket (Graphviz not installed)"


def _layered_svg(dag: Any, states: dict[str, str]) -> str:
    """Nodes in rows by depth (longest path from a root), edges as straight lines."""
    depth: dict[str, int] = {}
    for name in dag.topological():
        parents = dag.nodes[name].parents
        depth[name] = 1 + max((depth[p] for p in parents), default=-1)
    rows: dict[int, list[str]] = {}
    for name in dag.nodes:
        rows.setdefault(depth[name], []).append(name)
    box_w, box_h, gap_x, gap_y = 150, 36, 20, 50
    width = max(len(r) for r in rows.values()) * (box_w + gap_x) + gap_x if rows else 100
    height = len(rows) * (box_h + gap_y) + gap_y
    where: dict[str, tuple[int, int]] = {}
    for level, names in rows.items():
        offset = (width - len(names) * (box_w + gap_x) + gap_x) // 2
        for i, name in enumerate(sorted(names)):
            where[name] = (offset + i * (box_w + gap_x), gap_y // 2 + level * (box_h + gap_y))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}"><g class="graph">']
    for name, node in dag.nodes.items():
        x, y = where[name]
        for child in sorted(node.children):
            cx, cy = where[child]
            parts.append(f'<g class="edge"><line x1="{x + box_w // 2}" y1="{y + box_h}" '
                         f'x2="{cx + box_w // 2}" y2="{cy}" stroke="#555"/></g>')
    for name in dag.nodes:
        x, y = where[name]
        state = states.get(name, "waiting")
        label = html.escape(name if len(name) <= 20 else name[:19] + "…")
        parts.append(
            f'<g class="node {state}"><title>{html.escape(name)}: {state}</title>'
            f'<rect x="{x}" y="{y}" width="{box_w}" height="{box_h}" rx="6" '
            f'fill="{NODE_COLOURS[state]}" stroke="#333"/>'
            f'<text x="{x + box_w // 2}" y="{y + box_h // 2 + 5}" text-anchor="middle" '
            f'font-family="sans-serif" font-size="13" '
            f'fill="{_TEXT_COLOURS.get(state, "#ffffff")}">{label}</text></g>')
    parts.append("</g></svg>")
    return "".join(parts)


def _read_dag(directory: str | None) -> Any:
    if not directory:
        return None
    from docket.dag import DagError, read_dag
    from docket.render import WORKFLOW_FILE

    path = Path(directory) / WORKFLOW_FILE
    try:
        return read_dag(path) if path.is_file() else None
    except (DagError, OSError, UnicodeDecodeError):
        return None


def _logs(directory: Path, names: list[str]) -> list[tuple[str, str]]:
    return [(n, (directory / n).as_uri()) for n in names if (directory / n).is_file()]


def _request_page(env: jinja2.Environment, store: Store, home: Any, name: str,
                  specs_cache: dict[str, list[Any]], dot: str | None,
                  written: str) -> str:
    from docket.follow import describe
    from docket.report import show

    request = store.request(name)
    assert request is not None  # a name from the requests table, read in this snapshot
    capability = request.capability
    if capability not in specs_cache:
        from docket.capabilities import CapabilityError, load_capability

        try:
            specs_cache[capability] = list(load_capability(home.templates, capability)
                                           .definition.stages)
        except CapabilityError:
            specs_cache[capability] = []
    result = show(store, name, specs_cache[capability], events=200)
    assert result is not None
    for e in result["executions"]:
        e["products"] = e["products"] or []  # show() gives the JSON columns decoded
        e["dag_svg"] = None
        e["workflow_logs"] = []
        e["directory_uri"] = Path(e["directory"]).as_uri() if e["directory"] else None
        directory = Path(e["directory"]) if e["directory"] else None
        for n in e["nodes"]:
            n["logs"] = (_logs(directory, [f"{n['node']}.out", f"{n['node']}.err"])
                         if directory else [])
        if directory is not None:
            e["workflow_logs"] = _logs(directory, ["workflow.dag.dagman.out",
                                                   "workflow.dag.nodes.log"])
            dag = _read_dag(e["directory"])
            if dag is not None:
                states = {n["node"]: n["state"] for n in e["nodes"]}
                e["dag_svg"], e["dag_drawn_by"] = dag_svg(dag, states, dot)
    for ev in result["events"]:
        ev["text"] = describe(ev)
    return env.get_template("request").render(
        title=f"{name} — docket", css=_CSS, written=written, r=result,
        colours=list(NODE_COLOURS.items()))


def write_report(home: Any, out: Path, *, full: bool = False) -> dict[str, Any]:
    """Write (or bring up to date) the site in ``out``; returns what was written."""
    from docket.store import now

    store = Store.open_readonly(home.database)
    try:
        written = now()[:19].replace("T", " ")
        manifest_path = out / MANIFEST
        manifest: dict[str, Any] = {}
        if manifest_path.is_file() and not full:
            try:
                manifest = json.loads(manifest_path.read_text())
            except (OSError, ValueError):
                manifest = {}
        if manifest.get("format") != FORMAT or manifest.get("home") != str(home.root):
            manifest = {"format": FORMAT, "home": str(home.root), "requests": {}}
        seen: dict[str, int] = manifest["requests"]
        top = store.last_event_id()
        if manifest.get("last_event") == top and (out / "index.html").is_file():
            # cron's common case: nothing happened since the last run
            return {"out": str(out), "requests_written": [], "index_written": False,
                    "requests": len(seen), "dag_drawn_by": "unchanged"}
        everyone = store.request_rows()
        names = {r["name"] for r in everyone}
        if "last_event" in manifest:  # only the requests with events since the last run
            latest = store.latest_event_ids(after=manifest["last_event"])
            changed = sorted(n for n in latest if n in names)
            changed += sorted(n for n in names if n not in seen and n not in latest)
        else:
            latest = store.latest_event_ids()
            changed = sorted(n for n in names if seen.get(n) != latest.get(n))
        # only now the heavier imports: cron's "nothing new" run above does without them
        from docket.capabilities import CapabilityCache
        from docket.rules import Rules

        env = _environment()
        dot = shutil.which("dot")
        specs: dict[str, list[Any]] = {}
        (out / "requests").mkdir(parents=True, exist_ok=True)
        for name in changed:
            page = _request_page(env, store, home, name, specs, dot, written)
            atomic_write(out / "requests" / f"{name}.html", page, durable=False)
            seen[name] = latest.get(name, 0)
        # something happened (a request, a queue change): the overview is rewritten
        counts = list(store.request_counts().items())
        total = sum(n for _, n in counts)
        queues = Rules(store, CapabilityCache(home.templates), home.work).queues()
        failures = store.failed_executions(limit=20)
        recent = store.request_rows(by="updated", limit=RECENT)
        atomic_write(out / "index.html", env.get_template("index").render(
            title="docket report", css=_CSS, written=written, home=str(home.root),
            counts=counts, total=total, queues=queues, failures=failures,
            recent=recent), durable=False)
        # 10,000 rows: plain string building, ~10 times faster than the template loop
        rows = "".join(_request_row(r) for r in everyone)
        atomic_write(out / "requests.html", env.get_template("all").render(
            title="all requests — docket", css=_CSS, written=written, total=total,
            rows=markupsafe.Markup(rows)), durable=False)
        manifest["last_event"] = top
        atomic_write(manifest_path, json.dumps(manifest, sort_keys=True), durable=False)
        return {"out": str(out), "requests_written": changed, "index_written": True,
                "requests": len(names), "dag_drawn_by": "Graphviz dot" if dot else "docket"}
    finally:
        store.close()
