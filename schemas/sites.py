"""``<home>/sites.yaml``: where executions may run, and what each place needs.

The site named ``local`` is the embedded local engine (this machine, no daemons); every
other site is an HTCondor pool reached through a schedd. Without a ``sites.yaml`` the only
site is ``local``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from schemas.documents import Name
from schemas.metadata import Strict

__all__ = ["ScheddLocation", "SiteLimits", "Site", "SitesFile", "LOCAL_SITE",
           "RESERVED_SUBMIT_KEYS", "DAGMAN_OPTIONS"]

LOCAL_SITE = "local"

# A site may add constraints and bookkeeping to a job, never change what runs or where its
# files go: those belong to the capability's templates.
RESERVED_SUBMIT_KEYS = frozenset({
    "executable", "arguments", "args", "environment", "env", "initialdir", "iwd", "input",
    "output", "error", "log", "queue", "transfer_input_files", "transfer_output_files",
    "transfer_executable", "should_transfer_files", "when_to_transfer_output", "getenv",
    "request_memory",  # the failure policy owns it (retry-with-more-memory)
})

# condor_submit_dag options a site may set (htcondor2.Submit.from_dag_options()).
DAGMAN_OPTIONS = frozenset({"MaxJobs", "MaxIdle", "MaxPre", "MaxPost", "MaxHold", "Priority",
                            "ConfigFile", "Notification", "SuppressNotification"})

SubmitKey = Annotated[str, StringConstraints(pattern=r"^\+?[A-Za-z_][A-Za-z0-9_.]*$",
                                             max_length=128)]
SubmitValue = Annotated[str, StringConstraints(max_length=4096)] | int | float | bool


class ScheddLocation(Strict):
    collector: Annotated[str, StringConstraints(min_length=1, max_length=255)] = Field(
        description="The pool's central manager, host[:port].")
    name: Annotated[str, StringConstraints(min_length=1, max_length=255)] = Field(
        description="The schedd's Name as the collector knows it (condor_status -schedd).")


class SiteLimits(Strict):
    max_running: int | None = Field(
        default=None, ge=0,
        description="Executions running at this site at once (none: no limit; 0: none).")


class Site(Strict):
    name: Name
    description: str = ""
    enabled: bool = Field(default=True, description="A disabled site takes no new executions.")
    schedd: Literal["local"] | ScheddLocation | None = Field(
        default=None,
        description="How to reach the pool's schedd: 'local' (the schedd of this machine's "
                    "HTCondor) or a collector and a schedd name. Required for every site but "
                    "'local', which is the embedded engine and has none.")
    submit_attributes: dict[SubmitKey, SubmitValue] = Field(
        default_factory=dict,
        description="Added to every rendered submit file: requirements (combined with the "
                    "template's own by &&), accounting_group, +DESIRED_Sites, ...")
    dagman_options: dict[str, int | str | bool] = Field(
        default_factory=dict,
        description="condor_submit_dag options for the DAGMan job (MaxJobs, MaxIdle, ...).")
    limits: SiteLimits = Field(default_factory=SiteLimits)
    shared_filesystem: bool = Field(
        default=True,
        description="Whether the pool's execute nodes see this machine's filesystem (the "
                    "tools' venv, the processing directory). false: node jobs run the "
                    "tools from their PEX files, transferred with the job, and everything "
                    "a job reads or writes is transferred (for 'local': the local engine "
                    "runs every job in a sandbox that sees only its transferred files).")
    pex_dir: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = Field(
        default=None,
        description="Where the tools' PEX files are on this machine, for a site without a "
                    "shared filesystem (default: dist/ beside docket's source, where 'make "
                    "pex' writes them).")

    @model_validator(mode="after")
    def _check(self) -> Site:
        if self.name == LOCAL_SITE and self.schedd is not None:
            raise ValueError("the site 'local' is the embedded engine; it has no schedd "
                             "(name a pool on this machine differently, with schedd: local)")
        if self.name != LOCAL_SITE and self.schedd is None:
            raise ValueError(f"site {self.name!r} needs a schedd: 'local' or "
                             "{collector: HOST, name: SCHEDD}")
        reserved = sorted(k for k in self.submit_attributes
                          if k.lower().lstrip("+") in RESERVED_SUBMIT_KEYS)
        if reserved:
            raise ValueError(f"submit_attributes may not set {', '.join(reserved)}: the "
                             "capability's templates (or the failure policy) own them")
        unknown = sorted(set(self.dagman_options) - DAGMAN_OPTIONS)
        if unknown:
            raise ValueError(f"unknown dagman_options {', '.join(unknown)}; allowed: "
                             f"{', '.join(sorted(DAGMAN_OPTIONS))}")
        return self


class SitesFile(Strict):
    default: list[Name] = Field(
        default_factory=lambda: [LOCAL_SITE],
        description="Sites tried, in order, for a capability or request that names no "
                    "cluster_locations.")
    sites: list[Site] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> SitesFile:
        seen: set[str] = set()
        for site in self.sites:
            if site.name in seen:
                raise ValueError(f"site {site.name!r} is defined twice")
            seen.add(site.name)
        return self
