"""productfetcher: fetch products by locator (file://, http(s)://, uid://) into a directory."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.common import JsonOption, QuietOption, emit
from cli.progress import ProgressBar, human_bytes
from cli.toolshell import ConfigOption, entry, tool_app
from docket.errors import UsageError

app = tool_app("Fetch products by locator into a directory, verified and resumable.")


def render_plan(result: dict[str, Any]) -> str:
    lines = [f"plan: {len(result['plan'])} file(s) into {result['out_dir']}"]
    for item in result["plan"]:
        sha = (item["sha256"] or "-")[:12]
        action = "present" if item["present"] else "fetch"
        lines.append(f"{action:<8} {item['dest']}  {human_bytes(item['size_bytes'])}  "
                     f"sha256:{sha}  <- {item['source']}")
    return "\n".join(lines)


def render_report(result: dict[str, Any]) -> str:
    lines = [f"{f['status']:<8} {f['dest']}  {human_bytes(f['size_bytes'])}"
             for f in result["files"] if f["status"] != "failed"]
    lines.append(f"{result['fetched']} fetched, {result['present']} already present, "
                 f"{result['failed']} failed, {human_bytes(result['size_bytes'])} in "
                 f"{result['out_dir']}")
    return "\n".join(lines)


@app.command()
def productfetcher(
    out_dir: Annotated[Path, typer.Option(
        "--output-dir", "-o", metavar="DIR", help="Where the files go (created if needed).")],
    product_locator: Annotated[list[str] | None, typer.Option(
        "--product-locator", "-l", metavar="L",
        help="A locator: file:///abs/path, http(s)://host/file or "
        "uid://archive/type/name[/vN]. Repeat for more.")] = None,
    location_file: Annotated[Path | None, typer.Option(
        "--location-file", "-f", metavar="F",
        help="File of locators: one per line, or JSON with dest/size_bytes/sha256.")] = None,
    concurrency: Annotated[int | None, typer.Option(
        "--concurrency", "-n", metavar="N", help="Parallel transfers (default 4).")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print the plan; write nothing.")] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="Fetch again even files already present and correct.")] = False,
    catalog: Annotated[str | None, typer.Option(
        "--catalog", metavar="PATH|URL",
        help="Archive catalog for uid:// locators (default: productfetcher.catalog).")] = None,
    config: ConfigOption = None,
    json_: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Plan every locator into files, then fetch them with N workers, checking size and
    sha256 when known. Exit codes: 0 ok, 2 usage, 3 not found, 4 checksum mismatch,
    5 partial failure, 8 invalid input, 1 other failure."""
    from docket.tools import productfetcher as lib

    if dry_run and force:
        raise UsageError("--dry-run and --force exclude each other", "give one of them")
    if bool(product_locator) == (location_file is not None):
        raise UsageError("give either --product-locator (one or more) or --location-file",
                         "see productfetcher --help")
    settings = lib.load_settings(config, catalog=catalog, concurrency=concurrency)
    requests = ([lib.Request(locator) for locator in product_locator]
                if product_locator else lib.read_location_file(location_file))  # type: ignore[arg-type]
    plan = lib.plan_fetch(requests, settings)

    if dry_run:
        items = [dict(p.to_json(), present=lib.present(p, out_dir)) for p in plan]
        emit({"dry_run": True, "out_dir": str(out_dir.absolute()), "plan": items}, json_,
             render_plan)
        return

    with ProgressBar("fetch", quiet=quiet) as bar:
        report = lib.fetch(plan, out_dir, settings, force=force, progress=bar.update)
    result = report.to_json()
    error = report.error()
    if error is None:
        emit(result, json_, render_report)
        return
    if json_:
        emit(dict(result, ok=False, error={"code": error.code, "message": str(error)}), True)
    else:
        emit(result, False, render_report)
    sys.stderr.write(f"Error: {error}\n")
    raise typer.Exit(int(error.exit_code))


main = entry(app)


if __name__ == "__main__":
    main()
