"""Run a command inside a container image on this machine: podman, apptainer or singularity.

HTCondor runs a ``container_image`` job in its container universe on the execution point;
the local engine (and the task worker, for EWMS ``task_image``/``init_image``) does the
same through a runtime found here. The image is either a name the runtime knows
(``localhost/busybox:1``, ``docker://...``) or a directory holding a root filesystem (an
apptainer sandbox, as EWMS images on CVMFS are), or a ``.sif`` file. The job's scratch
directory is mounted at the same path inside, and the job runs there, so
``{{INFILE}}``-style paths mean the same inside and out.

No runtime here means the job fails with a reason naming what to install: a job that asked
for an image never runs outside it.
"""

from __future__ import annotations

import os
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from docket.errors import DocketError

__all__ = ["ContainerUnavailable", "Runtime", "find_runtime", "container_command",
           "podman_command", "PODMAN_GLOBAL_OPTIONS", "PODMAN_RUN_OPTIONS", "RUNTIME_ENV"]

RUNTIME_ENV = "DOCKET_CONTAINER_RUNTIME"
# Rootful podman inside a sandbox or a batch node (no systemd, no overlay mounts, no
# journald, cgroups v1 and v2 mixed): cgroupfs, a file for events and the vfs storage
# driver work everywhere; crun refuses "hybrid" cgroup hosts where runc works, so runc is
# used when it is installed. The same global options must be used to import an image and
# to run it, so they live here and only here (``podman_command``);
# DOCKET_PODMAN_OPTIONS replaces them (e.g. '' on a workstation with rootless podman).
PODMAN_GLOBAL_OPTIONS = ("--cgroup-manager=cgroupfs", "--events-backend=file",
                         "--storage-driver=vfs")
# podman's default limits (1048576 open files) cannot be set by a process whose own hard
# limit is lower, as in most sandboxes: ask for ones any process may set.
# DOCKET_PODMAN_RUN_OPTIONS replaces them.
PODMAN_RUN_OPTIONS = ("--ulimit=nofile=4096:4096", "--ulimit=nproc=4096:4096")
_KNOWN = ("podman", "apptainer", "singularity")


class ContainerUnavailable(DocketError):
    code = "container-unavailable"


@dataclass(frozen=True)
class Runtime:
    name: str  # podman, apptainer or singularity
    path: str

    def global_options(self) -> list[str]:
        if self.name != "podman":
            return []
        if "DOCKET_PODMAN_OPTIONS" in os.environ:
            return shlex.split(os.environ["DOCKET_PODMAN_OPTIONS"])
        runc = ["--runtime=runc"] if shutil.which("runc") else []
        return [*PODMAN_GLOBAL_OPTIONS, *runc]

    def run_options(self) -> list[str]:
        if "DOCKET_PODMAN_RUN_OPTIONS" in os.environ:
            return shlex.split(os.environ["DOCKET_PODMAN_RUN_OPTIONS"])
        return list(PODMAN_RUN_OPTIONS)

    def base(self) -> list[str]:
        return [self.path, *self.global_options()]


def find_runtime(path: str | None = None) -> Runtime:
    """The first of podman, apptainer, singularity on PATH (or the one $DOCKET_CONTAINER_
    RUNTIME names); ``ContainerUnavailable`` says what to install."""
    wanted = os.environ.get(RUNTIME_ENV)
    names = [wanted] if wanted else list(_KNOWN)
    for name in names:
        found = shutil.which(name, path=path)
        if found:
            return Runtime(Path(name).name if Path(name).name in _KNOWN else "podman", found)
    if wanted:
        raise ContainerUnavailable(f"{RUNTIME_ENV}={wanted!r}, but no such program is on PATH",
                                   "install it, or unset the variable to use podman, "
                                   "apptainer or singularity")
    raise ContainerUnavailable(
        "this job runs in a container image, but no container runtime is installed on this "
        "machine (looked for podman, apptainer, singularity on PATH)",
        "install podman (apt-get install podman) or apptainer, or run the workflow on an "
        "HTCondor pool with container support")


def container_command(runtime: Runtime, image: str, argv: list[str], *, workdir: Path,
                      mounts: list[Path] = (), environment: dict[str, str] | None = None,
                      read_only: list[Path] = ()) -> list[str]:
    """The command line that runs ``argv`` in ``image`` with ``workdir`` mounted (same
    path) as the working directory, plus ``mounts`` and ``read_only`` paths."""
    if not image.strip():
        raise ContainerUnavailable("the container image is empty", "name an image")
    env = dict(environment or {})
    binds = [workdir, *mounts]
    directory = Path(image).is_dir()
    if runtime.name == "podman":
        cmd = [*runtime.base(), "run", "--rm", "--log-driver=none", *runtime.run_options(),
               f"--workdir={workdir}"]
        for path in binds:
            cmd.append(f"--volume={path}:{path}")
        for path in read_only:
            cmd.append(f"--volume={path}:{path}:ro")
        for key, value in sorted(env.items()):
            cmd.append(f"--env={key}={value}")
        image_ref = image.removeprefix("docker://")
        # a directory is a root filesystem (an apptainer sandbox); a name is never pulled
        cmd += (["--rootfs", image] if directory else ["--pull=never", image_ref])
        return cmd + list(argv)
    # apptainer / singularity: 'exec' runs the command itself, not the image's runscript
    cmd = [*runtime.base(), "exec", "--containall", "--no-home", f"--pwd={workdir}"]
    for path in binds:
        cmd.append(f"--bind={path}:{path}")
    for path in read_only:
        cmd.append(f"--bind={path}:{path}:ro")
    for key, value in sorted(env.items()):
        cmd.append(f"--env={key}={value}")
    return [*cmd, image, *argv]


def podman_command(*args: str) -> list[str]:
    """``podman ARGS`` with the global options runs use (e.g. to import an image)."""
    found = shutil.which("podman")
    if not found:
        raise ContainerUnavailable("podman is not installed", "apt-get install podman")
    return Runtime("podman", found).base() + list(args)


def job_command(image: str, argv: list[str], cwd: Path, initialdir: Path,
                environment: dict[str, str], job_environment: dict[str, str]) -> list[str]:
    """The local engine's command line for a ``container_image`` job: ``argv`` in the image,
    with the job's directory (scratch) and its submit directory mounted at their own paths,
    the submit file's ``environment`` and HTCondor's job variables set inside (not the
    host's PATH or HOME: the image has its own)."""
    env = {k: v for k, v in job_environment.items()
           if k.startswith("_CONDOR_") or k in ("TMPDIR", "TMP", "TEMP", "BATCH_SYSTEM",
                                                "OMP_NUM_THREADS")}
    env.update(environment)
    mounts = [] if initialdir == cwd else [initialdir]
    return container_command(find_runtime(), image, argv, workdir=cwd, mounts=mounts,
                             environment=env)
