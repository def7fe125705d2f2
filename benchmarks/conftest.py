"""Benchmark fixtures: synthetic universes built once per session, the real sample, a $QCLI_HOME.

``pytest benchmarks`` checks the budgets (each benchmark compares quantcli against a named peer
in the same run, as a ratio, plus an absolute budget). The CI smoke run
``pytest benchmarks --benchmark-disable -m "not slow"`` only checks that they execute.
"""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """No xdist distribution here: ``--dist loadgroup`` comes from addopts for the test suite's
    ``-n`` runs, and pytest-benchmark takes any ``--dist`` for xdist and disables every
    benchmark (no timing; the guarded budgets skipped; smoke sizes). Benchmarks run in one
    process."""
    if not getattr(config.option, "numprocesses", None):
        config.option.dist = "no"


@pytest.fixture(scope="session")
def universe_500x5000() -> pl.DataFrame:
    """500 symbols x 5000 business days (2.5 M bars), ``synthetic_universe(500, 5000, seed=42)``."""
    from quantcli.data.synthetic import synthetic_universe

    return synthetic_universe(500, 5000, seed=42)


@pytest.fixture(scope="session")
def universe_50x1000() -> pl.DataFrame:
    """50 symbols x 1000 business days (50 k bars), ``synthetic_universe(50, 1000, seed=42)``."""
    from quantcli.data.synthetic import synthetic_universe

    return synthetic_universe(50, 1000, seed=42)


@pytest.fixture(scope="session")
def sample_bars() -> pl.DataFrame:
    """The bundled real sample (SPX and IXIC daily bars, 10062 rows)."""
    from quantcli.data import load_sample

    return load_sample()


@pytest.fixture
def qcli_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty $QCLI_HOME for one benchmark (also exported to subprocesses)."""
    home = tmp_path / "qcli_home"
    home.mkdir()
    monkeypatch.setenv("QCLI_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return home


@pytest.fixture(autouse=True)
def _written_back_before_each_benchmark():
    """Flush the dirty pages earlier benchmarks left (stores of several GB): otherwise the
    kernel writes them back while the next benchmark is timed, on the same cores and disk."""
    os.sync()
