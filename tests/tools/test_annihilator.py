"""``annihilator``: real trees, real ages (set with utime), the installed script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ANNIHILATOR = Path(sys.executable).parent / "annihilator"
OLD_S = 1577836800.0  # 2020-01-01 00:00 UTC
OLD_TEXT = "2020-01-01 00:00 UTC"


def annihilator(*args: str, config: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKET_")}
    return subprocess.run([str(ANNIHILATOR), "--config", str(config), *args],
                          capture_output=True, text=True, env=env, timeout=60)


def set_mtime(top: Path, when_s: float) -> None:
    """Give every entry of a tree (links themselves, not their targets) this mtime."""
    paths = [top]
    if top.is_dir() and not top.is_symlink():
        paths += list(top.rglob("*"))
    for path in sorted(paths, key=lambda p: len(p.parts), reverse=True):
        os.utime(path, (when_s, when_s), follow_symlinks=False)


def write(path: Path, size_bytes: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size_bytes)
    return path


@pytest.fixture
def roots(tmp_path: Path) -> dict[str, Path]:
    made = {name: tmp_path / name for name in ("processing", "spool", "deliveries")}
    for root in made.values():
        root.mkdir()
    return made


@pytest.fixture
def config(tmp_path: Path, roots: dict[str, Path]) -> Path:
    path = tmp_path / "tools.yaml"
    path.write_text(
        "annihilator:\n  areas:\n"
        f"    - {{name: processing, root: {roots['processing']}, max_age_days: 30}}\n"
        f"    - {{name: spool, root: {roots['spool']}, max_age_days: 365}}\n"
        f"    - {{name: deliveries, root: {roots['deliveries']}, max_age_days: 14}}\n")
    return path


def test_removes_old_keeps_young(config: Path, roots: dict[str, Path]) -> None:
    proc_root = roots["processing"]
    old_run = proc_root / "req-1"
    write(old_run / "working" / "casa.log", 1000)
    write(old_run / "products" / "image.fits", 3000)
    set_mtime(old_run, OLD_S)
    young_run = proc_root / "req-2"
    write(young_run / "working" / "casa.log", 10)
    # Old everywhere but one file deep inside: judged on the newest mtime, so kept.
    mixed = proc_root / "req-3"
    write(mixed / "rawdata" / "obs.ms" / "table.f0", 500)
    set_mtime(mixed, OLD_S)
    write(mixed / "working" / "deep" / "new.txt", 5)
    old_archive = write(roots["spool"] / "accepted" / "2019" / "request.yaml", 200)
    set_mtime(roots["spool"] / "accepted", OLD_S)  # older than 365 days too

    proc = annihilator(config=config)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (
        f"processing: removed {old_run} (4.0 kB, newest {OLD_TEXT}, older than 30 days)\n"
        f"spool: removed {roots['spool']}/accepted (200 bytes, newest {OLD_TEXT}, "
        "older than 365 days)\n"
        "freed 4.2 kB in 2 entries\n")
    assert not old_run.exists() and not old_archive.exists()
    assert (young_run / "working" / "casa.log").is_file()
    assert (mixed / "rawdata" / "obs.ms" / "table.f0").is_file()
    assert sorted(os.listdir(proc_root)) == ["req-2", "req-3"]


def test_symlinks_out_of_the_root_are_removed_not_followed(tmp_path: Path, config: Path,
                                                           roots: dict[str, Path]) -> None:
    outside = tmp_path / "precious"
    write(outside / "data.ms" / "table.f0", 700)
    set_mtime(outside, OLD_S)
    deliveries = roots["deliveries"]
    # A link directly in the root, pointing outside it.
    top_link = deliveries / "shortcut"
    top_link.symlink_to(outside)
    os.utime(top_link, (OLD_S, OLD_S), follow_symlinks=False)
    # An old run whose rawdata is a link to a freshly written folder outside the root:
    # the fresh target neither keeps the run alive nor gets removed with it.
    fresh_outside = tmp_path / "fresh"
    write(fresh_outside / "new.txt", 10)
    run = roots["processing"] / "req-9"
    write(run / "products" / "a.fits", 100)
    (run / "rawdata").symlink_to(fresh_outside)
    set_mtime(run, OLD_S)

    proc = annihilator("--json", config=config)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    removed = {r["path"]: r for area in record["areas"] for r in area["removed"]}
    assert set(removed) == {str(top_link), str(run)}
    assert removed[str(top_link)]["size_bytes"] == len(str(outside))
    assert removed[str(run)]["size_bytes"] == 100 + len(str(fresh_outside))
    assert record["freed_bytes"] == len(str(outside)) + 100 + len(str(fresh_outside))
    assert not top_link.is_symlink() and not run.exists()
    assert (outside / "data.ms" / "table.f0").stat().st_size == 700
    assert (fresh_outside / "new.txt").is_file()


def test_active_run_older_than_limit_is_kept(config: Path, roots: dict[str, Path]) -> None:
    proc_root = roots["processing"]
    active = proc_root / "req-active"
    write(active / "working" / "casa.log", 50)
    (active / ".docket-active").write_text('{"execution": 1, "since": "2019-12-31"}')
    set_mtime(active, OLD_S)
    nested = proc_root / "batch"
    write(nested / "run-a" / "products" / "x.fits", 5)
    (nested / "run-b").mkdir()
    (nested / "run-b" / ".docket-active").write_text("{}")
    set_mtime(nested, OLD_S)

    proc = annihilator(config=config)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (f"processing: kept {nested}: active run (.docket-active)\n"
                           f"processing: kept {active}: active run (.docket-active)\n"
                           "freed 0 bytes in 0 entries\n")
    assert (active / "working" / "casa.log").is_file()
    assert (nested / "run-a" / "products" / "x.fits").is_file()


def test_dry_run_removes_nothing(config: Path, roots: dict[str, Path]) -> None:
    run = roots["deliveries"] / "alice"
    write(run / "req-1" / "image.fits", 2500)
    write(run / "req-1" / "SHA256SUMS", 80)
    set_mtime(run, OLD_S)
    proc = annihilator("--dry-run", config=config)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (f"deliveries: would remove {run} (2.6 kB, newest {OLD_TEXT}, "
                           "older than 14 days)\nwould free 2.6 kB in 1 entry\n")
    assert (run / "req-1" / "image.fits").is_file()
    proc = annihilator("--dry-run", "--json", "--area", "deliveries", config=config)
    record = json.loads(proc.stdout)
    assert (record["dry_run"], record["freed_bytes"], record["ok"]) == (True, 2580, True)
    assert [a["name"] for a in record["areas"]] == ["deliveries"]
    assert record["areas"][0]["removed"][0]["newest_mtime"] == "2020-01-01T00:00:00+00:00"


def test_failed_qa_and_unfinished_removals_go_at_once(config: Path,
                                                      roots: dict[str, Path]) -> None:
    proc_root = roots["processing"]
    failed = proc_root / "req-failed"
    write(failed / "products" / "bad.fits", 40)
    (failed / ".docket-qa-failed").write_text("{}")
    failed_active = proc_root / "req-failed-active"
    (failed_active / "working").mkdir(parents=True)
    (failed_active / ".docket-qa-failed").write_text("{}")
    (failed_active / ".docket-active").write_text("{}")
    leftover = proc_root / ".docket-annihilating.req-0"
    write(leftover / "half.txt", 7)

    proc = annihilator(config=config)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"processing: removed {leftover} (7 bytes, newest ")
    assert lines[0].endswith(", unfinished removal)")
    assert lines[1].startswith(f"processing: removed {failed} (42 bytes, newest ")
    assert lines[1].endswith(", failed QA)")
    assert lines[2:] == [f"processing: kept {failed_active}: active run (.docket-active)",
                         "freed 49 bytes in 2 entries"]
    assert sorted(os.listdir(proc_root)) == ["req-failed-active"]


def test_root_through_a_link(tmp_path: Path, roots: dict[str, Path]) -> None:
    (tmp_path / "via").symlink_to(roots["spool"])
    old = write(roots["spool"] / "old.yaml", 3)
    set_mtime(old, OLD_S)
    config = tmp_path / "link.yaml"
    config.write_text(f"annihilator:\n  areas:\n    - name: spool\n      root: {tmp_path}/via\n"
                      "      max_age_days: 1\n")
    proc = annihilator(config=config)
    assert proc.returncode == 0, proc.stderr
    assert not old.exists()
    assert (tmp_path / "via").is_symlink()


def test_missing_root_is_a_partial_failure(tmp_path: Path, roots: dict[str, Path]) -> None:
    old = write(roots["spool"] / "old.yaml", 3)
    set_mtime(old, OLD_S)
    config = tmp_path / "partial.yaml"
    config.write_text("annihilator:\n  areas:\n"
                      f"    - {{name: gone, root: {tmp_path}/unmounted, max_age_days: 1}}\n"
                      f"    - {{name: spool, root: {roots['spool']}, max_age_days: 1}}\n")
    proc = annihilator(config=config)
    assert proc.returncode == 5
    assert proc.stdout == (f"gone: problem: area gone: root {tmp_path}/unmounted is not a "
                           f"directory\nspool: removed {old} (3 bytes, newest {OLD_TEXT}, "
                           "older than 1 day)\nfreed 3 bytes in 1 entry\n")
    assert proc.stderr == ("Error: 1 problem in the areas — see the report, fix permissions "
                           "or roots, run again\n")
    proc = annihilator("--json", config=config)
    assert json.loads(proc.stdout)["ok"] is False


@pytest.mark.parametrize(("yaml_text", "message"), [
    ("annihilator: {}\n",
     "annihilator.areas is not set — list the areas in tools.yaml: areas: "
     "[{name, root, max_age_days}]"),
    ("annihilator:\n  areas:\n    - {name: p, root: relative/dir, max_age_days: 3}\n",
     "annihilator.areas[0]: root 'relative/dir' must be an absolute path below /, without "
     "'..' — give the full path of the area"),
    ("annihilator:\n  areas:\n    - {name: p, root: /, max_age_days: 3}\n",
     "annihilator.areas[0]: root '/' must be an absolute path below /, without '..' — give "
     "the full path of the area"),
    ("annihilator:\n  areas:\n    - {name: p, root: /srv/p, max_age_days: 0}\n",
     "annihilator.areas[0].max_age_days must be above 0 — give e.g. 30 or 0.5"),
    ("annihilator:\n  areas:\n    - {name: p, root: /srv/p}\n",
     "annihilator.areas[0] has no 'max_age_days' — give name, root and max_age_days"),
])
def test_config_errors(tmp_path: Path, yaml_text: str, message: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(yaml_text)
    proc = annihilator(config=config)
    assert (proc.returncode, proc.stderr) == (8, f"Error: {message}\n")


def test_unknown_area(config: Path) -> None:
    proc = annihilator("--area", "nope", config=config)
    assert (proc.returncode, proc.stderr) == (
        2, "Error: no area named nope — configured areas: deliveries, processing, spool\n")


def test_young_entries_untouched(config: Path, roots: dict[str, Path]) -> None:
    recent = time.time() - 13 * 86400
    run = roots["deliveries"] / "bob"
    write(run / "a.fits", 1)
    set_mtime(run, recent)
    proc = annihilator(config=config)
    assert (proc.returncode, proc.stdout) == (0, "freed 0 bytes in 0 entries\n")
    assert (run / "a.fits").is_file()


def _lock_folder(path: Path) -> bool:
    """Make ``path``'s entries undeletable: chmod for users, chattr +i for root."""
    if os.geteuid() != 0:
        path.chmod(0o500)
        return True
    return subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0


