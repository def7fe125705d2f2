"""The Polars-engine twins of the classic kinds: native Polars expressions on a plan graph.

Each builder takes the ``"polars"`` engine's graph (:class:`PolarsGraph`) and a kind's checked
params and returns every output of the kind's TA-Lib call as ``{kind name: (expression, first
defined bar)}``; :func:`twin` turns one of them into a ``Kind.polars``. They agree with the
kernels to a relative 1e-9, not to the bit (Polars sums windows in its own order).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import polars as pl

from quantcli.features.polars_graph import _ZERO, C, H, L, PolarsGraph, V, rocp, safe_div

Builder = Callable[[PolarsGraph, dict[str, Any]], dict[str, tuple[pl.Expr, int]]]


def twin(builder: Builder, name: str) -> Callable[..., dict[str, tuple[pl.Expr, int]]]:
    """``Kind.polars`` of kind ``name``: its output of the shared builder, as ``"value"``."""

    def polars(g: PolarsGraph, params: dict[str, Any], src: dict[str, str]):
        return {"value": builder(g, params)[name]}

    polars.__doc__ = builder.__doc__
    return polars


def nma(g: PolarsGraph, p: dict[str, Any]) -> dict[str, tuple[pl.Expr, int]]:
    n = int(p["window"])
    sma = g.rolling("mean", "close", n)
    return {"nma": (pl.when(pl.col(sma) == 0.0).then(0.0).otherwise(C / pl.col(sma) - 1.0), n - 1)}


def bbands(g: PolarsGraph, p: dict[str, Any]) -> dict[str, tuple[pl.Expr, int]]:
    n = int(p["window"])
    middle = pl.col(g.rolling("mean", "close", n))
    dev = pl.col(g.stddev("close", n)) * float(p["nbdev"])
    upper, lower = middle + dev, middle - dev
    width = upper - lower
    return {
        "bb_pct": (safe_div(C - lower, width), n - 1),
        "bb_width": (safe_div(width, middle), n - 1),
    }


def volume_z(g: PolarsGraph, p: dict[str, Any]) -> dict[str, tuple[pl.Expr, int]]:
    n = int(p["window"])
    sma, std = g.rolling("mean", "volume", n), g.stddev("volume", n)
    return {"volume_z": (safe_div(V - pl.col(sma), pl.col(std)), n - 1)}


def rsi(g: PolarsGraph, p: dict[str, Any]) -> dict[str, tuple[pl.Expr, int]]:
    n = int(p["window"])
    gain = pl.col(g.wilder(g.input("__gain"), n))
    loss = pl.col(g.wilder(g.input("__loss"), n))
    total = gain + loss
    # 0 when no change was ever seen (gain + loss == 0), as TA-Lib
    return {"rsi": (pl.when(total > 0.0).then(100.0 * (gain / total)).otherwise(0.0), n)}


def roc(g: PolarsGraph, p: dict[str, Any]) -> dict[str, tuple[pl.Expr, int]]:
    k = int(p["window"])
    prev = C.shift(k)
    return {"roc": (pl.when(prev == 0.0).then(0.0).otherwise((C / prev - 1.0) * 100.0), k)}


def macd(g: PolarsGraph, p: dict[str, Any]) -> dict[str, tuple[pl.Expr, int]]:
    fast, slow = sorted((int(p["fast"]), int(p["slow"])))
    signal = int(p["signal"])
    seed_bar = slow - 1
    start = seed_bar + signal - 1
    fast_ema = g.ema("close", fast, seed_bar=seed_bar)
    slow_ema = g.ema("close", slow)
    line = g.put(f"__macd{fast}_{slow}", pl.col(fast_ema) - pl.col(slow_ema), seed_bar)
    sig = pl.col(g.ema(f"__macd{fast}_{slow}", signal))
    return {"macd": (line, start), "macd_signal": (sig, start), "macd_hist": (line - sig, start)}


def directional(g: PolarsGraph, p: dict[str, Any]) -> dict[str, tuple[pl.Expr, int]]:
    """TA-Lib's directional movement system over ``n`` bars: ADX, +DI, -DI."""
    n = int(p["window"])
    up = g.put("__up", H.diff(), 1)
    down = g.put("__down", -L.diff(), 1)
    # +DM and -DM as TA-Lib assigns them: at most one is non-zero
    g.put("__minus_dm", pl.when((down > 0.0) & (up < down)).then(down).otherwise(0.0), 1)
    g.put("__plus_dm", pl.when((up > 0.0) & (up > down)).then(up).otherwise(0.0), 1)
    tr = pl.col(g.wilder_sum(g.input("__tr"), n))
    plus_sum = pl.col(g.wilder_sum("__plus_dm", n))
    minus_sum = pl.col(g.wilder_sum("__minus_dm", n))
    tr_zero = tr.abs() < _ZERO
    plus = g.put(f"__plus_di{n}", pl.when(tr_zero).then(0.0).otherwise(100.0 * (plus_sum / tr)), n)
    minus = g.put(
        f"__minus_di{n}", pl.when(tr_zero).then(0.0).otherwise(100.0 * (minus_sum / tr)), n
    )
    total = minus + plus
    # DX is undefined (TA-Lib skips the bar) when TR or +DI + -DI is within 1e-8 of zero
    undefined = tr_zero | (total.abs() < _ZERO)
    dx = g.put(f"__dx{n}", pl.when(~undefined).then(100.0 * ((minus - plus).abs() / total)), n)
    # ADX starts at bar 2n-1 with the mean of the first n DX (an undefined DX counts 0), then
    # Wilder steps that skip an undefined DX (the average carries over)
    g.put(f"__dx{n}_or_0", dx.fill_null(0.0), n)
    seed = g.rolling("mean", f"__dx{n}_or_0", n)
    adx = g.recursion(f"__adx{n}", f"__dx{n}", seed, 2 * n - 1, 1 / n)
    return {"adx": (pl.col(adx), 2 * n - 1), "plus_di": (plus, n), "minus_di": (minus, n)}


