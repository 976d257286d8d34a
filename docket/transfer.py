"""The products rule: what a job writes into ``products/`` comes back, listed or not.

A job that runs in a scratch directory (``should_transfer_files = YES``, or any vanilla
job on a site without a shared filesystem) returns only what HTCondor's rule returns:
the files its ``transfer_output_files`` lists, or without a list the changed top-level
files and no subdirectory. A template that lists ``rawdata`` or ``working`` would so lose
a product its job wrote that nobody listed. After rendering, docket therefore adds
``products`` to every such list, in the submit file itself, so the local engine (strict
or not) and a pool read the same rule from the same file.

A listed directory that the job did not create holds the job (hold code 12), so a job
that receives no ``products`` of its own is given an empty one from
``.docket-empty/products`` in the processing directory; what comes back is then only
what the job wrote there, and joins the processing directory's ``products/``.

Left alone: ``transfer_output_files = ""`` (the template asks for nothing back), and a
description with no list at all: HTCondor's default cannot be widened by one directory
without naming the rest, so a job that writes products must list its outputs (every
shipped capability does).
"""

from __future__ import annotations

import re
from pathlib import Path

from docket.fileio import atomic_write
from docket.procdir import PRODUCTS
from docket.submit import sandboxed

__all__ = ["EMPTY_PRODUCTS", "return_products"]

# an empty directory named products/, transferred in where the job gets none of its own
EMPTY_PRODUCTS = f".docket-empty/{PRODUCTS}"

_ASSIGNMENT = re.compile(r"^\s*([A-Za-z_][\w.+]*)\s*=\s*(.*?)\s*$")
_QUEUE = re.compile(r"^\s*queue\b", re.IGNORECASE)


def _items(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _names_products(value: str) -> bool:
    """Whether an output list names products/ (itself, or its contents with ``/``)."""
    return PRODUCTS in (item.rstrip("/") for item in _items(value))


def _brings_products(value: str) -> bool:
    """Whether an input list makes a products/ directory in the scratch directory (a
    trailing ``/`` transfers only the contents)."""
    return any(Path(item).name == PRODUCTS and not item.endswith("/")
               for item in _items(value))


def return_products(path: Path, run_dir: Path, shared_filesystem: bool) -> bool:
    """Rewrite the submit file at ``path`` (submitted from ``run_dir``, the DAG's
    directory or the node's DIR) so its job returns ``products/``; True when it was
    changed. Only the commands before the first ``queue`` are read: a description that
    changes them between queue statements is left as written."""
    lines = path.read_text().splitlines(keepends=True)
    last: dict[str, tuple[int, str]] = {}  # command (lower case) -> (line index, value)
    queue_at = len(lines)
    for index, line in enumerate(lines):
        if _QUEUE.match(line):
            queue_at = index
            break
        match = _ASSIGNMENT.match(line)
        if match:
            last[match[1].lower()] = (index, match[2])
    universe = last.get("universe", (0, "vanilla"))[1].lower()
    should = last.get("should_transfer_files", (0, ""))[1]
    if not sandboxed(universe, should, shared_filesystem) or "transfer_output_files" not in last:
        return False
    out_at, outputs = last["transfer_output_files"]
    if outputs in ('""', "") or _names_products(outputs):
        return False
    lines[out_at] = f"transfer_output_files = {outputs},{PRODUCTS}\n"
    in_at, inputs = last.get("transfer_input_files", (None, ""))
    if not _brings_products(inputs):
        initialdir = last.get("initialdir", (0, ""))[1]
        empty = run_dir / EMPTY_PRODUCTS
        empty.mkdir(parents=True, exist_ok=True)
        # relative to initialdir, as transfer_input_files is; absolute where it moved
        source = EMPTY_PRODUCTS if not initialdir else str(empty)
        joined = f"{inputs},{source}" if inputs else source
        if in_at is None:
            lines.insert(queue_at, f"transfer_input_files = {joined}\n")
        else:
            lines[in_at] = f"transfer_input_files = {joined}\n"
    atomic_write(path, "".join(lines), durable=False)
    return True
