"""The TA-Lib oracle: the 29 columns of technical_v1 as TA-Lib computes them."""

from __future__ import annotations

import numpy as np
import polars as pl


def talib_reference(bars: pl.DataFrame) -> dict[str, dict[str, np.ndarray]]:
    """The 29 columns of technical_v1 computed with TA-Lib, per symbol, full length (NaN warm-up).

    Every column is the TA-Lib call named in ``feature_defs/technical_v1.toml`` (derived ratios
    are formed from TA-Lib's own outputs).
    """
    import talib  # the oracle (dev extra); a missing oracle must fail, not skip

    out: dict[str, dict[str, np.ndarray]] = {}
    for (symbol,), g in bars.sort("symbol", "ts").group_by("symbol", maintain_order=True):
        h, lo, c, v = (
            g[x].to_numpy().astype(np.float64) for x in ("high", "low", "close", "volume")
        )
        upper, middle, lower = talib.BBANDS(c, 20, 2.0, 2.0, 0)
        macd, signal, hist = talib.MACD(c, 12, 26, 9)
        slowk, slowd = talib.STOCH(h, lo, c, 14, 3, 0, 3, 0)
        obv = talib.OBV(c, v)
        r1 = talib.ROCP(c, 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            cols = {
                **{f"nma_{n}": c / talib.SMA(c, n) - 1.0 for n in (9, 20, 50, 200)},
                "bb_pct": (c - lower) / (upper - lower),
                "bb_width": (upper - lower) / middle,
                **{
                    f"volume_z_{n}": (v - talib.SMA(v, n)) / talib.STDDEV(v, n, 1.0)
                    for n in (20, 50)
                },
                "rsi_14": talib.RSI(c, 14),
                "rsi_21": talib.RSI(c, 21),
                "roc_10": talib.ROC(c, 10),
                "roc_20": talib.ROC(c, 20),
                "macd": macd,
                "macd_signal": signal,
                "macd_hist": hist,
                "adx_14": talib.ADX(h, lo, c, 14),
                "plus_di_14": talib.PLUS_DI(h, lo, c, 14),
                "minus_di_14": talib.MINUS_DI(h, lo, c, 14),
                "atr_14": talib.ATR(h, lo, c, 14),
                "volatility_20": talib.STDDEV(r1, 20, 1.0),
                "volatility_50": talib.STDDEV(r1, 50, 1.0),
                "stoch_k": slowk,
                "stoch_d": slowd,
                "obv": obv,
                "obv_ema": talib.EMA(obv, 20),
                **{f"return_{k}d": talib.ROCP(c, k) for k in (1, 5, 10, 20)},
            }
        out[symbol] = cols
    return out
