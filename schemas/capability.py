"""``templates/<capability>/capability.yaml``: what a DA writes to add a capability."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints

from schemas.documents import Name, ParameterValue
from schemas.metadata import Strict
from schemas.policy import FailurePolicy

__all__ = ["ParameterSpec", "QueueSettings", "StageSpec", "MachineSpec", "OutputSpec",
           "CapabilityDefinition"]


class ParameterSpec(Strict):
    type: Literal["string", "int", "float", "bool", "list", "path"] = "string"
    default: ParameterValue | None = None
    required: bool = False
    description: str = ""
    choices: list[ParameterValue] | None = None
    minimum: float | None = None
    maximum: float | None = None
    max_length: int = Field(default=1024, ge=1)
    items: Literal["string", "path"] = Field(
        default="string", description="For a list: what each item is ('path': a relative "
                                      "path inside the processing directory).")


class QueueSettings(Strict):
    max_jobs: int = Field(default=2, ge=0, description="Concurrent executions.")
    paused: bool = False
    enabled: bool = True


class OutputSpec(Strict):
    path: str
    min_size_bytes: int = Field(default=0, ge=0)


class StageSpec(Strict):
    name: Name
    description: str = ""
    nodes: list[Annotated[str, StringConstraints(min_length=1)]] = Field(
        description="DAG node names or shell-style patterns (process_*).")
    outputs: list[OutputSpec] = Field(default_factory=list)


class MachineSpec(Strict):
    states: list[Name]
    initial: Name
    final: list[Name]
    transitions: list[str] = Field(
        description="'[state] -<event>{action, ...}-> [next]'; '{...}' is optional.")


class CapabilityDefinition(Strict):
    name: Name
    extends: Name | None = Field(
        default=None, description="Another capability whose settings, parameters and "
                                  "templates this one reuses; what this file sets wins.")
    description: str = ""
    parameters: dict[Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")],
                     ParameterSpec] = Field(default_factory=dict)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    state_machine: Name | MachineSpec = Field(
        default="simple", description="A machine from templates/_machines/ (simple, single-qa,"
                                      " two-stage-qa) or one spelt out here.")
    enabled: bool = Field(default=True, description="A disabled capability rejects requests.")
    requires_qa: bool = Field(
        default=False, description="Results need a QA pass; the machine must have a qa-pass "
                                   "transition. Passing one version seals the request.")
    single_version_only: bool = Field(
        default=False, description="A changed request is rejected instead of becoming a new "
                                   "version.")
    start_state: Name | None = Field(
        default=None, description="State new executions start in (default: the machine's "
                                  "initial state).")
    on_new_version: Literal["wait", "cancel"] = Field(
        default="wait", description="When a new version arrives while an older one runs: let "
                                    "it finish first (wait) or stop it (cancel).")
    submitters: list[str] | None = Field(
        default=None, description="Who may submit requests: user names, or @group. "
                                  "Default: anyone.")
    timeout_s: float | None = Field(
        default=None, gt=0, description="An execution running longer is stopped and failed.")
    failure_policy: Name | FailurePolicy = Field(
        default="default", description="A policy from templates/_policies/ or one spelt out "
                                       "here: what to do when a node fails.")
    cluster_locations: list[Name] = Field(
        default_factory=list, description="Sites to try in order (default: sites.yaml's "
                                          "default, else local).")
    stages: list[StageSpec] = Field(default_factory=list)
    workflow: str = Field(default="workflow.dag.j2",
                          description="The DAG template; submit templates sit beside it.")
    example: dict[str, Any] | None = Field(
        default=None, description="Example parameters, used by tests and docs.")
