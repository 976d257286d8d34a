"""Tests not marked ``condor`` never reach a real schedd: HTCondor is configured with
nothing around each of them (see ``condorkit.no_pool_reachable``). Tests marked
``condor`` need a live pool; where there is none they skip, saying what is missing and
how to run them (``pool_missing``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.htcondor.condorkit import no_pool_reachable, pool_missing


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("condor") is not None:
        reason = pool_missing()
        if reason:
            pytest.skip(reason)


@pytest.fixture(autouse=True)
def _no_live_pool_unless_marked(request: pytest.FixtureRequest) -> Iterator[None]:
    if request.node.get_closest_marker("condor") is not None:
        yield
        return
    with no_pool_reachable():
        yield
