"""The composition root: one home's store, rules and engines, built in one place.

``open_home`` wires the library together once; the watcher and the drivers take what
they need from the ``Docket`` it returns instead of building their own. Building one
writes nothing: the database is opened on first use, and the writes a home needs
before a pass (its folders, the schema brought up to date, archive copies a power cut
took) are ``prepare``, which the watcher's first pass runs. So a command that only
reads, opened with ``readonly=True``, leaves the home exactly as it was.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from docket.home import Home, resolve_home

if TYPE_CHECKING:
    from docket.capabilities import CapabilityCache
    from docket.engines.registry import Engines
    from docket.intake import Intake
    from docket.rules import Rules
    from docket.store import Store

__all__ = ["Docket", "open_home"]

log = logging.getLogger("docket.app")


class Docket:
    """One open home. ``readonly`` opens its database read-only and refuses ``prepare``;
    a home that never ran has no database then, which is an error (``NotFound``, saying
    to run a pass first) unless ``empty_if_new``, where it reads as an empty one."""

    def __init__(self, home: Home, *, readonly: bool = False,
                 empty_if_new: bool = False) -> None:
        self.home = home
        self.readonly = readonly
        self.empty_if_new = empty_if_new
        self._store: Store | None = None
        self._prepared = False

    @property
    def store(self) -> Store:
        """The home's database, opened (and, when writable, migrated) on first use."""
        if self._store is None:
            self._store = self._open_store()
        return self._store

    def _open_store(self) -> Store:
        from docket.store import Store

        if self.readonly:
            if self.empty_if_new and not self.home.database.is_file():
                return Store(Path(":memory:"))
            return Store.open_readonly(self.home.database)
        from docket.notify import Planner

        store = Store(self.home.database)
        Planner.attach(self.home, store)  # every event may plan notifications
        return store

    # built on first use: a command pays only for the parts it needs (imports included)
    @cached_property
    def capabilities(self) -> CapabilityCache:
        from docket.capabilities import CapabilityCache

        return CapabilityCache(self.home.templates)

    @cached_property
    def engines(self) -> Engines:
        from docket.engines.registry import Engines

        return Engines(self.home.config)

    @cached_property
    def rules(self) -> Rules:
        from docket.rules import Rules

        return Rules(self.store, self.capabilities, self.home.work)

    @cached_property
    def intake(self) -> Intake:
        from docket.intake import Intake

        return Intake(self.home, self.store, self.rules, self.capabilities)

    def prepare(self) -> None:
        """The writes a pass needs first, once: the spool and state folders, the database
        at the current schema, and the archive copies of the last day put back if a power
        cut took them (they are written without fsync)."""
        if self._prepared:
            return
        if self.readonly:
            raise RuntimeError("a read-only home cannot be prepared for a pass")
        from docket.intake import repair_archive

        self.home.ensure()
        yesterday = datetime.now(UTC) - timedelta(days=1)
        repair_archive(self.store, self.home.accepted, yesterday.strftime("%Y-%m-%dT%H:%M:%S"))
        self._prepared = True

    def load_sites(self) -> None:
        """Read sites.yaml (if any) for this pass; a broken file keeps the last good one.
        Each site's engine is built again when its settings change."""
        from docket.errors import DocketError
        from docket.sites import SITES_FILE, load_sites

        if not (self.home.root / SITES_FILE).is_file():
            self.rules.sites = None
        else:
            try:
                self.rules.sites = load_sites(self.home.root)
            except DocketError as exc:
                log.error("%s; keeping the sites read before", exc)
        self.engines.use_sites(self.rules.sites)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> Docket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_home(home: Home | Path | None = None, *, readonly: bool = False,
              empty_if_new: bool = False) -> Docket:
    """The home at ``home`` (a resolved ``Home``, a folder, or None for ``$DOCKET_HOME``
    or the current directory), with nothing opened or written yet."""
    if not isinstance(home, Home):
        home = resolve_home(home)
    return Docket(home, readonly=readonly, empty_if_new=empty_if_new)
