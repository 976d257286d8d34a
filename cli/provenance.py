"""``docket show NAME --provenance``: the lineage of a request's products."""

from __future__ import annotations

from typing import Any

from cli.common import emit


def show_provenance(home: Any, name: str, as_json: bool) -> int:
    from docket.drivers import provenance
    from docket.provenance import render_lineage

    result = provenance(home, name)
    emit(result, as_json, render_lineage)
    return 0
