"""docket's one definition of "CASA succeeded" (envoys.casa.auditor.judge) and the log reader."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from docket.tools.casalog import format_entry, log_name, parse_log_text, read_log
from envoys.casa.auditor import ALLOWED_SEVERE, judge, new_log_entries

LEAP = (
    "2026-11-21 09:29:35\tSEVERE\tMeasTable::dUTC(Double) (file MeasTable.cc, line 4290)\t"
    "Leap second table TAI_UTC seems out-of-date.\n"
    "2026-11-21 09:29:35\tSEVERE\tMeasTable::dUTC(Double) (file MeasTable.cc, line 4290)+\t"
    "Until the table is updated (see the CASA documentation or your system admin),\n"
    "2026-11-21 09:29:35\tSEVERE\tMeasTable::dUTC(Double) (file MeasTable.cc, line 4290)+\t"
    "times and coordinates derived from UTC could be wrong by 1s or more.\n"
)
INFO = "2026-11-21 09:29:36\tINFO\tgaincal::::casa\t##### Begin Task: gaincal            #####\n"


def product(tmp_path: Path, name: str = "img.fits", data: bytes = b"x") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_log_name_and_line_format() -> None:
    when = datetime(2026, 11, 21, 9, 29, 35, tzinfo=UTC)
    assert log_name(when) == "casa-20261121-092935.log"
    assert format_entry("SEVERE", "x::y", "one\ntwo", when) == (
        "2026-11-21 09:29:35\tSEVERE\tx::y\tone\n2026-11-21 09:29:35\tSEVERE\tx::y+\ttwo\n")


def test_continuation_lines_join_their_entry() -> None:
    entries = parse_log_text(INFO + LEAP + "stray line without tabs\n")
    assert [e.priority for e in entries] == ["INFO", "SEVERE"]
    assert entries[1].line_no == 2
    assert entries[1].message.count("\n") == 3  # two continuations and the stray line
    assert entries[1].message.endswith("stray line without tabs")


def test_success_needs_exit_0_clean_log_and_products(tmp_path: Path) -> None:
    verdict = judge(0, {"casa.log": parse_log_text(INFO)}, [product(tmp_path)])
    assert verdict.ok and verdict.reasons == []


def test_allow_listed_severe_does_not_fail(tmp_path: Path) -> None:
    verdict = judge(0, {"casa.log": parse_log_text(INFO + LEAP)}, [product(tmp_path)])
    assert verdict.ok
    assert [a["rule"] for a in verdict.allowed_severe] == ["stale-leap-second-table"]


def test_allow_list_needs_origin_and_message(tmp_path: Path) -> None:
    # The same words from another origin are not the leap-second warning.
    forged = LEAP.replace("MeasTable::dUTC(Double)", "gaincal::::casa")
    verdict = judge(0, {"casa.log": parse_log_text(forged)}, [product(tmp_path)])
    assert not verdict.ok
    assert [r.code for r in verdict.reasons] == ["severe"]
    assert verdict.reasons[0].message == (
        "SEVERE in casa.log line 1: gaincal::::casa (file MeasTable.cc, line 4290): Leap "
        "second table TAI_UTC seems out-of-date.")


def test_every_reason_is_reported(tmp_path: Path) -> None:
    severe = "2026-11-21 09:29:36\tSEVERE\tFluxStandard::compute\tpt is not recognized\n"
    empty = product(tmp_path, "empty.fits", b"")
    verdict = judge(1, {"casa.log": parse_log_text(severe)},
                    [empty, tmp_path / "gone.fits"], failure_detail="RuntimeError: boom",
                    product_root=tmp_path)
    assert verdict.verdict == "failed"
    assert [(r.code, r.message) for r in verdict.reasons] == [
        ("exit-status", "CASA exited with status 1: RuntimeError: boom"),
        ("severe", "SEVERE in casa.log line 1: FluxStandard::compute: pt is not recognized"),
        ("empty-product", "expected product empty.fits is empty (0 bytes)"),
        ("missing-product", "expected product gone.fits is missing"),
    ]


def test_no_log_fails(tmp_path: Path) -> None:
    verdict = judge(0, {}, [product(tmp_path)])
    assert [r.code for r in verdict.reasons] == ["no-log"]


def test_not_started_and_timeout(tmp_path: Path) -> None:
    assert [r.code for r in judge(None, {}, []).reasons] == ["not-started"]
    timed_out = judge(-15, {"l": []}, [], timed_out=True)
    assert [r.code for r in timed_out.reasons] == ["timeout"]


def test_only_this_runs_part_of_a_log_is_read(tmp_path: Path) -> None:
    # CASA appends to a log of the same name: the earlier run's SEVERE is not this run's.
    log = tmp_path / "casa-20261121-092935.log"
    log.write_text(LEAP.replace("Leap second", "Old failure"))
    before = {log: log.stat().st_size}
    with open(log, "a") as fh:
        fh.write(INFO)
    found = new_log_entries(tmp_path, before)
    assert [e.priority for e in found[log]] == ["INFO"]
    assert found[log][0].line_no == 4
    assert read_log(log, start_byte=before[log])[0].message.startswith("##### Begin")


def test_allow_list_is_explicit() -> None:
    assert [rule.name for rule in ALLOWED_SEVERE] == ["stale-leap-second-table"]
