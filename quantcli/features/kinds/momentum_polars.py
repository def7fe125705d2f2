"""The Polars-engine twins of the oscillator kinds (:mod:`quantcli.features.kinds.talib_momentum`)
and of AD/ADOSC: native Polars expressions written from each indicator's definition, so they check
the kernels rather than repeat them. Contract: ``twin(g, params, src) -> {"value": (expression,
first defined bar)}`` (see :mod:`quantcli.features.polars_graph`).
"""

from __future__ import annotations

from typing import Any

import polars as pl

from quantcli.features.polars_graph import _ZERO, OPEN, C, H, L, PolarsGraph, V, per_symbol

Out = dict[str, tuple[pl.Expr, int]]
_TP = (H + L + C) / 3.0


def _n(p: dict[str, Any]) -> int:
    return int(p["window"])


def _zero_guard(den: pl.Expr, value: pl.Expr) -> pl.Expr:
    """``value``, or 0 where ``den`` is within 1e-8 of 0 (TA-Lib's TA_IS_ZERO)."""
    return pl.when(den.abs() < _ZERO).then(0.0).otherwise(value)


def cci(g: PolarsGraph, p: dict[str, Any], src: dict[str, str]) -> Out:
    n = _n(p)
    g.put("__tp", _TP, 0)
    tp = pl.col("__tp")
    mean = pl.col(g.rolling("mean", "__tp", n))
    mad = pl.sum_horizontal((tp.shift(k) - mean).abs() for k in range(n)) / float(n)
    diff = tp - mean
    ok = (diff.abs() >= _ZERO) & ((mad * n).abs() >= _ZERO)
    value = pl.when(ok).then(diff / (0.015 * mad)).otherwise(0.0)
    return {"value": (value, n - 1)}


def mfi(g: PolarsGraph, p: dict[str, Any], src: dict[str, str]) -> Out:
    n = _n(p)
    g.put("__tp", _TP, 0)
    change = pl.col("__tp").diff()
    flow = pl.col("__tp") * V
    g.put("__mf_pos", pl.when(change > 0.0).then(flow).otherwise(0.0), 1)
    g.put("__mf_neg", pl.when(change < 0.0).then(flow).otherwise(0.0), 1)
    pos = pl.col(g.rolling("sum", "__mf_pos", n))
    neg = pl.col(g.rolling("sum", "__mf_neg", n))
    total = pos + neg
    return {"value": (pl.when(total < 1.0).then(0.0).otherwise(100.0 * pos / total), n)}


def willr(g: PolarsGraph, p: dict[str, Any], src: dict[str, str]) -> Out:
    n = _n(p)
    hh = pl.col(g.rolling("max", "high", n))
    ll = pl.col(g.rolling("min", "low", n))
    rng = hh - ll
    return {"value": (pl.when(rng == 0.0).then(0.0).otherwise(-100.0 * (hh - C) / rng), n - 1)}


def _bars_since(x: pl.Expr, extreme: pl.Expr, n: int) -> pl.Expr:
    """Bars since ``x`` last equalled its window extreme (the newest bar on ties)."""
    return pl.min_horizontal(pl.when(x.shift(k) == extreme).then(float(k)) for k in range(n + 1))


def aroon(row: int):
    def twin(g: PolarsGraph, p: dict[str, Any], src: dict[str, str]) -> Out:
        n = _n(p)
        hh = pl.col(g.rolling("max", "high", n + 1))
        ll = pl.col(g.rolling("min", "low", n + 1))
        up = 100.0 * (n - _bars_since(H, hh, n)) / n
        down = 100.0 * (n - _bars_since(L, ll, n)) / n
        return {"value": ((down, up, up - down)[row], n)}

    return twin


def mom(g: PolarsGraph, p: dict[str, Any], src: dict[str, str]) -> Out:
    n = _n(p)
    return {"value": (C - C.shift(n), n)}


def cmo(g: PolarsGraph, p: dict[str, Any], src: dict[str, str]) -> Out:
    n = _n(p)
    gain = pl.col(g.wilder(g.input("__gain"), n))
    loss = pl.col(g.wilder(g.input("__loss"), n))
    total = gain + loss
    return {"value": (_zero_guard(total, 100.0 * (gain - loss) / total), n)}


