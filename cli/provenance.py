"""``docket show NAME --provenance``: the lineage of a request's products."""

from __future__ import annotations

from typing import Any

from cli.common import emit


def show_provenance(home: Any, name: str, as_json: bool) -> int:
    from docket.errors import NotFound
    from docket.provenance import lineage, render_lineage
    from docket.store import Store

    store = Store.open_readonly(home.database)
    try:
        result = lineage(store, name)
    finally:
        store.close()
    if result is None:
        raise NotFound(f"no request named {name!r}", "see 'docket status' for the names")
    emit(result, as_json, render_lineage)
    return 0
