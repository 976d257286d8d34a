"""Render a capability's Jinja2 templates into an execution's processing directory.

Templates run in a sandbox with ``StrictUndefined`` (a misspelt name is an error, not an
empty string) and autoescape off (these are not HTML). Every ``{{ ... }}`` output passes
``check_text``, so a control character can never reach a file even through a template
that forgot to quote; values are quoted with the filters below, all of them the one
function ``docket.quoting.quote``:

- ``{{ x | q }}``           a submit-file value
- ``{{ [a, b] | arguments }}`` an ``arguments = "..."`` value
- ``{{ x | arg }}``         one item written inside an ``arguments = "..."`` value
- ``{{ {"K": v} | environment }}`` an ``environment = "..."`` value
- ``{{ x | dagvar }}``      a DAG ``VARS`` value, quotes included
- ``{{ x | dagarg }}``      a DAG ``VARS`` value that the submit file uses as one argument
- ``{{ x | sh }}``          a shell word

After rendering, the DAG and every submit file it names are checked (undefined nodes,
cycles, missing submit files, no executable...), so nothing broken reaches an engine.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from jinja2.runtime import LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from docket import procdir
from docket.attachments import AttachmentError, copy_attachments
from docket.capabilities import Capability
from docket.dag import DagError, check_dag, read_dag_text
from docket.errors import DocketError, Invalid
from docket.fileio import atomic_write, is_disk_error
from docket.quoting import check_text, quote, quote_arguments, quote_environment
from docket.submit import check_submit
from docket.transfer import return_products

__all__ = ["RenderError", "Rendered", "render_execution", "template_environment",
           "WORKFLOW_FILE"]

WORKFLOW_FILE = "workflow.dag"
# where 'make pex' writes the tools' PEX files (pex-build/build.py)
DEFAULT_PEX_DIR = Path(__file__).resolve().parents[1] / "dist"


class RenderError(DocketError):
    code = "render-failed"


@dataclass(frozen=True)
class Rendered:
    directory: Path
    dag: Path
    files: list[Path]
    nodes: int


def _finalize(value: Any) -> Any:
    if isinstance(value, str):
        check_text(value, "a template value")
    return value


def _template_line(exc: BaseException, template_path: Path) -> int | None:
    """The template line a render-time error came from (Jinja2 rewrites the traceback)."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == str(template_path):
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


# what ``dict`` itself answers to: ``d.items`` is the method, as Jinja2 reads it
_DICT_ATTRIBUTES = frozenset(dir(dict))


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with a short way to the two lookups a big DAG template makes
    per item (``loop.index0``, ``parameters.name``).

    Both answers are the ones the sandbox gives: a loop's public attributes are safe, and
    a key of a plain dict that is no attribute of ``dict`` is the dict's item (Jinja2
    tries the attribute first). Everything else takes the sandbox's checks."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        kind = type(obj)
        if kind is dict and attribute not in _DICT_ATTRIBUTES:
            if attribute in obj:
                return obj[attribute]
        elif kind is LoopContext and attribute[:1] != "_":
            try:
                return getattr(obj, attribute)
            except AttributeError:
                pass
        return super().getattr(obj, attribute)


def template_environment(folder: Path | tuple[Path, ...]) -> ImmutableSandboxedEnvironment:
    """``folder``: one folder, or several searched in order (a capability that extends
    another: its own templates first)."""
    folders = [str(f) for f in folder] if isinstance(folder, tuple) else [str(folder)]
    env = _Sandbox(
        loader=jinja2.FileSystemLoader(folders), undefined=jinja2.StrictUndefined,
        autoescape=False, keep_trailing_newline=True, finalize=_finalize)
    env.filters["q"] = lambda v: quote(v, "submit")
    env.filters["arguments"] = quote_arguments
    env.filters["arg"] = lambda v: quote(v, "argument")
    env.filters["environment"] = quote_environment
    env.filters["dagvar"] = lambda v: quote(v, "dag")
    env.filters["dagarg"] = lambda v: quote(v, "dag-argument")
    env.filters["sh"] = lambda v: quote(v, "shell")
    return env


