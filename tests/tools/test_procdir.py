"""The processing-directory contract: what the core writes is what every tool reads, and a
broken metadata.json is refused with the file, the field and the fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from docket.errors import Invalid, NotFound
from docket.procdir import (
    ACTIVE_MARKER,
    FIX_METADATA,
    PARTS,
    ProcessingDirectory,
    create,
    read_metadata,
    root_of,
)
from envoys.casa.foundation import NEEDS
from tests.htcondor.condorkit import render

GOOD: dict[str, Any] = {"docket": 1, "request": "req-1", "version": 2, "execution": 7,
                        "capability": "null", "parameters": {"sleep_s": 0},
                        "directory": "/lustre/work/req-1/v2/e7", "output_dir": None,
                        "created": "2025-03-01T10:00:00Z"}


def write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def test_what_render_execution_writes_every_tool_reads(tmp_path: Path) -> None:
    rendered, _ = render("null", tmp_path / "e1", {"sleep_s": 0.5})
    layout = ProcessingDirectory(rendered.directory)
    assert all((rendered.directory / part).is_dir() for part in PARTS)
    assert layout.active_marker.is_file() and layout.request_path.is_file()
    meta = read_metadata(layout.metadata_path, require=NEEDS)
    assert (meta.request, meta.version, meta.execution, meta.capability) == (
        "run-1", 1, 1, "null")
    assert meta.parameters["sleep_s"] == 0.5
    assert meta.directory == layout and meta.label == "run-1.v1.e1"


def test_create_makes_the_parts_and_keeps_what_is_there(tmp_path: Path) -> None:
    root = tmp_path / "a" / "e1"
    create(root)
    (root / "products" / "kept.fits").write_text("x")
    layout = create(root)
    assert sorted(p.name for p in root.iterdir()) == sorted(PARTS)
    assert (layout.products / "kept.fits").read_text() == "x"
    assert not (root / ACTIVE_MARKER).exists()  # only the watcher says a run is active


def test_paths_of_a_part_and_of_the_directory_named_by_its_metadata(tmp_path: Path) -> None:
    layout = ProcessingDirectory(tmp_path, part="piece_0")
    assert layout.working == tmp_path / "working" / "piece_0"
    assert layout.products == tmp_path / "products"
    assert root_of(tmp_path / "metadata.json") == root_of(tmp_path) == tmp_path.absolute()
    assert layout.relative(tmp_path / "products" / "x") == "products/x"
    assert layout.relative(Path("/elsewhere")) == "/elsewhere"


def test_has_parts_counts_a_dangling_link_left_by_conveyor(tmp_path: Path) -> None:
    assert not ProcessingDirectory(tmp_path).has_parts()
    (tmp_path / "products").symlink_to(tmp_path / "qa" / "gone")
    assert ProcessingDirectory(tmp_path).has_parts()


@pytest.mark.parametrize(("change", "message"), [
    ({"docket": ...}, "field 'docket' is missing"),
    ({"request": ...}, "field 'request' is missing"),
    ({"version": ...}, "field 'version' is missing"),
    ({"execution": ...}, "field 'execution' is missing"),
    ({"version": "one"}, "field 'version' must be an integer, got 'one'"),
    ({"execution": True}, "field 'execution' must be an integer, got True"),
    ({"execution": 0}, "field 'execution' must be a whole number >= 1, got 0"),
    ({"parameters": [1]}, "field 'parameters' must be a mapping, got [1]"),
    ({"output_dir": 5}, "field 'output_dir' must be a path or null, got 5"),
    ({"capability": ""}, "field 'capability' must not be empty"),
    ({"directory": "work/e7"}, "field 'directory' must be an absolute path, got 'work/e7'"),
])
def test_each_bad_field_is_named(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    data = {k: v for k, v in {**GOOD, **change}.items() if v is not ...}
    path = write(tmp_path, data)
    with pytest.raises(Invalid) as caught:
        read_metadata(path)
    assert str(caught.value) == f"{path}: {message} — {FIX_METADATA}"
    assert caught.value.exit_code == 8


def test_required_fields_beyond_the_identity(tmp_path: Path) -> None:
    path = write(tmp_path, {k: v for k, v in GOOD.items() if k != "directory"})
    assert read_metadata(path).raw["capability"] == "null"  # conveyor needs no directory
    with pytest.raises(Invalid, match="field 'directory' is missing"):
        read_metadata(path, require=NEEDS)


def test_a_request_that_cannot_name_a_folder(tmp_path: Path) -> None:
    for request in ("../x", ".hidden", "a/b", "tab\there", ""):
        path = write(tmp_path, {**GOOD, "request": request})
        with pytest.raises(Invalid) as caught:
            read_metadata(path)
        assert str(caught.value) == (f"{path}: request {request!r} cannot name a folder — "
                                     "use a name without '/', control characters or a "
                                     "leading dot")


def test_not_json_not_an_object_other_version_missing(tmp_path: Path) -> None:
    path = write(tmp_path, '{"docket": 1,\n  oops}')
    with pytest.raises(Invalid, match=r"is not valid JSON: Expecting property name "
                                      r"enclosed in double quotes at line 2 column 3"):
        read_metadata(path)
    with pytest.raises(Invalid, match="must hold a JSON object"):
        read_metadata(write(tmp_path, [GOOD]))
    with pytest.raises(Invalid) as caught:
        read_metadata(write(tmp_path, {**GOOD, "docket": 2}))
    assert str(caught.value) == (f"{path}: field 'docket' is 2; this tool reads version 1 — "
                                 "use a tool as new as the docket that wrote it")
    with pytest.raises(NotFound) as missing:
        read_metadata(tmp_path / "nope.json")
    assert missing.value.exit_code == 3
    with pytest.raises(Invalid, match="is a directory"):
        read_metadata(tmp_path)
