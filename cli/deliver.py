"""``deliver``: copy a run's products (or raw data) to the delivery area."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import JsonOption, QuietOption, emit
from cli.toolshell import ConfigOption, entry, progress_lines, tool_app
from docket.tools.config import load_tool_config
from docket.tools.deliver import Delivery, deliver, resolve_settings

app = tool_app("Copy SOURCE_DIR/products (or rawdata/ with -r; a folder without products/ "
               "is delivered whole) to the delivery area, with SHA256SUMS.")


def _human(result: Delivery) -> str:
    what = f"archive {result.archive}" if result.archive else (
        f"{result.files} file{'' if result.files == 1 else 's'}")
    if result.unchanged:
        return f"Unchanged: {result.destination} already holds {what} with the same checksums"
    lines = [f"Delivered {what} ({result.size_bytes} bytes) to {result.destination}"]
    if result.url:
        lines.append(f"URL: {result.url}")
    return "\n".join(lines)


@app.command(name="deliver")
def deliver_command(
    source_dir: Annotated[Path, typer.Argument(metavar="SOURCE_DIR",
                                               help="Processing directory or folder.")],
    prefix: Annotated[str | None, typer.Option(
        "--prefix", "-p", metavar="P",
        help="Deliver under this subfolder of the delivery area (e.g. the requester).")] = None,
    local: Annotated[Path | None, typer.Option(
        "--local", "-l", metavar="LOCAL_DEST",
        help="Deliver into this directory (default: deliver.local_root).")] = None,
    web: Annotated[bool, typer.Option(
        "--web", help="Deliver into deliver.web_root and print the URL under web_url.")] = False,
    image_cache: Annotated[bool, typer.Option(
        "--image-cache", help="Deliver into deliver.image_cache_root (with --name: the "
                              "cached image set's name).")] = False,
    tar: Annotated[bool, typer.Option("--tar", "-t",
                                      help="Deliver one tar archive instead of files.")] = False,
    rawdata: Annotated[bool, typer.Option("--rawdata", "-r",
                                          help="Deliver rawdata/ instead of products/.")] = False,
    force: Annotated[bool, typer.Option("--force",
                                        help="Replace an existing delivery.")] = False,
    name: Annotated[str | None, typer.Option(
        "--name", "-n", metavar="NAME",
        help="Name of the delivery folder (default: SOURCE_DIR's name).")] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    settings = resolve_settings(load_tool_config("deliver", config), local_dest=local, web=web,
                                image_cache=image_cache)
    result = deliver(source_dir, settings, prefix=prefix, tar=tar, rawdata=rawdata,
                     force=force, name=name, progress=progress_lines(quiet, as_json))
    emit(result.as_dict(), as_json, lambda _: _human(result))


main = entry(app)


if __name__ == "__main__":
    main()
