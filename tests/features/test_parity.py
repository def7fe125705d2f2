"""Parity with TA-Lib (the oracle): every column, real and synthetic bars, after warm-up."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from quantcli.data.synthetic import synthetic_universe
from quantcli.features import compute_features, feature_names, load_feature_set
from tests.features._talib_oracle import talib_reference

WARMUP = load_feature_set("technical_v1").warmup


@pytest.fixture(scope="module")
def sample_bars() -> pl.DataFrame:
    from quantcli.data import load_sample

    return load_sample()


@pytest.fixture(scope="module")
def synthetic_bars() -> pl.DataFrame:
    # GARCH volatility clustering plus a momentum signal; 6 symbols x 1500 bars
    return synthetic_universe(6, 1500, seed=11, ar1=0.15)


def assert_equals_talib(bars: pl.DataFrame, *, exact: bool) -> None:
    ours = compute_features(bars)
    ref = talib_reference(bars)
    assert sorted(ref) == ours["symbol"].unique().sort().to_list()
    for symbol, cols in ref.items():
        mine = ours.filter(pl.col("symbol") == symbol)
        n_bars = bars.filter(pl.col("symbol") == symbol).height
        assert mine.height == n_bars - WARMUP
        for name in feature_names():
            expected = cols[name][WARMUP:]
            got = mine[name].to_numpy()
            assert np.isfinite(expected).all(), f"{symbol}.{name}: TA-Lib undefined after warm-up"
            np.testing.assert_allclose(got, expected, rtol=1e-9, atol=0, err_msg=f"{symbol}.{name}")
            if exact:
                mismatched = int((got != expected).sum())
                assert mismatched == 0, f"{symbol}.{name}: {mismatched} values differ in some bit"


def test_parity_on_the_bundled_real_sample(sample_bars):
    assert_equals_talib(sample_bars, exact=True)


def test_parity_on_synthetic_bars(synthetic_bars):
    assert_equals_talib(synthetic_bars, exact=True)


def test_declared_lookback_equals_talib_lookback(synthetic_bars):
    """Each feature's first defined bar is TA-Lib's: the warm-up we drop is not a guess."""
    ref = talib_reference(synthetic_bars.filter(pl.col("symbol") == "SYM0000"))["SYM0000"]
    for spec in load_feature_set("technical_v1").features:
        first = int(np.flatnonzero(np.isfinite(ref[spec.name]))[0])
        assert first == spec.lookback, spec.name
    assert max(s.lookback for s in load_feature_set("technical_v1").features) == WARMUP == 199


def test_symbols_shorter_than_warmup_give_no_rows():
    bars = synthetic_universe(3, 260, seed=5)
    short = bars.filter(
        ~(
            (pl.col("symbol") == "SYM0001")
            & (pl.col("ts") > pl.col("ts").min() + pl.duration(days=200))
        )
    )
    out = compute_features(short)
    assert out["symbol"].unique().sort().to_list() == ["SYM0000", "SYM0002"]
    assert out.height == 2 * (260 - WARMUP)


def test_flat_prices_follow_talib_zero_convention():
    """HH == LL, zero variance, no price change: 0 (as TA-Lib returns), never NaN or inf."""
    n = 400
    ts = pl.datetime_range(
        pl.datetime(2020, 1, 1, time_zone="UTC"),
        pl.datetime(2020, 1, 1, time_zone="UTC") + pl.duration(days=n - 1),
        "1d",
        eager=True,
    )
    flat = pl.DataFrame(
        {
            "symbol": ["FLAT"] * n,
            "ts": ts,
            "open": [10.0] * n,
            "high": [10.0] * n,
            "low": [10.0] * n,
            "close": [10.0] * n,
            "volume": [1000.0] * n,
        }
    )
    out = compute_features(flat)
    values = out.select(feature_names()).to_numpy()
    assert np.isfinite(values).all()
    row = out.row(-1, named=True)
    zero = [n for n in feature_names() if n not in ("obv", "obv_ema")]
    assert {name: row[name] for name in zero} == dict.fromkeys(zero, 0.0)
    assert row["obv"] == row["obv_ema"] == 1000.0  # OBV[0] = volume[0], never changes
    ref = talib_reference(flat)["FLAT"]
    for name in ("rsi_14", "adx_14", "plus_di_14", "atr_14", "stoch_k", "stoch_d", "volatility_20",
                 "roc_10", "macd", "return_5d"):  # fmt: skip
        assert ref[name][-1] == 0.0, name  # TA-Lib's own convention on flat prices
