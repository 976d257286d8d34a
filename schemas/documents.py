"""Spool documents: ``apiVersion``, ``kind``, ``metadata``, ``spec``, as GitOps users expect."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

__all__ = ["API_VERSION", "KINDS", "NAME_PATTERN", "Name", "Metadata", "CapabilityRequestSpec",
           "CapabilityRequest", "ParameterValue"]

API_VERSION = "docket/v1"

# Kubernetes-style names: they become folder names and DAG node names.
NAME_PATTERN = r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$"
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]

Scalar = str | int | float | bool
ParameterValue = Scalar | list[Scalar]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Metadata(_Strict):
    name: Name = Field(description="Request name: lower-case letters, digits, '.', '_', '-'; "
                                   "at most 63 characters. The same name with a changed spec "
                                   "is a new version.")
    labels: dict[Annotated[str, StringConstraints(max_length=63)],
                 Annotated[str, StringConstraints(max_length=253)]] = Field(default_factory=dict)
    submitter: str | None = Field(default=None,
                                  description="Informational; the actor is the file owner.")


class CapabilityRequestSpec(_Strict):
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


class CapabilityRequest(_Strict):
    apiVersion: Literal["docket/v1"]  # noqa: N815 - the document's own field name
    kind: Literal["CapabilityRequest"]
    metadata: Metadata
    spec: CapabilityRequestSpec


# kind -> model; intake rejects any other kind with this list in the reason.
KINDS: dict[str, type[BaseModel]] = {"CapabilityRequest": CapabilityRequest}


