"""The pure parts of task workflows: sizes, directive ids, container command lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from docket.container import ContainerUnavailable, Runtime, container_command
from schemas.tasks import parse_size_mb


@pytest.mark.parametrize(("text", "mb"), [("512M", 512), ("2G", 2048), ("1.5GB", 1536),
                                          ("100MiB", 100), ("1024K", 1), ("1k", 1),
                                          ("1T", 1024 * 1024), ("3 G", 3072)])
def test_sizes_as_ewms_users_write_them(text: str, mb: int) -> None:
    assert parse_size_mb(text) == mb


@pytest.mark.parametrize("text", ["2", "512", "0M", "-1G", "1X", "G", "1.G", "2 GBs", ""])
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="size|more than zero"):
        parse_size_mb(text)


def test_a_changed_task_is_a_new_directive() -> None:
    from docket.tasks import plan
    from schemas.tasks import TaskWorkflowSpec
    from tests.tasks.taskkit import EWMS_EXAMPLE

    first, _ = plan(TaskWorkflowSpec.model_validate(EWMS_EXAMPLE), Path("/nowhere"))
    again, _ = plan(TaskWorkflowSpec.model_validate(EWMS_EXAMPLE), Path("/nowhere"))
    changed = {**EWMS_EXAMPLE, "tasks": [{**EWMS_EXAMPLE["tasks"][0], "task_args": "true"}]}
    other, _ = plan(TaskWorkflowSpec.model_validate(changed), Path("/nowhere"))
    assert first["directives"][0]["task_id"] == again["directives"][0]["task_id"]
    assert first["directives"][0]["task_id"] != other["directives"][0]["task_id"]
    # worker_config is the taskforce's, not the directive's: more workers, same directive
    more = {**EWMS_EXAMPLE, "tasks": [{**EWMS_EXAMPLE["tasks"][0], "n_workers": 5}]}
    bigger, _ = plan(TaskWorkflowSpec.model_validate(more), Path("/nowhere"))
    assert bigger["directives"][0]["task_id"] == first["directives"][0]["task_id"]
    force = first["taskforces"][0]
    assert (force["location"], force["n_workers"], force["request_memory_mb"],
            force["request_disk_kb"], force["allowed_job_duration"], force["priority"]) == (
        "osg", 1000, 512, 512 * 1024, 600, 99)


def test_podman_mounts_the_work_directory_and_never_pulls(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    monkeypatch.delenv("DOCKET_PODMAN_OPTIONS", raising=False)
    cmd = container_command(Runtime("podman", "/usr/bin/podman"), "docker://busybox:1",
                            ["cat", "x y"], workdir=tmp_path, environment={"A": "1"})
    assert cmd[0] == "/usr/bin/podman" and "--storage-driver=vfs" in cmd
    assert f"--volume={tmp_path}:{tmp_path}" in cmd and f"--workdir={tmp_path}" in cmd
    assert "--env=A=1" in cmd and "--pull=never" in cmd
    assert cmd[-3:] == ["busybox:1", "cat", "x y"]
    rootfs = container_command(Runtime("podman", "/usr/bin/podman"), str(tmp_path), ["true"],
                               workdir=tmp_path)
    assert rootfs[-3:] == ["--rootfs", str(tmp_path), "true"]


def test_apptainer_execs_the_command_not_the_runscript(tmp_path: Path) -> None:
    cmd = container_command(Runtime("apptainer", "/usr/bin/apptainer"), "/cvmfs/x/img:1",
                            ["cp", "a", "b"], workdir=tmp_path)
    assert cmd[:2] == ["/usr/bin/apptainer", "exec"]
    assert f"--bind={tmp_path}:{tmp_path}" in cmd and cmd[-4:] == ["/cvmfs/x/img:1", "cp",
                                                                    "a", "b"]


def test_no_runtime_says_what_to_install(monkeypatch: pytest.MonkeyPatch,
                                         tmp_path: Path) -> None:
    from docket.container import find_runtime

    monkeypatch.delenv("DOCKET_CONTAINER_RUNTIME", raising=False)
    with pytest.raises(ContainerUnavailable) as caught:
        find_runtime(path=str(tmp_path))
    assert "no container runtime is installed" in caught.value.what
    assert "apt-get install podman" in caught.value.hint
