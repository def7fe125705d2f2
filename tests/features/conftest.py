"""Fixtures of the feature-engine tests: a warmed-up kernel cache."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def _compiled_kernels() -> None:
    """Compile (or load from cache) the Numba kernels once, before any timed or CLI test."""
    from quantcli.data.synthetic import synthetic_universe
    from quantcli.features import compute_features

    compute_features(synthetic_universe(1, 250, seed=0))
