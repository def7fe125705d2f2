"""Training frames for the backtest tests: synthetic bars, simple momentum features, labels."""

from __future__ import annotations

import polars as pl
import pytest

from quantcli.data.synthetic import synthetic_universe
from quantcli.features.labels import compute_labels

FEATURES = ["ret_1", "ret_5", "ret_20"]


def training_frame(n_symbols: int, n_days: int, seed: int, ar1: float) -> pl.DataFrame:
    """``symbol, ts, ret_1, ret_5, ret_20, label (5-day), label_end, fwd_return_1d``."""
    bars = synthetic_universe(n_symbols, n_days, seed, ar1=ar1)
    feats = bars.sort("symbol", "ts").with_columns(
        *[
            (pl.col("close") / pl.col("close").shift(n).over("symbol") - 1).alias(f"ret_{n}")
            for n in (1, 5, 20)
        ]
    )
    label = compute_labels(bars, 5).collect()
    fwd1 = compute_labels(bars, 1).collect().select("symbol", "ts", fwd_return_1d="label")
    return (
        feats.select("symbol", "ts", *FEATURES)
        .join(label, on=["symbol", "ts"])
        .join(fwd1, on=["symbol", "ts"])
        .drop_nulls()
        .sort("ts", "symbol")
    )


@pytest.fixture(scope="session")
def signal_frame() -> pl.DataFrame:
    """A planted momentum signal (AR(1) = 0.3): a model on these features earns a real Sharpe."""
    return training_frame(6, 600, seed=3, ar1=0.3)


@pytest.fixture(scope="session")
def noise_frame() -> pl.DataFrame:
    """A random walk: no edge to learn."""
    return training_frame(6, 600, seed=4, ar1=0.0)
