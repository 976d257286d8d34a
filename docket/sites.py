"""Sites: the places an execution may run, read from ``<home>/sites.yaml``.

The site ``local`` is the embedded local engine and always exists (the default when there
is no ``sites.yaml``); every other site is an HTCondor pool. A capability or a request
names ``cluster_locations``; ``choose_site`` takes the first of them that is enabled and
under its limit, and says why when none is. ``apply_site`` writes a site's extra submit
attributes into a rendered processing directory, the same way for both engines.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from docket.errors import Invalid
from docket.fileio import atomic_write
from docket.submitedit import edit_submit
from schemas.sites import LOCAL_SITE, Site, SitesFile

__all__ = ["SITES_FILE", "LOCAL_SITE", "Site", "SitesFile", "NoSite", "load_sites",
           "choose_site", "apply_site", "SITE_TAG", "engine_name"]

log = logging.getLogger("docket.sites")

SITES_FILE = "sites.yaml"


@dataclass(frozen=True)
class NoSite:
    """No site can take the execution. ``wait`` is True when one may later (a site at its
    limit); False when none ever will until ``sites.yaml`` changes."""

    reason: str
    wait: bool

    def __str__(self) -> str:
        return self.reason


def engine_name(site: Site | str) -> str:
    """The name of the engine that runs ``site`` (a site or a site's name), as
    ``docket.engines.registry`` knows it: ``local`` runs the site ``local``, HTCondor
    every other."""
    name = site if isinstance(site, str) else site.name
    return "local" if name == LOCAL_SITE else "htcondor"


def _with_local(config: SitesFile) -> SitesFile:
    if any(s.name == LOCAL_SITE for s in config.sites):
        return config
    return SitesFile(default=config.default, sites=[*config.sites, Site(name=LOCAL_SITE)])


def load_sites(home_root: Path) -> SitesFile:
    """``<home>/sites.yaml``, with the implicit ``local`` site; only ``local`` without one."""
    path = home_root / SITES_FILE
    if not path.is_file():
        return _with_local(SitesFile())
    from docket.documents import load_model_file

    config = load_model_file(path, SitesFile, Invalid,
                             "fix the sites file (see docs/htcondor.md)")
    known = {s.name for s in config.sites} | {LOCAL_SITE}
    unknown = [n for n in config.default if n not in known]
    if unknown:
        raise Invalid(f"{path}: default names unknown site(s) {', '.join(unknown)}",
                      f"known sites: {', '.join(sorted(known))}")
    return _with_local(config)


def choose_site(cluster_locations: Sequence[str] | None, sites: SitesFile,
                running_counts: Mapping[str, int]) -> Site | NoSite:
    """The first of ``cluster_locations`` (or the file's default) that is enabled and under
    its limit, given how many executions run at each site now."""
    names = list(cluster_locations or sites.default)
    by_name = {s.name: s for s in sites.sites}
    reasons: list[str] = []
    wait = False
    for name in names:
        site = by_name.get(name)
        if site is None:
            reasons.append(f"{name!r} is not in {SITES_FILE}")
            continue
        if not site.enabled:
            reasons.append(f"{name} is disabled")
            continue
        limit = site.limits.max_running
        running = running_counts.get(name, 0)
        if limit is not None and running >= limit:
            reasons.append(f"{name} has {running} of {limit} executions running")
            wait = True
            continue
        return site
    if not names:
        return NoSite("no cluster_locations and no default site", wait=False)
    return NoSite("no site can take it: " + "; ".join(reasons), wait=wait)


SITE_TAG = "site"


def apply_site(directory: Path, site: Site) -> list[Path]:
    """Write ``site``'s submit attributes into every ``<directory>/*.sub``; return the
    files changed. Writing again (or another site's attributes) replaces the block; it never
    adds a second one."""
    changed = []
    for path in sorted(directory.glob("*.sub")):
        if path.name.endswith(".condor.sub"):  # DAGMan's own job, written by from_dag
            continue
        text = path.read_text()
        new = edit_submit(text, SITE_TAG, dict(site.submit_attributes),
                          comment=f"site {site.name}")
        if new != text:
            atomic_write(path, new, durable=False)
            changed.append(path)
    if changed:
        log.info("%s: wrote site %s attributes into %d submit files", directory, site.name,
                 len(changed))
    return changed
