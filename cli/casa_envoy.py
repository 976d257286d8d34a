"""casa-envoy: run CASA for a processing directory, then judge the run."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.common import JSON_SHAPE_VERSION, JsonOption, QuietOption
from cli.toolshell import ConfigOption, entry, progress_lines, tool_app
from docket.errors import ExitCode, UsageError
from docket.tools.config import load_tool_config

app = tool_app()

_MODES = ("calibration", "imaging", "restore", "restore-and-image")


def _human(report: dict[str, Any]) -> str:
    lines = [f"{report['mode']}: {report['verdict']} ({report['program']}, "
             f"{report['duration_s']} s)"]
    lines += [f"  {r['code']}: {r['message']}" for r in report["reasons"]]
    lines += [f"  product {p['path']} ({p['size_bytes']} bytes)" for p in report["products"]
              if p["present"]]
    lines.append(f"  report: {Path(report['directory']) / report['report']}")
    return "\n".join(lines)


@app.command()
def main_command(
    path: Annotated[Path, typer.Argument(
        help="The processing directory, or its metadata.json.")] = Path("."),
    calibration: Annotated[bool, typer.Option(
        "--calibration", help="flagdata, gaincal, applycal; the caltable to products/.")
    ] = False,
    imaging: Annotated[bool, typer.Option(
        "--imaging", help="tclean and exportfits; the FITS image to products/.")] = False,
    restore: Annotated[bool, typer.Option(
        "--restore", help="applycal of caltables from rawdata/; the calibrated MS to "
                          "products/.")] = False,
    restore_and_image: Annotated[bool, typer.Option(
        "--restore-and-image", help="applycal, then tclean and exportfits.")] = False,
    recipe: Annotated[Path | None, typer.Option(
        "--recipe", help="Run this rendered recipe (a capability's recipe.yaml: the "
                         "casatasks calls with their arguments).")] = None,
    part: Annotated[str, typer.Option(
        "--part", help="With --recipe: run this part of the recipe (one piece of a "
                       "fan-out; it works in working/PART/).")] = "",
    post: Annotated[bool, typer.Option(
        "--post", help="Post-CASA work of a recipe run: check its products, image "
                       "statistics and QA, component list, summary, provenance.")] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> int:
    """Run CASA (or vela) for a processing directory and judge the run.

    Success means: CASA exited 0, its casa log has no SEVERE line outside the allow-list,
    and every expected product is present and not empty. The verdict and its reasons
    are written to working/casa-envoy-report.json. Exit status 0 on success, 6 when the
    run failed, 2/3/8 when the directory or request is unusable.
    """
    chosen = [mode for mode, flag in zip((*_MODES, "recipe", "post"),
                                         (calibration, imaging, restore, restore_and_image,
                                          recipe is not None, post), strict=True) if flag]
    if len(chosen) != 1:
        raise UsageError("give exactly one of --calibration, --imaging, --restore, "
                         "--restore-and-image, --recipe FILE, --post",
                         "casa-envoy --imaging /path/to/processing-dir")
    settings = load_tool_config("casa-envoy", config)
    progress = progress_lines(quiet, as_json, prefix="casa-envoy: ", terminal_only=False)
    if chosen[0] == "post":
        from envoys.casa.postcasa import run_post

        summary = run_post(path, progress)
        if as_json:
            sys.stdout.write(json.dumps({"docket": JSON_SHAPE_VERSION, "ok": True, **summary},
                                        indent=2, sort_keys=True) + "\n")
        elif not quiet:
            sys.stdout.write("\n".join(summary["lines"]) + "\n")
        return int(ExitCode.OK)
    # Imported here so that --help stays fast.
    from envoys.casa.entry import run_envoy

    if part and chosen[0] != "recipe":
        raise UsageError("--part goes with --recipe", "casa-envoy --recipe recipe.yaml "
                                                       "--part piece_0 .")
    report = run_envoy(chosen[0], path, settings, progress, recipe_path=recipe, part=part)
    ok = report["verdict"] == "success"
    report_file = Path(report["directory"]) / report["report"]
    if as_json:
        payload: dict[str, Any] = {"docket": JSON_SHAPE_VERSION, "ok": ok, **report}
        if not ok:
            payload["error"] = {"code": "external-failure",
                                "message": report["reasons"][0]["message"]}
        sys.stdout.write(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    elif not quiet:
        sys.stdout.write(_human(report) + "\n")
    if ok:
        return int(ExitCode.OK)
    sys.stderr.write(f"Error: CASA run failed: {report['reasons'][0]['message']} — see "
                     f"{report_file}\n")
    return int(ExitCode.EXTERNAL)


main = entry(app)


if __name__ == "__main__":
    main()
