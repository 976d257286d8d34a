"""Fixtures of the CASA envoy and vela tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from casa_testkit import build_tiny_ms


@pytest.fixture(scope="session")
def tiny_ms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ~2.4 MB Measurement Set simulated with real CASA, once per session."""
    return build_tiny_ms(tmp_path_factory.mktemp("tiny-ms"))
