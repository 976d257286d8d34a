"""``<home>/docket.yaml``: settings of one docket home (all optional)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["HomeConfig"]


class HomeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    templates_dir: str | None = Field(default=None,
                                      description="Capability folders (default: <home>/templates).")
    work_dir: str | None = Field(default=None,
                                 description="Processing directories (default: <home>/work).")
    tools_dir: str | None = Field(default=None,
                                  description="Where the tool executables live (default: the "
                                              "directory of the running Python).")
    attachments_dir: str | None = Field(default=None,
                                        description="Root that spec.files are relative to "
                                                    "(default: <home>/spool/attachments).")
    output_roots: list[str] = Field(
        default_factory=list,
        description="Absolute directories a request's output_dir may lie in (the work "
                    "directory is always allowed).")
    max_document_bytes: int = Field(default=1_048_576, ge=1024)
    max_yaml_nodes: int = Field(default=100_000, ge=100)
    unreadable_s: float = Field(default=60.0, ge=0,
                                description="A spool file that cannot be read (permissions, "
                                            "I/O errors) for this long after its last change "
                                            "is set aside in spool/rejected.")
    copy_slice_s: float = Field(default=0.5, gt=0,
                                description="Time spent copying attachments per pass, so a "
                                            "big copy never holds up intake.")
    settle_s: float = Field(default=2.0, ge=0,
                            description="Quiet time before a file counts as complete when its "
                                        "writers cannot be seen (network filesystems).")
    local_max_jobs: int | None = Field(default=None, ge=1,
                                       description="Node jobs at once per local DAG "
                                                   "(default: number of cores).")
    require_signed: bool = Field(
        default=False, description="GitOps: only documents whose last commit carries a "
                                   "good signature by its author count.")
    git_pull_interval_s: float = Field(default=60.0, gt=0,
                                       description="GitOps: how often 'docket watch --git' "
                                                   "pulls.")
    concurrency_limits: dict[str, float] = Field(
        default_factory=dict, description="The local engine's values for submit files' "
                                          "concurrency_limits names (HTCondor's <NAME>_LIMIT).")
    poll_interval_s: float = Field(default=0.5, gt=0,
                                   description="How often the watcher checks running work.")
