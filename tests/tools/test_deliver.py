"""``deliver``, run as the installed console script against real directories."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from docket.fileio import sha256_file
from docket.tools.deliver import DeliverySettings, deliver, parse_mode

DELIVER = Path(sys.executable).parent / "deliver"


def run_deliver(*args: str, cwd: Path, config: Path | None = None,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKET_")}
    full_env["DOCKET_TOOLS_CONFIG"] = str(config or cwd / "none.yaml")
    if config is None:
        (cwd / "none.yaml").write_text("{}\n")
    full_env.update(env or {})
    return subprocess.run([str(DELIVER), *args], cwd=cwd, capture_output=True, text=True,
                          env=full_env, timeout=60)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A processing directory as docket lays it out."""
    d = tmp_path / "req-1.v1.e1"
    (d / "products" / "images").mkdir(parents=True)
    (d / "products" / "images" / "target.fits").write_bytes(b"F" * 5000)
    (d / "products" / "weblog.tgz").write_bytes(b"weblog")
    (d / "rawdata" / "obs.ms").mkdir(parents=True)
    (d / "rawdata" / "obs.ms" / "table.dat").write_bytes(b"ms" * 100)
    (d / "working").mkdir()
    (d / "working" / "casa.log").write_text("log")
    (d / "metadata.json").write_text("{}")
    return d


@pytest.fixture
def area(tmp_path: Path) -> Path:
    a = tmp_path / "deliveries"
    a.mkdir()
    return a