def render_execution(capability: Capability, directory: Path, *, request: dict[str, Any],
                     parameters: dict[str, Any], document: str, tools_dir: Path,
                     attachments: list[Path] | None = None, shared_filesystem: bool = True,
                     pex_dir: Path | None = None, home_dir: Path | None = None) -> Rendered:
    """Write the processing directory: templates, request copy, metadata, attachments.

    ``tool(name)`` in a template is the tool's executable: in ``tools_dir`` where the site
    shares this machine's filesystem, else its PEX file in ``pex_dir`` (HTCondor transfers
    a job's executable with it, and a PEX runs with the node's bare python3). Templates
    also see ``shared_filesystem``, and ``home`` (give it to a tool as ``DOCKET_HOME``)."""
    layout = procdir.create(directory)
    atomic_write(layout.active_marker, json.dumps(
        {"execution": request["execution"], "request": request["name"]}), durable=False)
    names = [source.name for source in attachments or []]
    try:  # files a bounded copy (Launcher) already finished are not copied again
        copy_attachments(list(attachments or []), layout.rawdata)
    except AttachmentError as exc:
        raise RenderError(f"attachment {exc}", "attach regular files only") from None

    def tool(name: str) -> str:
        if shared_filesystem:
            return str(tools_dir / str(name))
        return str((pex_dir or DEFAULT_PEX_DIR) / f"{name}.pex")

    # home: so that a job's tools find the home's tools.yaml (DOCKET_HOME) on any node
    context = {"request": request, "parameters": parameters, "directory": str(directory),
               "files": names, "tool": tool, "shared_filesystem": shared_filesystem,
               "home": str(home_dir or "")}
    folders = capability.template_folders
    env = template_environment(folders)
    written = []
    dag_text: str | None = None
    templates: dict[str, Path] = {}
    for folder in reversed(folders):  # a capability's own template wins over its base's
        templates.update({p.name: p for p in folder.glob("*.j2")})
    for template_path in (templates[n] for n in sorted(templates)):
        target = directory / template_path.name[:-3]
        try:
            text = env.get_template(template_path.name).render(context)
        except jinja2.TemplateError as exc:
            line = getattr(exc, "lineno", None) or _template_line(exc, template_path)
            where = f"{template_path}:{line}" if line else str(template_path)
            raise RenderError(f"{where}: {exc.__class__.__name__}: {exc}",
                              "fix the template or the request's parameters") from None
        except Invalid as exc:
            raise RenderError(f"{template_path}: {exc.what}", exc.hint) from None
        except Exception as exc:  # a template bug fails this execution, not the watcher
            if is_disk_error(exc):
                raise  # the disk's fault, not the template's: the launch is retried
            raise RenderError(f"{template_path}: {exc.__class__.__name__}: {exc}",
                              "fix the template") from None
        atomic_write(target, text, durable=False)
        written.append(target)
        if target.name == WORKFLOW_FILE:
            dag_text = text  # checked from memory below, not read back from the disk
    atomic_write(layout.request_path, document, durable=False)
    metadata = {"docket": procdir.METADATA_VERSION,
                "request": request["name"], "version": request["version"],
                "execution": request["execution"], "execution_number": request["number"],
                "capability": capability.name, "parameters": parameters,
                "directory": str(directory), "output_dir": request.get("output_dir"),
                "created": request.get("created"), "files": names,
                "version_source": request.get("version_source")}
    atomic_write(layout.metadata_path, json.dumps(metadata, indent=2, sort_keys=True),
                 durable=False)
    dag_path = directory / WORKFLOW_FILE
    nodes, submits = _read_workflow(dag_path, dag_text)
    for run_dir, submit in submits:  # what a job writes into products/ comes back
        if submit.is_file():
            return_products(submit, run_dir, shared_filesystem)
    return Rendered(directory, dag_path, written, _check(nodes, submits))


def check_workflow(dag_path: Path) -> int:
    """Check a rendered DAG and its submit files; return the node count."""
    return _check(*_read_workflow(dag_path))


def _read_workflow(dag_path: Path, text: str | None = None
                   ) -> tuple[int, list[tuple[Path, Path]]]:
    """The DAG's node count (``text``, else read from ``dag_path``) and the submit files
    it names, each with the directory condor_submit reads it from (the DAG's, or the
    node's DIR); inline descriptions and SUBDAG EXTERNAL nodes have none."""
    if text is None and not dag_path.is_file():
        raise RenderError(f"the capability rendered no {WORKFLOW_FILE}",
                          "name the DAG template workflow.dag.j2")
    try:
        summary = check_dag(read_dag_text(dag_path) if text is None else text, dag_path)
    except DagError as exc:
        raise RenderError(str(exc), "fix the DAG template") from None
    runs_in = [(dag_path.parent / folder if folder else dag_path.parent, name)
               for folder, name in sorted(summary.submit_files, key=str)]
    return summary.nodes, [(run_dir, run_dir / name) for run_dir, name in runs_in]


def _check(nodes: int, submits: list[tuple[Path, Path]]) -> int:
    problems: list[str] = []
    for _, path in submits:
        if not path.is_file():
            problems.append(f"{path.name}: submit file named in the DAG does not exist")
            continue
        problems.extend(check_submit(path))
    if problems:
        raise RenderError("; ".join(problems), "fix the capability's templates")
    return nodes
