"""ingest-envoy: stage a run's products, write the manifest, then ingest them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cli.common import JsonOption, QuietOption, emit
from cli.progress import ProgressBar, human_bytes
from cli.toolshell import ConfigOption, entry, tool_app
from docket.errors import UsageError

app = tool_app("Stage a processing directory's products and ingest them.")


def _dir_option(kind: str) -> Any:
    return typer.Option(f"--{kind}", metavar="DIR",
                        help=f"Ingest the {kind} products of the run in DIR.")


def render(result: dict[str, Any]) -> str:
    lines = [f"staged    {name}" for name in result["staged"]]
    lines += [f"skipped   {why}" for why in result["skipped"]]
    lines += [f"{p['status']:<9} {p['locator']}  ({p['files']} files, "
              f"{human_bytes(p['size_bytes'])})" for p in result["products"]]
    return "\n".join(lines)


@app.command()
def ingest_envoy(
    calibration: Annotated[Path | None, _dir_option("calibration")] = None,
    image: Annotated[Path | None, _dir_option("image")] = None,
    observation: Annotated[Path | None, _dir_option("observation")] = None,
    archive_root: Annotated[Path | None, typer.Option(
        "--archive-root", metavar="DIR", help="Archive (default: ingest.archive_root).")] = None,
    staging_root: Annotated[Path | None, typer.Option(
        "--staging-root", metavar="DIR",
        help="Where to stage (default: ingest-envoy.staging_root, else "
        "DIR/working/ingest-staging).")] = None,
    keep_staging: Annotated[bool, typer.Option(
        "--keep-staging", help="Keep the staging folder after a successful ingest.")] = False,
    config: ConfigOption = None,
    json_: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Stage products (calibration tables tarred, only the latest weblog), write the
    manifest, then ingest. Exit codes: 0 ok, 2 usage, 3 not found, 4 checksum
    mismatch, 7 archive locked, 8 invalid input, 1 other failure."""
    from envoys.ingest import run_envoy

    chosen = [(kind, d) for kind, d in (("calibration", calibration), ("image", image),
                                        ("observation", observation)) if d is not None]
    if len(chosen) != 1:
        raise UsageError("give exactly one of --calibration, --image, --observation",
                         "e.g. ingest-envoy --calibration /lustre/runs/req1")
    kind, directory = chosen[0]
    with ProgressBar("ingest", quiet=quiet) as bar:
        result = run_envoy(directory, kind, config=config, archive_root=archive_root,
                           staging_root=staging_root, keep_staging=keep_staging,
                           progress=lambda path, done, total: bar.update(done, total, path))
    emit(result.to_json(), json_, render)


main = entry(app)


if __name__ == "__main__":
    main()
