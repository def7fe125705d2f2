"""A seeded synthetic universe of daily OHLCV bars, for tests and benchmarks.

Each symbol's log returns follow a GARCH(1,1) process (volatility clustering) with an optional
AR(1) term (``ar1``): a planted, learnable signal -- with ``ar1 > 0`` past returns predict the
next one, so a model on the technical features can earn a real Sharpe ratio. Bars are consistent
by construction: ``high >= max(open, close)``, ``low <= min(open, close)``, all prices > 0,
volume > 0 and correlated with the size of the move.

Same ``(n_symbols, n_days, seed, ar1)`` -> the same bytes.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import polars as pl


def synthetic_universe(
    n_symbols: int = 50,
    n_days: int = 1000,
    seed: int = 42,
    *,
    ar1: float = 0.0,
    start: datetime = datetime(2000, 1, 3, tzinfo=UTC),
) -> pl.DataFrame:
    """Generate ``n_symbols`` x ``n_days`` bars on business days from ``start``.

    Parameters
    ----------
    n_symbols, n_days
        Size of the panel (``n_symbols * n_days`` rows).
    seed
        Seed of the NumPy generator; the output is a pure function of the arguments.
    ar1
        First-order autocorrelation of daily log returns, in ``[0, 0.9]``. ``0`` is a random walk
        with volatility clustering (no edge); ``0.1`` or more plants a momentum signal.

    Returns
    -------
    polars.DataFrame
        Columns ``symbol`` (``SYM0000``...), ``ts`` (``Datetime("us", "UTC")``), ``open``,
        ``high``, ``low``, ``close``, ``volume`` (Float64), sorted by ``(symbol, ts)``.
    """
    if n_symbols < 1:
        raise ValueError(f"`n_symbols` must be at least 1, got `n_symbols={n_symbols}`.")
    if n_days < 2:
        raise ValueError(f"`n_days` must be at least 2, got `n_days={n_days}`.")
    if not 0.0 <= ar1 <= 0.9:
        raise ValueError(f"`ar1` must be in [0, 0.9], got `ar1={ar1}`.")
    rng = np.random.default_rng(seed)
    S, T = n_symbols, n_days

    # GARCH(1,1) per symbol: sigma2_t = w + a * e_{t-1}^2 + b * sigma2_{t-1}
    target_vol = rng.uniform(0.008, 0.03, S)  # daily
    alpha, beta = 0.08, 0.90
    omega = target_vol**2 * (1 - alpha - beta)
    drift = rng.normal(0.0002, 0.0003, S)
    z = rng.standard_normal((T, S))
    logret = np.empty((T, S))
    sigma2 = target_vol**2
    prev_eps = np.zeros(S)
    prev_ret = np.zeros(S)
    for t in range(T):
        sigma2 = omega + alpha * prev_eps**2 + beta * sigma2
        eps = np.sqrt(sigma2) * z[t]
        r = drift + ar1 * (prev_ret - drift) + eps
        logret[t] = r
        prev_eps, prev_ret = eps, r
    logret[0] = 0.0
    start_price = rng.uniform(10.0, 500.0, S)
    close = start_price * np.exp(np.cumsum(logret, axis=0))

    # open: previous close times an overnight gap; high/low envelop open and close
    gap = rng.normal(0.0, 0.25, (T, S)) * np.sqrt(sigma2)[None, :] * 0.5
    prev_close = np.vstack([start_price[None, :], close[:-1]])
    open_ = prev_close * np.exp(gap)
    spread_hi = np.abs(rng.normal(0.0, 0.5, (T, S))) * np.abs(logret).mean(axis=0) + 1e-4
    spread_lo = np.abs(rng.normal(0.0, 0.5, (T, S))) * np.abs(logret).mean(axis=0) + 1e-4
    high = np.maximum(open_, close) * (1.0 + spread_hi)
    low = np.minimum(open_, close) * (1.0 - np.minimum(spread_lo, 0.5))

    base_volume = rng.uniform(1e5, 5e6, S)
    vol_noise = rng.lognormal(0.0, 0.3, (T, S))
    volume = np.round(base_volume * vol_noise * (1.0 + 20.0 * np.abs(logret)))
    volume = np.maximum(volume, 1.0)

    dates = np.busday_offset(np.datetime64(start.date(), "D"), np.arange(T), roll="forward").astype(
        "datetime64[us]"
    )
    symbols = np.array([f"SYM{i:04d}" for i in range(S)])
    # column-major (T, S) -> symbol-major rows
    return pl.DataFrame(
        {
            "symbol": np.repeat(symbols, T),
            "ts": np.tile(dates, S),
            "open": open_.T.ravel(),
            "high": high.T.ravel(),
            "low": low.T.ravel(),
            "close": close.T.ravel(),
            "volume": volume.T.ravel(),
        }
    ).with_columns(pl.col("ts").dt.replace_time_zone("UTC"))
