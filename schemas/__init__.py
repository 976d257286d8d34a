"""The pydantic models of every docket document and config file: the single definition.

``make schemas`` (``python -m schemas``) writes one ``<kind>.schema.json`` per model
beside this file, for editors and pre-commit checks; a test fails when they are stale.

Every model is declared with ``defer_build=True``: pydantic builds a model's validator
the first time it validates, not at import, so a command pays only for the documents it
reads (a tick reads requests and capability definitions, not sites or notifications;
building all ~50 validators at import cost every docket process ~0.06 CPU-s).
"""

from schemas.analysts import AnalystsFile
from schemas.capability import CapabilityDefinition, ParameterSpec, QueueSettings, StageSpec
from schemas.documents import (
    API_VERSION,
    KINDS,
    Cancel,
    CapabilityRequest,
    CapabilityRequestSpec,
    Decision,
    Metadata,
    QueueChange,
    Resubmit,
    Seal,
)
from schemas.home import HomeConfig
from schemas.notifications import NotificationsFile
from schemas.policy import FailurePolicy
from schemas.sites import SitesFile
from schemas.tasks import TaskWorkflow, TaskWorkflowSpec
from schemas.work import Work, WorkDocument

__all__ = [
    "API_VERSION",
    "KINDS",
    "CapabilityRequest",
    "CapabilityRequestSpec",
    "Metadata",
    "Decision",
    "Cancel",
    "Resubmit",
    "Seal",
    "QueueChange",
    "CapabilityDefinition",
    "ParameterSpec",
    "QueueSettings",
    "StageSpec",
    "HomeConfig",
    "AnalystsFile",
    "FailurePolicy",
    "SitesFile",
    "NotificationsFile",
    "SCHEMA_FILES",
]

# file name -> model; the files are generated, never edited by hand.
SCHEMA_FILES = {
    "CapabilityRequest.schema.json": CapabilityRequest,
    "Decision.schema.json": Decision,
    "Cancel.schema.json": Cancel,
    "Resubmit.schema.json": Resubmit,
    "Seal.schema.json": Seal,
    "QueueChange.schema.json": QueueChange,
    "capability.schema.json": CapabilityDefinition,
    "docket-home.schema.json": HomeConfig,
    "analysts.schema.json": AnalystsFile,
    "sites.schema.json": SitesFile,
    "failure-policy.schema.json": FailurePolicy,
    "notifications.schema.json": NotificationsFile,
    "TaskWorkflow.schema.json": TaskWorkflow,
    "ewms-workflow-request.schema.json": TaskWorkflowSpec,
    "Work.schema.json": WorkDocument,
    "chime-work.schema.json": Work,
}

