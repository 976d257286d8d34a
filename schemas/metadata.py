"""The parts every spool document shares: ``apiVersion``, names and ``metadata``.

Its own module so that the models of each kind (``schemas.documents``, ``schemas.tasks``,
``schemas.work``) import it, and ``schemas.documents`` can list every kind without a circle.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

__all__ = ["API_VERSION", "NAME_PATTERN", "Name", "Metadata", "Scalar", "ParameterValue",
           "Strict"]

API_VERSION = "docket/v1"

# Kubernetes-style names: they become folder names and DAG node names.
NAME_PATTERN = r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$"
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]

Scalar = str | int | float | bool
ParameterValue = Scalar | list[Scalar]


class Strict(BaseModel):
    """The base of every schema model: unknown fields are errors, a parsed document does
    not change, and the validator is built on first use (see ``schemas``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class Metadata(Strict):
    name: Name = Field(description="Request name: lower-case letters, digits, '.', '_', '-'; "
                                   "at most 63 characters. The same name with a changed spec "
                                   "is a new version.")
    labels: dict[Annotated[str, StringConstraints(max_length=63)],
                 Annotated[str, StringConstraints(max_length=253)]] = Field(default_factory=dict)
    submitter: str | None = Field(default=None,
                                  description="Informational; the actor is the file owner.")
