"""productfetcher against a real HTTP server on 127.0.0.1 and real files."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from localhttp import LocalServer

from cli.common import run
from cli.productfetcher import app

PRODUCTFETCHER = Path(sys.executable).parent / "productfetcher"
BODY = bytes(range(256)) * 400  # 100 KiB: several chunks, so a drop lands midway


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(autouse=True)
def quick_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No stray tools.yaml; short backoff so retries take milliseconds, not seconds."""
    for key in list(os.environ):
        if key.startswith("DOCKET_"):
            monkeypatch.delenv(key)
    (tmp_path / "none.yaml").write_text("{}\n")
    monkeypatch.setenv("DOCKET_TOOLS_CONFIG", str(tmp_path / "none.yaml"))
    monkeypatch.setenv("DOCKET_PRODUCTFETCHER_BACKOFF_S", "0.01")
    monkeypatch.setenv("DOCKET_PRODUCTFETCHER_RETRIES", "3")
    monkeypatch.setenv("DOCKET_PRODUCTFETCHER_TIMEOUT_S", "10")
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def server() -> Iterator[LocalServer]:
    with LocalServer() as srv:
        yield srv


def fetch(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = run(app, list(args))
    out, err = capsys.readouterr()
    return code, out, err


def listing(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_plain_fetch_as_installed_script(tmp_path: Path, server: LocalServer) -> None:
    url = server.add("/data/a.fits", BODY)
    proc = subprocess.run([str(PRODUCTFETCHER), "-l", url, "-o", str(tmp_path / "out"),
                           "--json"], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # not a terminal: no progress bar
    result = json.loads(proc.stdout)
    assert result["ok"] is True
    assert (result["fetched"], result["failed"]) == (1, 0)
    assert result["files"][0]["dest"] == "a.fits"
    assert result["files"][0]["sha256"] == sha(BODY)
    assert (tmp_path / "out" / "a.fits").read_bytes() == BODY
    assert listing(tmp_path / "out") == ["a.fits"]


def test_connection_dropped_midway_resumes_with_range(tmp_path: Path, server: LocalServer,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    url = server.add("/data/drop.fits", BODY, mode="drop-first")
    locations = tmp_path / "locations.json"
    locations.write_text(json.dumps({"files": [
        {"locator": url, "size_bytes": len(BODY), "sha256": sha(BODY)}]}))
    code, out, err = fetch("-f", str(locations), "-o", "out", "--json", capsys=capsys)
    assert code == 0, err
    result = json.loads(out)
    half = len(BODY) // 2
    assert [s.range for s in server.hits("/data/drop.fits")] == [None, f"bytes={half}-"]
    assert result["files"][0]["resumed_from_bytes"] == half
    assert result["files"][0]["attempts"] == 2
    assert (tmp_path / "out" / "drop.fits").read_bytes() == BODY
    assert listing(tmp_path / "out") == ["drop.fits"]  # no .part left


def test_stalled_server_times_out_and_the_retry_resumes(
        tmp_path: Path, server: LocalServer, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DOCKET_PRODUCTFETCHER_TIMEOUT_S", "0.3")
    url = server.add("/data/slow.fits", BODY, mode="stall-first")
    code, out, err = fetch("-l", url, "-o", "out", "--json", capsys=capsys)
    assert code == 0, err
    half = len(BODY) // 2
    assert [s.range for s in server.hits("/data/slow.fits")] == [None, f"bytes={half}-"]
    assert (tmp_path / "out" / "slow.fits").read_bytes() == BODY


def test_progress_bar_only_on_a_terminal(tmp_path: Path, server: LocalServer) -> None:
    import pty

    url = server.add("/data/a.fits", BODY)
    for quiet, expect_bar in (([], True), (["--quiet"], False)):
        controller, terminal = pty.openpty()
        try:
            proc = subprocess.run([str(PRODUCTFETCHER), "-l", url, "-o", "out", "--force",
                                   *quiet], stdout=subprocess.PIPE, stderr=terminal,
                                  timeout=60, env=dict(os.environ))
            os.close(terminal)
            seen = b""
            with contextlib.suppress(OSError):  # EIO once the terminal side is closed
                while chunk := os.read(controller, 4096):
                    seen += chunk
        finally:
            os.close(controller)
        assert proc.returncode == 0
        assert (b"fetch [##############################] 100.0 KiB/100.0 KiB" in seen) \
            is expect_bar, seen


def test_part_file_from_an_interrupted_run_is_resumed(tmp_path: Path, server: LocalServer,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    url = server.add("/data/big.fits", BODY)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "big.fits.part").write_bytes(BODY[:30000])
    code, out, err = fetch("-l", url, "-o", "out", capsys=capsys)
    assert code == 0, err
    assert [s.range for s in server.hits("/data/big.fits")] == ["bytes=30000-"]
    assert (tmp_path / "out" / "big.fits").read_bytes() == BODY
    assert listing(tmp_path / "out") == ["big.fits"]


def test_stale_part_that_fails_the_checksum_is_fetched_again_from_the_start(
        tmp_path: Path, server: LocalServer, capsys: pytest.CaptureFixture[str]) -> None:
    url = server.add("/data/big.fits", BODY)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "big.fits.part").write_bytes(b"stale bytes from an older copy")
    locations = tmp_path / "loc.json"
    locations.write_text(json.dumps([{"locator": url, "sha256": sha(BODY)}]))
    code, out, err = fetch("-f", str(locations), "-o", "out", capsys=capsys)
    assert code == 0, err
    assert [s.range for s in server.hits("/data/big.fits")] == ["bytes=30-", None]
    assert (tmp_path / "out" / "big.fits").read_bytes() == BODY
    assert listing(tmp_path / "out") == ["big.fits"]


def test_wrong_local_file_fails_with_exit_4(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src.dat"
    src.write_bytes(b"not what was promised")
    locations = tmp_path / "loc.json"
    locations.write_text(json.dumps([{"locator": src.as_uri(), "size_bytes": 5}]))
    code, _, err = fetch("-f", str(locations), "-o", "out", capsys=capsys)
    assert code == 4
    assert err.startswith("Error: checksum mismatch: src.dat is 21 bytes, expected 5 ")
    assert listing(tmp_path / "out") == []


def test_wrong_bytes_fail_with_exit_4_and_leave_no_file(tmp_path: Path, server: LocalServer,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    url = server.add("/data/bad.fits", BODY, mode="wrong")
    locations = tmp_path / "locations.json"
    locations.write_text(json.dumps([{"locator": url, "sha256": sha(BODY)}]))
    code, out, err = fetch("-f", str(locations), "-o", "out", capsys=capsys)
    assert code == 4
    got = sha(bytes(b ^ 0xFF for b in BODY))
    assert err == (f"Error: checksum mismatch: bad.fits has sha256 {got}, expected {sha(BODY)} "
                   f"(from {url}) — the source is damaged or changed; nothing was kept under "
                   "that name — fix the source or the expected checksum\n")
    assert listing(tmp_path / "out") == []  # neither bad.fits nor bad.fits.part


def test_not_found_exits_3(tmp_path: Path, server: LocalServer,
                          capsys: pytest.CaptureFixture[str]) -> None:
    url = server.url("/data/missing.fits")
    code, out, err = fetch("-l", url, "-o", "out", "--json", capsys=capsys)
    assert code == 3
    assert err == f"Error: {url} not found (HTTP 404) — check the locator\n"
    result = json.loads(out)
    assert result["ok"] is False
    assert result["error"]["code"] == "not-found"
    assert result["files"][0]["status"] == "failed"
    assert listing(tmp_path / "out") == []


def test_concurrent_fetch_of_several_files(tmp_path: Path, server: LocalServer,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    # The server answers the first three requests only when all three are open at once.
    server.barrier = threading.Barrier(3)
    bodies = {f"/c/f{i}.dat": os.urandom(5000 + i) for i in range(6)}
    args = []
    for path, body in bodies.items():
        args += ["-l", server.add(path, body, mode="barrier" if path < "/c/f3" else "ok")]
    code, out, err = fetch(*args, "-n", "3", "-o", "out", capsys=capsys)
    assert code == 0, err
    assert len(server.seen) == 6  # nobody had to retry: the three ran together
    for path, body in bodies.items():
        assert (tmp_path / "out" / Path(path).name).read_bytes() == body
    assert out.splitlines()[-1].startswith("6 fetched, 0 already present, 0 failed")


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path: Path, server: LocalServer,
                                                    capsys: pytest.CaptureFixture[str]
                                                    ) -> None:
    url = server.add("/data/a.fits", BODY)
    local = tmp_path / "local.txt"
    local.write_bytes(b"abc")
    code, out, err = fetch("-l", url, "-l", local.as_uri(), "-o", "out", "--dry-run",
                           capsys=capsys)
    assert code == 0, err
    assert out.splitlines() == [
        f"plan: 2 file(s) into {tmp_path / 'out'}",
        f"fetch    a.fits  ?  sha256:-  <- {url}",
        f"fetch    local.txt  3 B  sha256:-  <- {local.as_uri()}",
    ]
    assert not (tmp_path / "out").exists()
    assert server.seen == []


def test_transient_503_is_retried(tmp_path: Path, server: LocalServer,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    url = server.add("/data/flaky.fits", BODY, mode="fail-first")
    code, out, err = fetch("-l", url, "-o", "out", "--json", capsys=capsys)
    assert code == 0, err
    assert json.loads(out)["files"][0]["attempts"] == 2
    assert (tmp_path / "out" / "flaky.fits").read_bytes() == BODY


def test_present_files_are_skipped_unless_forced(tmp_path: Path, server: LocalServer,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    url = server.add("/data/a.fits", BODY)
    locations = tmp_path / "loc.json"
    locations.write_text(json.dumps([{"locator": url, "sha256": sha(BODY),
                                      "dest": "sub/a.fits"}]))
    assert fetch("-f", str(locations), "-o", "out", capsys=capsys)[0] == 0
    code, out, _ = fetch("-f", str(locations), "-o", "out", capsys=capsys)
    assert code == 0
    assert out.splitlines()[0] == "present  sub/a.fits  100.0 KiB"
    assert len(server.seen) == 1
    code, out, _ = fetch("-f", str(locations), "-o", "out", "--force", capsys=capsys)
    assert code == 0
    assert out.splitlines()[0] == "fetched  sub/a.fits  100.0 KiB"
    assert len(server.seen) == 2


def test_mixed_outcomes_give_partial_failure(tmp_path: Path, server: LocalServer,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    good = server.add("/data/good.fits", BODY)
    down = server.add("/data/down.fits", BODY, mode="fail-always")
    code, out, err = fetch("-l", good, "-l", down, "-o", "out", capsys=capsys)
    assert code == 5
    assert err == (f"Error: fetching {down} failed after 4 attempts: HTTP 503 Service "
                   "Unavailable — check the network and the server, then run again "
                   "(a .part file resumes where this stopped)\n")
    assert listing(tmp_path / "out") == ["good.fits"]


def test_text_location_file_with_comments(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                          ) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "one.txt").write_text("1")
    (src / "sub" / "two.txt").write_text("22")
    (tmp_path / "locs.txt").write_text(f"# products\n\n{src.as_uri()}\n")
    code, _, err = fetch("-f", "locs.txt", "-o", "out", capsys=capsys)
    assert code == 0, err
    assert listing(tmp_path / "out") == ["src/one.txt", "src/sub/two.txt"]


@pytest.mark.parametrize(("args", "message"), [
    (["-l", "file:///x", "--dry-run", "--force"],
     "Error: --dry-run and --force exclude each other — give one of them\n"),
    ([], "Error: give either --product-locator (one or more) or --location-file — "
         "see productfetcher --help\n"),
    (["-l", "uid://docket/image/req1"],
     "Error: uid://docket/image/req1 needs the archive catalog, and none is set — pass "
     "--catalog PATH|URL, or set productfetcher.catalog (DOCKET_PRODUCTFETCHER_CATALOG) or "
     "productfetcher.locator_service\n"),
])
def test_usage_errors_exit_2(args: list[str], message: str,
                             capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = fetch(*args, "-o", "out", capsys=capsys)
    assert (code, err) == (2, message)


def test_bad_locators_are_refused_before_anything_is_fetched(
        tmp_path: Path, server: LocalServer, capsys: pytest.CaptureFixture[str]) -> None:
    url = server.add("/data/a.fits", BODY)
    code, _, err = fetch("-l", url, "-l", "ftp://example.org/a.fits", "-o", "out",
                         capsys=capsys)
    assert code == 8
    assert err == ("Error: locator 'ftp://example.org/a.fits' has no known scheme — use "
                   "file:///abs/path, http(s)://host/file or uid://archive/type/name\n")
    assert server.seen == []
    code, _, err = fetch("-l", url, "-l", server.url("/other/a.fits"), "-o", "out",
                         capsys=capsys)
    assert code == 8
    assert "both write a.fits" in err
    assert not (tmp_path / "out").exists()
