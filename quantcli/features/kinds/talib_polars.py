"""The Polars-engine twins of the TA-Lib kinds added beside ``technical_v1``'s.

Each twin follows the ``Kind.polars`` contract of :mod:`quantcli.features.polars_graph`:
``twin(g, params, src) -> {"value": (expression, first defined bar)}``. They are written
independently of the kernels, from the indicator's definition, so a kernel bug shows up as a
disagreement. Native Polars expressions, except KAMA and SAR: their recursions are not linear
with a constant coefficient (KAMA's smoothing constant changes every bar; SAR reverses), so their
twins are a plain-Python loop per symbol in one ``map_batches`` (slow, and a reference only).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from quantcli.features.polars_graph import _SYMBOL, C, H, L, PolarsGraph, per_symbol, safe_div

Out = dict[str, tuple[pl.Expr, int]]


def _n(p: dict[str, Any]) -> int:
    return int(p["window"])


def _col(g: PolarsGraph, src: dict[str, str], role: str = "close") -> str:
    return src.get(role, role)


def ema(g: PolarsGraph, p: dict[str, Any], src: dict[str, str]) -> Out:
    n = _n(p)
    return {"value": (pl.col(g.ema(_col(g, src), n)), n - 1)}


def wma(g: PolarsGraph, p: dict[str, Any], src: dict[str, str]) -> Out:
    n = _n(p)
    x = pl.col(_col(g, src))
    total = pl.sum_horizontal(x.shift(k) * float(n - k) for k in range(n))
    return {"value": (total / float(n * (n + 1) // 2), n - 1)}


def _ema_chain(g: PolarsGraph, x: str, n: int, depth: int) -> list[str]:
    names = [g.ema(x, n)]
    for _ in range(depth - 1):
        names.append(g.ema(names[-1], n))
    return names


def dema(g: PolarsGraph, p: dict[str, Any], src: dict[str, str]) -> Out:
    n = _n(p)
    e1, e2 = (pl.col(c) for c in _ema_chain(g, _col(g, src), n, 2))
    return {"value": (2.0 * e1 - e2, 2 * (n - 1))}


def tema(g: PolarsGraph, p: dict[str, Any], src: dict[str, str]) -> Out:
    n = _n(p)
    e1, e2, e3 = (pl.col(c) for c in _ema_chain(g, _col(g, src), n, 3))
    return {"value": (3.0 * e1 - 3.0 * e2 + e3, 3 * (n - 1))}


def trix(g: PolarsGraph, p: dict[str, Any], src: dict[str, str]) -> Out:
    n = _n(p)
    e3 = pl.col(_ema_chain(g, _col(g, src), n, 3)[-1])
    prev = e3.shift(1)
    return {"value": (pl.when(prev == 0.0).then(0.0).otherwise((e3 / prev - 1.0) * 100.0),
                      3 * (n - 1) + 1)}  # fmt: skip


def linearreg_slope(g: PolarsGraph, p: dict[str, Any], src: dict[str, str]) -> Out:
    """Least-squares slope over ``n`` bars with x = 0 .. n-1 (oldest to newest)."""
    n = _n(p)
    x = pl.col(_col(g, src))
    xs = np.arange(n, dtype=np.float64)
    xm = xs.mean()
    sxx = float(((xs - xm) ** 2).sum())
    # sum((x_k - mean x) * y_k); y_k = close shifted by n - 1 - k
    num = pl.sum_horizontal(x.shift(n - 1 - k) * float(xs[k] - xm) for k in range(n))
    return {"value": (num / sxx, n - 1)}


def _python_loop(g: PolarsGraph, cols: list[str], name: str, step, first: int) -> tuple:
    """A plain-Python recursion ``step(list_of_column_arrays) -> np.ndarray`` run per symbol
    over one struct of the symbol id and ``cols``."""

    def run(s: pl.Series) -> pl.Series:
        df = s.struct.unnest()
        sym = df[_SYMBOL].to_numpy()
        arrays = [df[c].to_numpy().astype(np.float64) for c in cols]
        out = np.full(len(sym), np.nan)
        cuts = np.flatnonzero(np.diff(sym)) + 1
        for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(sym)], strict=True):
            out[a:b] = step([arr[a:b] for arr in arrays])
        return pl.Series(name, out)

    expr = pl.struct(_SYMBOL, *cols).map_batches(run, return_dtype=pl.Float64)
    return expr, first


def _kama_py(arrays: list[np.ndarray], n: int) -> np.ndarray:
    (x,) = arrays
    out = np.full(len(x), np.nan)
    if len(x) <= n:
        return out
    fast, slow = 2.0 / 3.0, 2.0 / 31.0
    kama = x[n - 1]
    for t in range(n, len(x)):
        change = abs(x[t] - x[t - n])
        noise = float(np.abs(np.diff(x[t - n : t + 1])).sum())
        er = 1.0 if noise <= x[t] - x[t - n] or abs(noise) < 1e-8 else min(change / noise, 1.0)
        sc = (er * (fast - slow) + slow) ** 2
        kama = kama + sc * (x[t] - kama)
        out[t] = kama
    return out


def kama(g: PolarsGraph, p: dict[str, Any], src: dict[str, str]) -> Out:
    n = _n(p)
    return {"value": _python_loop(g, [_col(g, src)], "kama", lambda a: _kama_py(a, n), n)}


def _sar_py(arrays: list[np.ndarray], acc: float, af_max: float) -> np.ndarray:
    high, low = arrays
    out = np.full(len(high), np.nan)
    if len(high) < 2:
        return out
    minus_dm = low[0] - low[1]
    plus_dm = high[1] - high[0]
    long = not (minus_dm > 0 and plus_dm < minus_dm)
    ep, sar = (high[1], low[0]) if long else (low[1], high[0])
    af = min(acc, af_max)
    for t in range(1, len(high)):
        ph, pl_ = (high[t - 1], low[t - 1]) if t > 1 else (high[1], low[1])
        h, lo = high[t], low[t]
        if long and lo <= sar:  # reverse to short
            long, sar = False, max(ep, ph, h)
            out[t], af, ep = sar, min(acc, af_max), lo
            sar = max(sar + af * (ep - sar), ph, h)
        elif not long and h >= sar:  # reverse to long
            long, sar = True, min(ep, pl_, lo)
            out[t], af, ep = sar, min(acc, af_max), h
            sar = min(sar + af * (ep - sar), pl_, lo)
        elif long:
            out[t] = sar
            if h > ep:
                ep, af = h, min(af + acc, af_max)
            sar = min(sar + af * (ep - sar), pl_, lo)
        else:
            out[t] = sar
            if lo < ep:
                ep, af = lo, min(af + acc, af_max)
            sar = max(sar + af * (ep - sar), ph, h)
    return out


def sar(g: PolarsGraph, p: dict[str, Any], src: dict[str, str]) -> Out:
    acc, top = float(p["acceleration"]), float(p["maximum"])
    return {"value": _python_loop(g, ["high", "low"], "sar", lambda a: _sar_py(a, acc, top), 1)}


# Names kept for the momentum twins module.
__all__ = [
    "C",
    "H",
    "L",
    "dema",
    "ema",
    "kama",
    "linearreg_slope",
    "per_symbol",
    "safe_div",
    "sar",
    "tema",
    "trix",
    "wma",
]
