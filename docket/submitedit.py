"""Add docket's own lines to a rendered submit file, idempotently and readably.

Sites (accounting group, requirements, ...) and the failure policy (more memory, hosts to
avoid) change rendered submit files. Each writer owns one block, marked by a tag and put
just before the first ``queue`` line, so writing it again replaces it instead of adding a
second copy, and a DA reading the file sees exactly what docket added::

    # docket:site begin (written by docket; do not edit)
    # site chtc
    accounting_group = group_vlass
    if defined requirements
      requirements = ($(requirements)) && (OpSysMajorVer == 9)
    else
      requirements = (OpSysMajorVer == 9)
    endif
    # docket:site end

``requirements`` are combined with whatever the template (or an earlier block) set, with
the submit language's own ``if defined``, so blocks compose in any order. Every value goes
through ``docket.quoting.quote``: a newline can never add a submit command, and a ``$``
can never expand a macro.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from docket.quoting import quote

__all__ = ["edit_submit", "remove_block", "classad_string"]

_QUEUE = re.compile(r"^\s*queue(\s|$)", re.IGNORECASE)
_KEY = re.compile(r"^\+?[A-Za-z_][A-Za-z0-9_.]*$")


def _begin(tag: str) -> str:
    return f"# docket:{tag} begin (written by docket; do not edit)"


def _end(tag: str) -> str:
    return f"# docket:{tag} end"


def classad_string(value: str) -> str:
    """A ClassAd string literal (``"..."`` with ``\\`` and ``"`` escaped)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def remove_block(text: str, tag: str) -> str:
    """``text`` without the block that ``tag`` owns (unchanged when there is none)."""
    lines = text.splitlines(keepends=True)
    begin = _begin(tag).split(" (", 1)[0]
    out: list[str] = []
    inside = False
    for line in lines:
        stripped = line.strip()
        if not inside and (stripped == begin or stripped.startswith(begin + " ")):
            inside = True
            continue
        if inside:
            if stripped == _end(tag):
                inside = False
            continue
        out.append(line)
    return "".join(out)


def edit_submit(text: str, tag: str, attributes: Mapping[str, object],
                requirements: Sequence[str] = (), comment: str = "") -> str:
    """``text`` with ``tag``'s block set to ``attributes`` and extra ``requirements``.

    With nothing to write, the block is removed. ``requirements`` are ClassAd expressions,
    each and-ed to the job's own. ``comment`` (one line) heads the block, for people.
    """
    text = remove_block(text, tag)
    body: list[str] = []
    if comment:
        body.append(f"# {' '.join(comment.split())}\n")
    for key, value in attributes.items():
        if not _KEY.match(key):
            raise ValueError(f"{key!r} is not a submit command name")
        if key.lower() == "requirements":
            requirements = [str(value), *requirements]
            continue
        body.append(f"{key} = {quote(value, 'submit')}\n")
    if requirements:
        joined = " && ".join(f"({quote(r, 'submit')})" for r in requirements)
        body += ["if defined requirements\n",
                 f"  requirements = ($(requirements)) && {joined}\n",
                 "else\n",
                 f"  requirements = {joined}\n",
                 "endif\n"]
    if len(body) == (1 if comment else 0):
        return text
    block = [_begin(tag) + "\n", *body, _end(tag) + "\n"]
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    at = next((i for i, line in enumerate(lines) if _QUEUE.match(line)), len(lines))
    return "".join(lines[:at] + block + lines[at:])
