"""Shared fixtures: an isolated $QCLI_HOME per test, Hypothesis profiles, small synthetic data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Hypothesis profiles, chosen by HYPOTHESIS_PROFILE: `dev` (fast, default), `ci` (thorough).
settings.register_profile(
    "dev", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "ci",
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture
def qcli_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty $QCLI_HOME for one test (also exported to subprocesses)."""
    home = tmp_path / "qcli_home"
    home.mkdir()
    monkeypatch.setenv("QCLI_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return home


@pytest.fixture(scope="session")
def small_universe():
    """8 symbols x 400 business days, seeded; no planted signal."""
    from quantcli.data.synthetic import synthetic_universe

    return synthetic_universe(n_symbols=8, n_days=400, seed=7)


@pytest.fixture
def store_holder(qcli_home: Path):
    """A second, real process holding ``$QCLI_HOME/offline.duckdb`` open (DuckDB's file lock).

    Yields once the holder has the store; the lock goes with the process at teardown.
    """
    import subprocess
    import sys

    from quantcli.store.offline import OfflineStore

    OfflineStore().close()  # the file exists, so the holder opens rather than creates it
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nfrom quantcli.store.offline import OfflineStore\n"
            "s = OfflineStore()\nprint('ready', flush=True)\ntime.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        yield holder
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
