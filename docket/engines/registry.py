"""Which engine runs a site: the one table from an engine's name to its class.

A site's engine name comes from ``docket.sites.engine_name`` (``local`` for the site
``local``, ``htcondor`` for every pool); nothing else in docket names an engine class.
``Engines`` builds the engines of one home's sites on first use, and again when a site's
settings in ``sites.yaml`` change.

To add an engine: write a class that implements ``docket.engines.base.Engine`` with a
``for_site(site, config)`` constructor, and add it to ``ENGINES``.
"""

from __future__ import annotations

from typing import Any

from docket.engines.base import Engine
from docket.engines.htcondor import HTCondorEngine
from docket.engines.local import LocalEngine
from docket.errors import Invalid
from docket.sites import LOCAL_SITE, Site, SitesFile, engine_name

__all__ = ["ENGINES", "engine_class", "build_engine", "Engines"]

ENGINES: dict[str, type[Engine]] = {LocalEngine.name: LocalEngine,
                                    HTCondorEngine.name: HTCondorEngine}


def engine_class(name: str) -> type[Engine]:
    """The engine class registered as ``name``; a clear error naming the known ones."""
    try:
        return ENGINES[name]
    except KeyError:
        raise Invalid(f"unknown engine {name!r}",
                      f"known engines: {', '.join(sorted(ENGINES))}") from None


def build_engine(site_name: str, site: Site | None, config: Any = None) -> Engine:
    """The engine of the site ``site_name``, set up from its settings (``site`` is None
    for a site no longer in ``sites.yaml``: its engine still follows what runs there)."""
    cls = engine_class(engine_name(site if site is not None else site_name))
    return cls.for_site(site, config)


class Engines:
    """The engines of one home's sites. ``config`` is the home's configuration (the local
    engine's job limits); ``use_sites`` gives the sites read for this pass."""

    def __init__(self, config: Any = None) -> None:
        self.config = config
        self.sites: SitesFile | None = None
        self._built: dict[str, tuple[Site | None, Engine]] = {}

    def use_sites(self, sites: SitesFile | None) -> None:
        self.sites = sites

    def _site(self, name: str) -> Site | None:
        return next((s for s in (self.sites.sites if self.sites else [])
                     if s.name == name), None)

    def for_site(self, name: str | None) -> Engine:
        """The engine of the site ``name`` (``local`` when None)."""
        name = name or LOCAL_SITE
        site = self._site(name)
        built = self._built.get(name)
        if built is not None and built[0] == site:
            return built[1]
        engine = build_engine(name, site, self.config)
        self._built[name] = (site, engine)
        return engine

    def install(self, name: str, engine: Engine) -> None:
        """Use ``engine`` for the site ``name`` until its settings change (tests give a
        recorded pool's engine this way)."""
        self._built[name] = (self._site(name), engine)

    def reap(self) -> None:
        for _site, engine in self._built.values():
            engine.reap()
