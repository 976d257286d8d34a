"""vela: run a CASA job instantly, the way CASA would (a stand-in for tests and rehearsals)."""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer

from cli.common import JsonOption, QuietOption, emit
from cli.toolshell import entry, tool_app
from docket.tools.casajob import FAIL_MODES, JOB_FILE, read_job
from docket.tools.vela import run_vela

app = tool_app()


@app.command()
def main_command(
    job: Annotated[Path, typer.Argument(help="The job file casa-envoy wrote.")] = Path(JOB_FILE),
    fail: Annotated[str | None, typer.Option(
        help=f"Fail this way ({', '.join(FAIL_MODES)}); default: the job's vela.fail.")] = None,
    fail_at: Annotated[str | None, typer.Option(
        help="The task that fails (default: the first task; for missing-product, the "
             "last task that writes a product).")] = None,
    leap_second_warnings: Annotated[bool, typer.Option(
        "--leap-second-warnings",
        help="Log CASA's three SEVERE 'Leap second table TAI_UTC seems out-of-date' "
             "lines, as CASA does with stale measures data.")] = False,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> int:
    """A CASA stand-in: run JOB (default ./casa-envoy-job.json) in an instant.

    Reads the job file the CASA envoy wrote, writes a casa log in CASA's format into the
    current directory and fake products where CASA would write them. --fail makes it
    fail in one of CASA's ways. Exit status 0, or 1 with a traceback when a task raises
    (as CASA does).
    """
    progress = None if quiet or as_json else (lambda line: print(line, flush=True))
    casa_job = read_job(job)
    try:
        result = run_vela(casa_job, Path.cwd(), fail=fail, fail_at=fail_at,
                          leap_second_warnings=leap_second_warnings, progress=progress)
    except (AssertionError, RuntimeError) as exc:
        # CASA lets these end the process with a traceback and exit status 1; so does vela.
        traceback.print_exception(exc, file=sys.stderr)
        return 1
    emit(result.to_dict(), as_json,
         lambda r: f"vela: {len(r['tasks'])} task(s), log {r['log']}")
    return 0


main = entry(app)


if __name__ == "__main__":
    main()
