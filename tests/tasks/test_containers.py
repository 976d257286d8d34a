"""Jobs and tasks that name a container image run inside it, or fail saying why.

The image is built here (no registry is reachable): busybox-static's binary in a root
filesystem with a marker file only the image has, imported with ``podman import``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.tasks.taskkit import dumps, two_task_chain, write_events

IMAGE = "localhost/docket-busybox:test"
MARKER = "/docket-image-marker"
MARKER_TEXT = "inside the docket test image"


def _busybox() -> str | None:
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        if Path(candidate).is_file():
            return candidate
    return shutil.which("busybox")


def _build_rootfs(root: Path) -> None:
    busybox = _busybox()
    assert busybox is not None
    (root / "bin").mkdir(parents=True)
    shutil.copy2(busybox, root / "bin" / "busybox")
    for applet in ("sh", "cat", "cp", "tr", "echo", "ls", "sleep", "true", "mkdir", "pwd"):
        (root / "bin" / applet).symlink_to("busybox")
    (root / "tmp").mkdir()
    (root / MARKER.lstrip("/")).write_text(MARKER_TEXT + "\n")


@pytest.fixture(scope="session")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The test image, imported into podman once per session."""
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (apt-get install podman; see "
                    "debian-packages.txt)")
    if _busybox() is None:
        pytest.skip("busybox is not installed (apt-get install busybox-static)")
    from docket.container import podman_command

    work = tmp_path_factory.mktemp("image")
    _build_rootfs(work / "root")
    tar = work / "rootfs.tar"
    with tarfile.open(tar, "w") as out:
        out.add(work / "root", arcname=".")
    imported = subprocess.run(podman_command("import", str(tar), IMAGE), capture_output=True,
                              text=True)
    assert imported.returncode == 0, imported.stderr
    probe = subprocess.run(
        podman_command("run", "--rm", "--pull=never", "--log-driver=none",
                       "--ulimit=nofile=4096:4096", "--ulimit=nproc=4096:4096", IMAGE,
                       "cat", MARKER), capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"podman cannot run containers on this machine: {probe.stderr.strip()}")
    assert probe.stdout.strip() == MARKER_TEXT
    return IMAGE


@pytest.mark.slow
def test_a_two_task_workflow_runs_inside_the_image(home: Path, docket, image: str) -> None:  # noqa: ANN001
    write_events(home, 2)
    request = two_task_chain(image=image, first_args=(
        "sh -c 'cat " + MARKER + " > {{OUTFILE}}; tr a-z A-Z < {{INFILE}} >> {{OUTFILE}}'"))
    (home / "boxed.json").write_text(dumps(request))
    assert docket("submit", str(home / "boxed.json")).code == 0
    assert docket("tick", "--wait").code == 0
    execution = docket("show", "boxed", "--json").json()["executions"][0]
    assert execution["state"] == "complete", execution["reason"]
    products = Path(execution["directory"]) / "products" / "output-queue"
    text = (products / "e001.txt").read_text()
    # the marker exists only in the image: the first task ran inside it; the second
    # (also in the image) appended its line to the first one's output
    assert text == f"{MARKER_TEXT}\nEVENT NUMBER 1\ndone\n"
    assert not Path(MARKER).exists()


def test_a_capability_job_with_container_image_runs_inside_it(tmp_path: Path,
                                                             image: str) -> None:
    (tmp_path / "c.sub").write_text(f"""\
universe = container
container_image = {image}
executable = /bin/sh
transfer_executable = false
arguments = "-c 'cat {MARKER} > inside.txt; pwd >> inside.txt'"
should_transfer_files = YES
when_to_transfer_output = ON_EXIT
output = c.out
error = c.err
queue
""")
    (tmp_path / "w.dag").write_text("JOB C c.sub\n")
    run = subprocess.run([sys.executable, "-m", "docket.engines.localdag",
                          str(tmp_path / "w.dag")], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, (tmp_path / "w.dag.dagman.out").read_text()
    lines = (tmp_path / "inside.txt").read_text().splitlines()
    assert lines[0] == MARKER_TEXT
    assert lines[1].startswith(str(tmp_path / ".scratch"))  # the scratch dir, mounted


def test_no_runtime_fails_the_workers_with_what_to_install(home: Path, docket,  # noqa: ANN001
                                                           monkeypatch) -> None:
    write_events(home, 1)
    request = two_task_chain(image="localhost/never-pulled:1")
    (home / "noruntime.json").write_text(dumps(request))
    empty = home / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # no podman, apptainer or singularity
    assert docket("submit", str(home / "noruntime.json")).code == 0
    assert docket("tick", "--wait").code == 0
    shown = docket("show", "noruntime", "--json").json()
    execution = shown["executions"][0]
    assert execution["state"] == "failed"
    errors = execution["task_workflow"]["taskforces"][0]["worker_errors"]
    assert errors and "no container runtime is installed" in errors[0]
    assert "install podman" in errors[0]
    assert "worker failed: this job runs in a container image" in docket("show",
                                                                         "noruntime").out
    # no event was taken by a worker that could not run it
    from tests.tasks.taskkit import queue_rows

    rows = queue_rows(Path(execution["directory"]), "SELECT state, attempt FROM events")
    assert [tuple(r) for r in rows] == [("waiting", 0)]
