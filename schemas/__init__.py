"""The pydantic models of every docket document and config file: the single definition.

``make schemas`` (``python -m schemas``) writes one ``<kind>.schema.json`` per model
beside this file, for editors and pre-commit checks; a test fails when they are stale.
"""

from schemas.capability import CapabilityDefinition, ParameterSpec, QueueSettings, StageSpec
from schemas.documents import (
    API_VERSION,
    KINDS,
    CapabilityRequest,
    CapabilityRequestSpec,
    Metadata,
)
from schemas.home import HomeConfig

__all__ = [
    "API_VERSION",
    "KINDS",
    "CapabilityRequest",
    "CapabilityRequestSpec",
    "Metadata",
    "CapabilityDefinition",
    "ParameterSpec",
    "QueueSettings",
    "StageSpec",
    "HomeConfig",
    "SCHEMA_FILES",
]

# file name -> model; the files are generated, never edited by hand.
SCHEMA_FILES = {
    "CapabilityRequest.schema.json": CapabilityRequest,
    "capability.schema.json": CapabilityDefinition,
    "docket-home.schema.json": HomeConfig,
}
