"""``conveyor``: move a run into the QA area and back, keeping links between the two."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import JsonOption, QuietOption, emit
from cli.toolshell import ConfigOption, entry, progress_lines, tool_app
from docket.errors import UsageError
from docket.procdir import PARTS, read_metadata
from docket.tools.config import load_tool_config
from docket.tools.conveyor import (
    IMAGE_PARTS,
    ConveyorResult,
    from_qa,
    qa_area_from_config,
    qa_fail,
    to_qa,
)

app = tool_app("Move a processing directory's rawdata/, working/ and products/ into the QA "
               "area (leaving symlinks) and back.")

_WORDS = {"moved": "moved to the QA area", "retrieved": "back in the processing directory",
          "already": "already in place", "absent": "absent"}


def _human(result: ConveyorResult) -> str:
    lines = [f"{part}: {_WORDS[state]}" for part, state in result.parts.items()]
    if result.action == "deliver":
        lines.append(f"QA folder: {result.qa_dir}")
    elif result.qa_dir_left:
        lines.append(f"QA folder {result.qa_dir} left in place: it still holds "
                     + ", ".join(result.qa_dir_left))
    if result.qa_failed_marker:
        lines.append(f"marked for cleanup: {result.qa_failed_marker}")
    return "\n".join(lines)


@app.command()
def conveyor(
    metadata_json: Annotated[Path, typer.Argument(
        metavar="METADATA_JSON", help="The metadata.json of the processing directory.")],
    deliver: Annotated[bool, typer.Option(
        "--deliver", help="Move rawdata/, working/, products/ into the QA area.")] = False,
    retrieve: Annotated[bool, typer.Option(
        "--retrieve", help="Move them back and remove the links.")] = False,
    deliver_img: Annotated[bool, typer.Option(
        "--deliver-img", help="Image runs: move only products/ into the QA area.")] = False,
    retrieve_img: Annotated[bool, typer.Option(
        "--retrieve-img", help="Image runs: move only products/ back.")] = False,
    qa_failed: Annotated[bool, typer.Option(
        "--qa-fail", help="Move everything back and mark the run for the annihilator.")
    ] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    chosen = [name for name, on in (("--deliver", deliver), ("--retrieve", retrieve),
                                    ("--deliver-img", deliver_img),
                                    ("--retrieve-img", retrieve_img),
                                    ("--qa-fail", qa_failed)) if on]
    if len(chosen) != 1:
        raise UsageError("give exactly one of --deliver, --retrieve, --deliver-img, "
                         "--retrieve-img, --qa-fail"
                         + (f" (got {' '.join(chosen)})" if chosen else ""),
                         "see conveyor --help")
    qa_area = qa_area_from_config(load_tool_config("conveyor", config))
    meta = read_metadata(metadata_json)
    progress = progress_lines(quiet, as_json)
    action = chosen[0]
    if action == "--deliver":
        result = to_qa(meta, qa_area, PARTS, progress)
    elif action == "--deliver-img":
        result = to_qa(meta, qa_area, IMAGE_PARTS, progress)
    elif action == "--retrieve":
        result = from_qa(meta, qa_area, PARTS, progress)
    elif action == "--retrieve-img":
        result = from_qa(meta, qa_area, IMAGE_PARTS, progress)
    else:
        result = qa_fail(meta, qa_area, progress)
    emit(result.as_dict(), as_json, lambda _: _human(result))


main = entry(app)


if __name__ == "__main__":
    main()
