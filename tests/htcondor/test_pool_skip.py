"""Where no pool runs, a ``condor`` test's skip says what is missing and how to run it."""

from __future__ import annotations

import pytest

from tests.htcondor.condorkit import pool_missing, stub_dagman


def test_without_htcondor_the_reason_names_the_missing_program(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing of HTCondor's on it
    reason = pool_missing.__wrapped__()
    assert reason.startswith("no HTCondor pool here: condor_submit_dag is not on PATH; ")
    assert "'pytest -m condor tests/htcondor'" in reason
    assert "under /var/tmp" in reason and "DOCKET_POOL_TIMEOUT_S" in reason


def test_with_htcondor_but_no_schedd_the_reason_says_so(monkeypatch, tmp_path):
    # an installed condor_submit_dag, but HTCondor configured with nothing (this test is
    # unmarked: conftest.py points CONDOR_CONFIG at /dev/null around it)
    stub = stub_dagman(tmp_path)
    stub.rename(tmp_path / "condor_submit_dag")
    monkeypatch.setenv("PATH", str(tmp_path))
    reason = pool_missing.__wrapped__()
    assert reason.startswith("condor_submit_dag is on PATH but this machine's schedd does "
                             "not answer (")
    assert "start HTCondor (condor_master) or set CONDOR_CONFIG" in reason


@pytest.mark.condor
def test_a_condor_test_runs_only_where_a_schedd_answers():
    assert pool_missing() is None  # else this was skipped, with the reason