def _unlock_folder(path: Path) -> None:
    if os.geteuid() != 0:
        path.chmod(0o755)
    else:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)


def test_failed_removal_is_reported_and_finished_next_time(config: Path,
                                                           roots: dict[str, Path]) -> None:
    proc_root = roots["processing"]
    run = proc_root / "req-stuck"
    write(run / "working" / "casa.log", 10)
    write(run / "products" / "image.fits", 20)
    set_mtime(run, OLD_S)
    doomed = proc_root / ".docket-annihilating.req-stuck"
    if not _lock_folder(run / "products"):
        pytest.skip("cannot make a folder undeletable here (chattr)")
    try:
        proc = annihilator(config=config)
    finally:
        _unlock_folder(doomed / "products")
    assert proc.returncode == 5
    assert proc.stderr == ("Error: 1 problem in the areas — see the report, fix permissions "
                           "or roots, run again\n")
    assert proc.stdout.startswith(
        f"processing: problem: {doomed}: could not remove {doomed}/products/image.fits: ")
    assert " (and 2 more)\n" in proc.stdout
    assert proc.stdout.endswith("freed 0 bytes in 0 entries\n")
    # The half-removed entry carries its new name, so the next run finishes it whatever
    # its age.
    assert os.listdir(proc_root) == [doomed.name]
    proc = annihilator(config=config)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"processing: removed {doomed} (20 bytes, newest ")
    assert proc.stdout.endswith(", unfinished removal)\nfreed 20 bytes in 1 entry\n")
    assert os.listdir(proc_root) == []
