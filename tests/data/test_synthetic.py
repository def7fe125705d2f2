"""The synthetic universe: deterministic, consistent bars, volatility clustering, planted AR(1)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from quantcli.data import synthetic_universe, validate_bars
from quantcli.data.ingest import bars_sha256


def _returns(df: pl.DataFrame) -> np.ndarray:
    """(n_symbols, n_days - 2) one-bar log returns (the first bar's return is 0 by design)."""
    close = df["close"].to_numpy().reshape(df["symbol"].n_unique(), -1)
    return np.diff(np.log(close), axis=1)[:, 1:]


def test_same_arguments_same_bytes_other_seed_other_bytes():
    a = synthetic_universe(5, 300, seed=1)
    assert bars_sha256(a) == bars_sha256(synthetic_universe(5, 300, seed=1))
    assert bars_sha256(a) != bars_sha256(synthetic_universe(5, 300, seed=2))


def test_bars_are_consistent_and_pass_validation():
    df = synthetic_universe(20, 500, seed=3)
    assert df.height == 10_000 and df.schema["ts"] == pl.Datetime("us", "UTC")
    ok = df.select(
        (pl.col("high") >= pl.max_horizontal("open", "close")).all().alias("high_ok"),
        (pl.col("low") <= pl.min_horizontal("open", "close")).all().alias("low_ok"),
        (pl.col("low") > 0).all().alias("positive"),
        (pl.col("volume") > 0).all().alias("volume_ok"),
    )
    assert ok.row(0) == (True, True, True, True)
    assert df["ts"].dt.weekday().max() <= 5  # business days only
    assert validate_bars(df).warnings == []


def test_volatility_clusters():
    """GARCH(1,1): squared returns are positively autocorrelated (an i.i.d. walk gives ~0)."""
    r = _returns(synthetic_universe(30, 2000, seed=4))
    sq = r**2 - (r**2).mean(axis=1, keepdims=True)
    acf1 = (sq[:, 1:] * sq[:, :-1]).sum(axis=1) / (sq**2).sum(axis=1)
    # standard error of an acf under independence is about 1/sqrt(2000) = 0.022
    assert np.median(acf1) > 0.05


@pytest.mark.parametrize("ar1", [0.0, 0.3])
def test_planted_ar1_is_recovered(ar1):
    r = _returns(synthetic_universe(30, 2000, seed=5, ar1=ar1))
    c = r - r.mean(axis=1, keepdims=True)
    acf1 = (c[:, 1:] * c[:, :-1]).sum(axis=1) / (c**2).sum(axis=1)
    # pooled over 30 symbols x 2000 days: standard error ~ 0.004
    assert abs(acf1.mean() - ar1) < 0.03


def test_bad_arguments_name_the_parameter():
    with pytest.raises(ValueError, match="`n_days` must be at least 2"):
        synthetic_universe(1, 1)
    with pytest.raises(ValueError, match="`ar1` must be in"):
        synthetic_universe(1, 10, ar1=0.95)
