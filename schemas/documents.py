"""Spool documents: ``apiVersion``, ``kind``, ``metadata``, ``spec``, as GitOps users expect."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

from schemas.metadata import (
    API_VERSION,
    NAME_PATTERN,
    Metadata,
    Name,
    ParameterValue,
    Strict,
)
from schemas.tasks import TaskWorkflow
from schemas.work import WorkDocument

__all__ = ["API_VERSION", "KINDS", "NAME_PATTERN", "Name", "Metadata", "CapabilityRequestSpec",
           "CapabilityRequest", "ParameterValue", "Decision", "Cancel", "Resubmit", "Seal",
           "QueueChange"]

class RequestOutput(Strict):
    path: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    min_size_bytes: int = Field(default=0, ge=0)


class CapabilityRequestSpec(Strict):
    capability: Name = Field(description="A folder under templates/ (quote the name null).")
    parameters: dict[Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")],
                     ParameterValue] = Field(default_factory=dict)
    priority: int = Field(default=0, ge=-1000, le=1000,
                          description="Higher runs first; ties run in arrival order.")
    files: list[Annotated[str, StringConstraints(min_length=1, max_length=4096)]] = Field(
        default_factory=list,
        description="Files to attach, relative to the spool's attachments root.")
    output_dir: str | None = Field(
        default=None, description="Processing directory to use instead of the home's work/.")
    tags: list[Annotated[str, StringConstraints(min_length=1, max_length=63)]] = Field(
        default_factory=list, description="Free labels to find executions by "
                                          "(docket results --tag).")
    group: Annotated[str, StringConstraints(max_length=253)] | None = Field(
        default=None, description="A group of related requests (a survey epoch, a project).")
    events: list[Annotated[str, StringConstraints(min_length=1, max_length=253)]] = Field(
        default_factory=list, description="Ids of the observatory events this work is for.")
    timeout_s: float | None = Field(default=None, gt=0,
                                    description="Stop and fail an execution running longer.")
    cluster_locations: list[Name] = Field(
        default_factory=list, description="Sites to try in order (default: the capability's).")
    outputs: list[RequestOutput] = Field(
        default_factory=list, description="Extra outputs this request expects (paths or globs "
                                          "relative to the processing directory).")


class CapabilityRequest(Strict):
    apiVersion: Literal["docket/v1"]  # noqa: N815 - the document's own field name
    kind: Literal["CapabilityRequest"]
    metadata: Metadata
    spec: CapabilityRequestSpec


Reason = Annotated[str, StringConstraints(min_length=1, max_length=2000)]


class DecisionSpec(Strict):
    request: Name
    version: int | None = Field(default=None, ge=1,
                                description="Default: the request's current version.")
    decision: Literal["qa-pass", "qa-fail", "approve", "reject", "retry"]
    reason: Reason


class Decision(Strict):
    """A person's decision about a request version (QA pass/fail, approve/reject)."""

    apiVersion: Literal["docket/v1"]  # noqa: N815
    kind: Literal["Decision"]
    metadata: Metadata
    spec: DecisionSpec


class CancelSpec(Strict):
    request: Name
    version: int | None = Field(default=None, ge=1, description="Default: every version.")
    reason: Reason


class Cancel(Strict):
    apiVersion: Literal["docket/v1"]  # noqa: N815
    kind: Literal["Cancel"]
    metadata: Metadata
    spec: CancelSpec


class ResubmitSpec(Strict):
    request: Name
    version: int | None = Field(default=None, ge=1,
                                description="Default: the request's current version.")
    reason: Reason
    rescue: bool = Field(default=False, description=(
        "Continue the failed execution from its rescue DAG: nodes it finished are not "
        "run again."))


class Resubmit(Strict):
    """A new execution of an existing version."""

    apiVersion: Literal["docket/v1"]  # noqa: N815
    kind: Literal["Resubmit"]
    metadata: Metadata
    spec: ResubmitSpec


class SealSpec(Strict):
    request: Name
    reason: Reason


class Seal(Strict):
    """No further versions of the request are accepted."""

    apiVersion: Literal["docket/v1"]  # noqa: N815
    kind: Literal["Seal"]
    metadata: Metadata
    spec: SealSpec


class QueueChangeSpec(Strict):
    capability: Name
    action: Literal["pause", "resume", "limit", "enable", "disable"]
    max_jobs: int | None = Field(default=None, ge=0, description="For action: limit.")
    reason: Reason


class QueueChange(Strict):
    """An operator's change to a capability queue."""

    apiVersion: Literal["docket/v1"]  # noqa: N815
    kind: Literal["QueueChange"]
    metadata: Metadata
    spec: QueueChangeSpec


# kind -> model; intake rejects any other kind with this list in the reason.
KINDS: dict[str, type[BaseModel]] = {
    "CapabilityRequest": CapabilityRequest, "Decision": Decision, "Cancel": Cancel,
    "Resubmit": Resubmit, "Seal": Seal, "QueueChange": QueueChange,
    "TaskWorkflow": TaskWorkflow, "Work": WorkDocument}