def atr(g: PolarsGraph, p: dict[str, Any]) -> dict[str, tuple[pl.Expr, int]]:
    n = int(p["window"])
    return {"atr": (pl.col(g.wilder(g.input("__tr"), n)), n)}


def volatility(g: PolarsGraph, p: dict[str, Any]) -> dict[str, tuple[pl.Expr, int]]:
    n = int(p["window"])
    g.put("_rocp1", rocp(1), 1)
    return {"volatility": (pl.col(g.stddev("_rocp1", n)), n)}


def stoch(g: PolarsGraph, p: dict[str, Any]) -> dict[str, tuple[pl.Expr, int]]:
    fastk, slowk, slowd = int(p["fastk"]), int(p["slowk"]), int(p["slowd"])
    hh = pl.col(g.rolling("max", "high", fastk))
    ll = pl.col(g.rolling("min", "low", fastk))
    fast = f"__fastk{fastk}"
    g.put(fast, safe_div(C - ll, hh - ll) * 100.0, fastk - 1)  # 0 when HH == LL
    k = g.rolling("mean", fast, slowk)
    d = g.rolling("mean", k, slowd)
    start = g.first[d]  # slow %K is reported from %D's first bar on, as TA-Lib does
    return {"stoch_k": (pl.col(k), start), "stoch_d": (pl.col(d), start)}


def obv(g: PolarsGraph, p: dict[str, Any]) -> dict[str, tuple[pl.Expr, int]]:
    return {"obv": (pl.col(g.input("__obv")), 0)}


def obv_ema(g: PolarsGraph, p: dict[str, Any]) -> dict[str, tuple[pl.Expr, int]]:
    n = int(p["window"])
    return {"obv_ema": (pl.col(g.ema(g.input("__obv"), n)), n - 1)}


def ret(g: PolarsGraph, p: dict[str, Any]) -> dict[str, tuple[pl.Expr, int]]:
    k = int(p["window"])
    return {"return": (rocp(k), k)}