def test_delivers_products_with_checksums_and_modes(tmp_path: Path, run_dir: Path,
                                                     area: Path) -> None:
    config = tmp_path / "tools.yaml"
    config.write_text('deliver:\n  file_mode: "0640"\n  dir_mode: "0750"\n')
    proc = run_deliver("-l", str(area), str(run_dir), cwd=tmp_path, config=config)
    assert proc.returncode == 0, proc.stderr
    dest = area / "req-1.v1.e1"
    assert proc.stdout == f"Delivered 2 files (5006 bytes) to {dest}\n"
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")) == [
        "SHA256SUMS", "images", "images/target.fits", "weblog.tgz"]
    assert (dest / "images" / "target.fits").read_bytes() == b"F" * 5000
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=dest, capture_output=True,
                           text=True)
    assert check.returncode == 0
    assert check.stdout == "images/target.fits: OK\nweblog.tgz: OK\n"
    for path in [dest, dest / "images"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o750
    for path in [dest / "SHA256SUMS", dest / "weblog.tgz", dest / "images" / "target.fits"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
    # Nothing but the delivery itself is left in the area (no temporary names).
    assert os.listdir(area) == ["req-1.v1.e1"]


def test_refuses_to_overwrite_without_force(tmp_path: Path, run_dir: Path,
                                            area: Path) -> None:
    assert run_deliver("-l", str(area), str(run_dir), cwd=tmp_path).returncode == 0
    proc = run_deliver("-l", str(area), str(run_dir), cwd=tmp_path)
    dest = area / "req-1.v1.e1"
    assert proc.returncode == 1
    assert proc.stderr == (f"Error: {dest} already exists — give --force to replace it, "
                           "or another --prefix\n")
    (run_dir / "products" / "weblog.tgz").unlink()
    (run_dir / "products" / "new.txt").write_text("new")
    proc = run_deliver("-l", str(area), "--force", "--json", str(run_dir), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["replaced"] is True
    assert (dest / "new.txt").read_text() == "new"
    assert not (dest / "weblog.tgz").exists()
    assert os.listdir(area) == ["req-1.v1.e1"]


def test_rawdata_and_tar_with_prefix(tmp_path: Path, run_dir: Path, area: Path) -> None:
    proc = run_deliver("-l", str(area), "-t", "-r", "--prefix", "alice/2024",
                       "--json", str(run_dir), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    dest = area / "alice" / "2024" / "req-1.v1.e1"
    record = json.loads(proc.stdout)
    assert record["destination"] == str(dest)
    assert record["archive"] == str(dest / "req-1.v1.e1.tar")
    assert record["files"] == 1 and record["size_bytes"] == 200
    assert sorted(os.listdir(dest)) == ["SHA256SUMS", "req-1.v1.e1.tar"]
    digest = sha256_file(dest / "req-1.v1.e1.tar")
    assert (dest / "SHA256SUMS").read_text() == f"{digest}  req-1.v1.e1.tar\n"
    with tarfile.open(dest / "req-1.v1.e1.tar") as tar:
        assert tar.getnames() == ["req-1.v1.e1", "req-1.v1.e1/obs.ms",
                                  "req-1.v1.e1/obs.ms/table.dat", "req-1.v1.e1/SHA256SUMS"]
        tar.extractall(tmp_path / "unpacked", filter="data")
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"],
                           cwd=tmp_path / "unpacked" / "req-1.v1.e1", capture_output=True,
                           text=True)
    assert check.stdout == "obs.ms/table.dat: OK\n"


def test_folder_without_products_is_delivered_whole(tmp_path: Path, area: Path) -> None:
    plain = tmp_path / "images"
    plain.mkdir()
    (plain / "a.fits").write_text("a")
    proc = run_deliver("-l", str(area), str(plain), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(area / "images")) == ["SHA256SUMS", "a.fits"]


def test_processing_dir_without_rawdata(tmp_path: Path, run_dir: Path, area: Path) -> None:
    (run_dir / "rawdata" / "obs.ms" / "table.dat").unlink()
    (run_dir / "rawdata" / "obs.ms").rmdir()
    (run_dir / "rawdata").rmdir()
    proc = run_deliver("-l", str(area), "-r", str(run_dir), cwd=tmp_path)
    assert proc.returncode == 3
    assert proc.stderr == (f"Error: {run_dir}/rawdata does not exist — deliver a processing "
                           "directory that has rawdata/\n")


def test_web_delivery_prints_url(tmp_path: Path, run_dir: Path) -> None:
    web_root = tmp_path / "www"
    web_root.mkdir()
    config = tmp_path / "tools.yaml"
    config.write_text(f"deliver:\n  web_root: {web_root}\n"
                      "  web_url: https://data.example.org/dl/\n")
    proc = run_deliver("--web", "--prefix", "bob smith", str(run_dir), cwd=tmp_path,
                       config=config)
    assert proc.returncode == 0, proc.stderr
    dest = web_root / "bob smith" / "req-1.v1.e1"
    assert proc.stdout == (f"Delivered 2 files (5006 bytes) to {dest}\n"
                           "URL: https://data.example.org/dl/bob%20smith/req-1.v1.e1/\n")


def test_settings_errors(tmp_path: Path, run_dir: Path) -> None:
    proc = run_deliver("--web", str(run_dir), cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (
        8, "Error: web delivery needs deliver.web_root and deliver.web_url — set both in "
           "tools.yaml (or DOCKET_DELIVER_WEB_ROOT/_WEB_URL)\n")
    proc = run_deliver(str(run_dir), cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (
        2, "Error: no delivery destination — give -l LOCAL_DEST or --web, or set "
           "deliver.local_root\n")
    config = tmp_path / "bad.yaml"
    config.write_text("deliver:\n  local_root: /nonexistent\n  file_mode: 644\n")
    proc = run_deliver(str(run_dir), cwd=tmp_path, config=config)
    assert (proc.returncode, proc.stderr) == (
        8, "Error: deliver.file_mode 644 is not a permission mode — quote it as an octal "
           'string, e.g. "0644"\n')
    proc = run_deliver("-l", str(tmp_path / "nowhere"), str(run_dir), cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (
        3, f"Error: delivery area {tmp_path}/nowhere does not exist — create it or give "
           "another destination\n")
    proc = run_deliver("-l", str(tmp_path), str(tmp_path / "missing"), cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (
        3, f"Error: source directory {tmp_path}/missing does not exist — give the "
           "processing directory or a folder of products\n")
    proc = run_deliver("-l", str(tmp_path), "--prefix", "../up", str(run_dir), cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (
        8, f"Error: path '../up' contains '..' — give a path inside {tmp_path} without '..'\n")


def test_config_from_environment(tmp_path: Path, run_dir: Path, area: Path) -> None:
    proc = run_deliver(str(run_dir), cwd=tmp_path,
                       env={"DOCKET_DELIVER_LOCAL_ROOT": str(area),
                            "DOCKET_DELIVER_FILE_MODE": "0600"})
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE((area / "req-1.v1.e1" / "weblog.tgz").stat().st_mode) == 0o600


def test_symlinks_inside_followed_outside_refused(tmp_path: Path, run_dir: Path,
                                                  area: Path) -> None:
    products = run_dir / "products"
    (products / "latest.fits").symlink_to("images/target.fits")
    proc = run_deliver("-l", str(area), str(run_dir), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    copied = area / "req-1.v1.e1" / "latest.fits"
    assert not copied.is_symlink() and copied.read_bytes() == b"F" * 5000

    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    (products / "leak.txt").symlink_to(secret)
    proc = run_deliver("-l", str(area), "--force", str(run_dir), cwd=tmp_path)
    assert proc.returncode == 8
    assert proc.stderr == (f"Error: {products}/leak.txt is a symlink to {secret}, outside "
                           f"{products} — copy the file in or remove the link\n")


def test_products_link_into_qa_area_is_followed(tmp_path: Path, run_dir: Path,
                                                area: Path) -> None:
    qa = tmp_path / "qa" / "products"
    qa.parent.mkdir()
    (run_dir / "products").rename(qa)
    (run_dir / "products").symlink_to(qa)
    proc = run_deliver("-l", str(area), str(run_dir), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (area / "req-1.v1.e1" / "weblog.tgz").read_bytes() == b"weblog"


def test_interrupted_delivery_leaves_nothing(run_dir: Path, area: Path) -> None:
    def interrupt(line: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        deliver(run_dir, DeliverySettings(area), progress=interrupt)
    assert os.listdir(area) == []


def test_parse_mode() -> None:
    assert parse_mode("0644", "file_mode") == 0o644
    assert parse_mode(0o750, "dir_mode") == 0o750
    assert parse_mode("0o700", "dir_mode") == 0o700
