"""Output verification: missing and too-small outputs are named; products carry size and
sha256 (a tree digest for directory products such as CASA images)."""

from __future__ import annotations

import hashlib

from docket.outputs import missing_reason, tree_sha256, verify
from schemas.capability import OutputSpec


def _write(path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_all_present_lists_products_with_checksums(tmp_path):
    _write(tmp_path / "products" / "a.fits", b"A" * 2048)
    _write(tmp_path / "products" / "b.fits", b"B" * 4096)
    _write(tmp_path / "summary.txt", b"done\n")
    _write(tmp_path / "products" / "img.image" / "table.dat", b"t" * 10)
    _write(tmp_path / "products" / "img.image" / "logtable" / "table.f0", b"x")
    ok, problems, products = verify(tmp_path, [
        OutputSpec(path="products/*.fits", min_size_bytes=1024),
        {"path": "summary.txt"}, {"path": "products/*.fits"},  # twice: listed once
        {"path": "products/img.image", "min_size_bytes": 11}])
    assert (ok, problems) == (True, [])
    assert [(p["path"], p["size_bytes"], p["type"]) for p in products] == [
        ("products/a.fits", 2048, "file"), ("products/b.fits", 4096, "file"),
        ("products/img.image", 11, "directory"), ("summary.txt", 5, "file")]
    assert products[0]["sha256"] == hashlib.sha256(b"A" * 2048).hexdigest()
    assert products[2]["sha256"] == tree_sha256(tmp_path / "products" / "img.image")


def test_missing_and_small_outputs_are_named(tmp_path):
    _write(tmp_path / "products" / "a.fits", b"A" * 10)
    _write(tmp_path / "empty.txt", b"")
    ok, problems, products = verify(tmp_path, [
        {"path": "products/a.fits", "min_size_bytes": 1024},
        {"path": "products/*.ms"}, {"path": "weblog.tgz"}, {"path": "empty.txt",
                                                             "min_size_bytes": 1},
        {"path": "../etc/passwd"}, {"path": "/etc/passwd"}])
    assert not ok
    assert problems == [
        "products/a.fits: 10 bytes, expected at least 1024",
        "products/*.ms: missing (nothing matches)",
        "weblog.tgz: missing",
        "empty.txt: 0 bytes, expected at least 1",
        "../etc/passwd: path '../etc/passwd' contains '..'",
        "/etc/passwd: path '/etc/passwd' is absolute"]
    assert products == []
    assert missing_reason(problems, limit=2) == (
        "declared outputs missing or too small: products/a.fits: 10 bytes, expected at "
        "least 1024; products/*.ms: missing (nothing matches) (and 4 more)")


def test_a_symlink_out_of_the_directory_is_not_a_product(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    run = tmp_path / "run"
    run.mkdir()
    (run / "result.txt").symlink_to(outside)
    (run / "linked").mkdir()
    (run / "linked" / "out.fits").symlink_to(outside)
    ok, problems, products = verify(run, [{"path": "result.txt"}, {"path": "linked/*.fits"}])
    assert (ok, products) == (False, [])
    assert problems == [
        f"result.txt: path 'result.txt' leads outside {run} through a symlink",
        "linked/out.fits: leads outside the processing directory"]


def test_tree_digest_changes_with_content_and_names(tmp_path):
    _write(tmp_path / "a" / "x", b"1")
    first = tree_sha256(tmp_path / "a")
    _write(tmp_path / "a" / "x", b"2")
    second = tree_sha256(tmp_path / "a")
    (tmp_path / "a" / "x").rename(tmp_path / "a" / "y")
    third = tree_sha256(tmp_path / "a")
    assert len({first, second, third}) == 3
