"""CHIME/FRB's Work object: one unit of work of a pipeline, with its whole bookkeeping.

Every field of CHIME's ``Work`` (chimefrb/workflow ``workflow/definitions/work.py``),
with its defaults and limits: ``timeout`` 3600 s (1 s to 24 h), ``retries`` 2 (below 6),
``priority`` 3 (1 to 5, 5 first), ``attempt`` 0, ``status`` created. The fields the
backend sets (``id``, ``creation``, ``start``, ``stop``, ``attempt``, ``status``) may be
given, as CHIME allows, and docket sets them when it deposits the work.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.metadata import Metadata, Strict

__all__ = ["Work", "WorkDocument", "WORK_STATUSES", "Precursor"]

WORK_STATUSES = ("created", "queued", "running", "success", "failure")


class Precursor(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)
    pipeline: str
    id: str


class Work(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    pipeline: str = Field(min_length=1, max_length=128,
                          description="Name of the pipeline, hyphen-case (my_pipe -> my-pipe).")
    site: str = Field(min_length=1, max_length=64, description="Where the work is done.")
    user: str = Field(min_length=1, max_length=64, description="Who created the work.")
    function: str | None = Field(default=None, description="module.function to call.")
    command: list[str] | None = Field(default=None, description="A command to run instead.")
    parameters: dict[str, Any] | None = Field(
        default=None, description="Keyword arguments: function(**parameters).")
    results: dict[str, Any] | None = None
    products: list[str] | None = None
    plots: list[str] | None = None
    path: str = Field(default=".", description="Where products and plots are written.")
    event: list[int] | None = Field(default=None, description="Event ids the work is for.")
    tags: list[str] | None = None
    group: str | None = None
    timeout: int = Field(default=3600, ge=1, le=86400)
    retries: int = Field(default=2, ge=0, lt=6)
    priority: int = Field(default=3, ge=1, le=5)
    archive: bool = Field(default=True, description="Keep products and plots.")
    precursors: list[Precursor] | None = Field(
        default=None, description="Works (pipeline and id) this one comes after.")
    config: dict[str, Any] = Field(default_factory=dict)
    notify: dict[str, Any] = Field(default_factory=dict)
    id: str | None = None
    creation: float | None = None
    start: float | None = None
    stop: float | None = None
    attempt: int = Field(default=0, ge=0)
    status: Literal["created", "queued", "running", "success", "failure"] = "created"

    @field_validator("pipeline")
    @classmethod
    def _hyphen_case(cls, value: str) -> str:
        value = value.lower().replace(" ", "-").replace("_", "-")
        if not re.fullmatch(r"[a-z0-9-]+", value):
            raise ValueError("pipeline name can only contain letters, numbers & hyphens")
        return value

    @model_validator(mode="after")
    def _one_way(self) -> Work:
        if self.function and self.command:
            raise ValueError("only either function or command can be provided")
        return self


class WorkDocument(Strict):
    """A Work as a docket spool document: ``kind: Work``, the Work's fields in ``spec``."""

    apiVersion: Literal["docket/v1"]  # noqa: N815
    kind: Literal["Work"]
    metadata: Metadata
    spec: Work
