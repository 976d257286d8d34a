"""ingest: put a directory of products into the archive, as its manifest says."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cli.common import JsonOption, QuietOption, emit
from cli.progress import ProgressBar, human_bytes
from cli.toolshell import ConfigOption, entry, tool_app

app = tool_app("Put a directory of products into the archive, as its manifest says.")


def render(result: dict[str, Any]) -> str:
    lines = []
    for p in result["products"]:
        lines.append(f"{p['status']:<9} {p['locator']}  ({p['files']} files, "
                     f"{human_bytes(p['size_bytes'])})")
    return "\n".join(lines)


@app.command()
def ingest(
    source_dir: Annotated[Path, typer.Argument(
        metavar="SOURCE_DIR", help="Directory holding the products.")],
    manifest: Annotated[Path | None, typer.Option(
        "--manifest", "-m", metavar="FILE",
        help="Manifest (default: manifest.yaml/.yml/.json in SOURCE_DIR).")] = None,
    archive_root: Annotated[Path | None, typer.Option(
        "--archive-root", metavar="DIR", help="Archive (default: ingest.archive_root).")] = None,
    config: ConfigOption = None,
    json_: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Ingest SOURCE_DIR's products; unchanged products are reported, not stored twice."""
    from docket.tools import ingest as lib

    settings = lib.load_settings(config, archive_root=archive_root)
    with ProgressBar("ingest", quiet=quiet) as bar:
        result = lib.ingest(source_dir, settings.archive_root, manifest_path=manifest,
                            archive_name=settings.archive_name,
                            lock_timeout_s=settings.lock_timeout_s,
                            progress=lambda path, done, total: bar.update(done, total, path))
    emit(result.to_json(), json_, render)


main = entry(app)


if __name__ == "__main__":
    main()