def ppo(g: PolarsGraph, p: dict[str, Any], src: dict[str, str]) -> Out:
    fast, slow = sorted((int(p["fast"]), int(p["slow"])))
    if int(p["matype"]) == 1:  # EMAs, each seeded on its own first window
        f = pl.col(g.ema("close", fast))
        s = pl.col(g.ema("close", slow))
    else:
        f = pl.col(g.rolling("mean", "close", fast))
        s = pl.col(g.rolling("mean", "close", slow))
    return {"value": (_zero_guard(s, 100.0 * (f - s) / s), slow - 1)}


def ultosc(g: PolarsGraph, p: dict[str, Any], src: dict[str, str]) -> Out:
    p1, p2, p3 = sorted((int(p["window1"]), int(p["window2"]), int(p["window3"])))
    g.put("__bp", C - pl.min_horizontal(L, C.shift(1)), 1)  # buying pressure
    tr = g.input("__tr")
    total = pl.lit(0.0)
    for weight, w in ((4.0, p1), (2.0, p2), (1.0, p3)):
        a = pl.col(g.rolling("sum", "__bp", w))
        b = pl.col(g.rolling("sum", tr, w))
        total = total + _zero_guard(b, weight * a / b)
    return {"value": (100.0 * total / 7.0, p3)}


def natr(g: PolarsGraph, p: dict[str, Any], src: dict[str, str]) -> Out:
    n = _n(p)
    atr = pl.col(g.wilder(g.input("__tr"), n))
    return {"value": (_zero_guard(C, 100.0 * atr / C), n)}


def bop(g: PolarsGraph, p: dict[str, Any], src: dict[str, str]) -> Out:
    rng = H - L
    return {"value": (pl.when(rng < _ZERO).then(0.0).otherwise((C - OPEN) / rng), 0)}


def stochrsi(row: int):
    def twin(g: PolarsGraph, p: dict[str, Any], src: dict[str, str]) -> Out:
        n, k, d = _n(p), int(p["fastk"]), int(p["fastd"])
        gain = pl.col(g.wilder(g.input("__gain"), n))
        loss = pl.col(g.wilder(g.input("__loss"), n))
        total = gain + loss
        rsi = f"__rsi{n}"
        g.put(rsi, pl.when(total > 0.0).then(100.0 * gain / total).otherwise(0.0), n)
        hh = pl.col(g.rolling("max", rsi, k))
        ll = pl.col(g.rolling("min", rsi, k))
        fast = f"__stochrsi{n}_{k}"
        g.put(
            fast,
            pl.when((hh - ll).abs() < _ZERO)
            .then(0.0)
            .otherwise(100.0 * (pl.col(rsi) - ll) / (hh - ll)),
            n + k - 1,
        )
        start = n + k - 1 + d - 1
        return {"value": ((pl.col(fast), pl.col(g.rolling("mean", fast, d)))[row], start)}

    return twin


def _ad_column(g: PolarsGraph) -> str:
    rng = H - L
    mfv = pl.when(rng > 0.0).then(((C - L) - (H - C)) / rng * V).otherwise(0.0)
    g.put("__mfv", mfv, 0)
    g.put("__ad", per_symbol(pl.col("__mfv").cum_sum()), 0, masked=False)
    return "__ad"


def ad(g: PolarsGraph, p: dict[str, Any], src: dict[str, str]) -> Out:
    return {"value": (pl.col(_ad_column(g)), 0)}


def adosc(g: PolarsGraph, p: dict[str, Any], src: dict[str, str]) -> Out:
    """EMAs of AD seeded with AD's first value (TA-Lib's ADOSC), as ``ewm_mean`` from bar 0."""
    fast, slow = int(p["fast"]), int(p["slow"])
    adc = pl.col(_ad_column(g))
    ema = {}
    for n in (fast, slow):
        name = f"__ad_ema{n}"
        g.put(name, per_symbol(adc.ewm_mean(alpha=2.0 / (n + 1), adjust=False)), 0, masked=False)
        ema[n] = pl.col(name)
    return {"value": (ema[fast] - ema[slow], max(fast, slow) - 1)}
