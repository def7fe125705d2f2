"""The 19 kinds of ``technical_v1`` as declarations (params, lookback, outputs, TA-Lib name)
with their Polars twins, until their stateful kernels land in a kinds module of their own.

A kind registered by another module first wins: this module only fills the names still missing,
so the classic kinds can move out of here one by one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from quantcli.features.kinds._base import _REGISTRY, Kind, Param, register
from quantcli.features.polars_graph import (
    _ZERO,
    C,
    H,
    L,
    PolarsGraph,
    V,
    rocp,
    safe_div,
)


def _nma(g: PolarsGraph, p: dict[str, Any]) -> dict[str, tuple[pl.Expr, int]]:
    n = int(p["window"])
    sma = g.rolling("mean", "close", n)
    return {"nma": (pl.when(pl.col(sma) == 0.0).then(0.0).otherwise(C / pl.col(sma) - 1.0), n - 1)}


def _bbands(g: PolarsGraph, p: dict[str, Any]) -> dict[str, tuple[pl.Expr, int]]:
    n = int(p["window"])
    middle = pl.col(g.rolling("mean", "close", n))
    dev = pl.col(g.stddev("close", n)) * float(p["nbdev"])
    upper, lower = middle + dev, middle - dev
    width = upper - lower
    return {
        "bb_pct": (safe_div(C - lower, width), n - 1),
        "bb_width": (safe_div(width, middle), n - 1),
    }


def _volume_z(g: PolarsGraph, p: dict[str, Any]) -> dict[str, tuple[pl.Expr, int]]:
    n = int(p["window"])
    sma, std = g.rolling("mean", "volume", n), g.stddev("volume", n)
    return {"volume_z": (safe_div(V - pl.col(sma), pl.col(std)), n - 1)}


def _rsi(g: PolarsGraph, p: dict[str, Any]) -> dict[str, tuple[pl.Expr, int]]:
    n = int(p["window"])
    gain = pl.col(g.wilder(g.input("__gain"), n))
    loss = pl.col(g.wilder(g.input("__loss"), n))
    total = gain + loss
    # 0 when no change was ever seen (gain + loss == 0), as TA-Lib
    return {"rsi": (pl.when(total > 0.0).then(100.0 * (gain / total)).otherwise(0.0), n)}


def _roc(g: PolarsGraph, p: dict[str, Any]) -> dict[str, tuple[pl.Expr, int]]:
    k = int(p["window"])
    prev = C.shift(k)
    return {"roc": (pl.when(prev == 0.0).then(0.0).otherwise((C / prev - 1.0) * 100.0), k)}


def _macd(g: PolarsGraph, p: dict[str, Any]) -> dict[str, tuple[pl.Expr, int]]:
    fast, slow = sorted((int(p["fast"]), int(p["slow"])))
    signal = int(p["signal"])
    seed_bar = slow - 1
    start = seed_bar + signal - 1
    fast_ema = g.ema("close", fast, seed_bar=seed_bar)
    slow_ema = g.ema("close", slow)
    line = g.put(f"__macd{fast}_{slow}", pl.col(fast_ema) - pl.col(slow_ema), seed_bar)
    sig = pl.col(g.ema(f"__macd{fast}_{slow}", signal))
    return {"macd": (line, start), "macd_signal": (sig, start), "macd_hist": (line - sig, start)}


def _directional(g: PolarsGraph, p: dict[str, Any]) -> dict[str, tuple[pl.Expr, int]]:
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


def _atr(g: PolarsGraph, p: dict[str, Any]) -> dict[str, tuple[pl.Expr, int]]:
    n = int(p["window"])
    return {"atr": (pl.col(g.wilder(g.input("__tr"), n)), n)}


def _volatility(g: PolarsGraph, p: dict[str, Any]) -> dict[str, tuple[pl.Expr, int]]:
    n = int(p["window"])
    g.put("_rocp1", rocp(1), 1)
    return {"volatility": (pl.col(g.stddev("_rocp1", n)), n)}


def _stoch(g: PolarsGraph, p: dict[str, Any]) -> dict[str, tuple[pl.Expr, int]]:
    fastk, slowk, slowd = int(p["fastk"]), int(p["slowk"]), int(p["slowd"])
    hh = pl.col(g.rolling("max", "high", fastk))
    ll = pl.col(g.rolling("min", "low", fastk))
    fast = f"__fastk{fastk}"
    g.put(fast, safe_div(C - ll, hh - ll) * 100.0, fastk - 1)  # 0 when HH == LL
    k = g.rolling("mean", fast, slowk)
    d = g.rolling("mean", k, slowd)
    start = g.first[d]  # slow %K is reported from %D's first bar on, as TA-Lib does
    return {"stoch_k": (pl.col(k), start), "stoch_d": (pl.col(d), start)}


def _obv(g: PolarsGraph, p: dict[str, Any]) -> dict[str, tuple[pl.Expr, int]]:
    return {"obv": (pl.col(g.input("__obv")), 0)}


def _obv_ema(g: PolarsGraph, p: dict[str, Any]) -> dict[str, tuple[pl.Expr, int]]:
    n = int(p["window"])
    return {"obv_ema": (pl.col(g.ema(g.input("__obv"), n)), n - 1)}


def _return(g: PolarsGraph, p: dict[str, Any]) -> dict[str, tuple[pl.Expr, int]]:
    k = int(p["window"])
    return {"return": (rocp(k), k)}


_W = Param("window", doc="bars in the window")
_NBDEV = Param("nbdev", float, min=0.0, doc="band width in standard deviations")
_MACD = (Param("fast", doc="fast EMA bars"), Param("slow", doc="slow EMA bars"),
         Param("signal", doc="signal EMA bars"))  # fmt: skip
_STOCH = (Param("fastk", doc="%K window"), Param("slowk", doc="slow %K SMA bars"),
          Param("slowd", doc="%D SMA bars"))  # fmt: skip


def _macd_lb(p):
    return max(p["fast"], p["slow"]) - 1 + p["signal"] - 1


def _stoch_lb(p):
    return p["fastk"] - 1 + p["slowk"] - 1 + p["slowd"] - 1


_SPECS: list[tuple[str, tuple, Any, Any, tuple[str, ...], str, str]] = [
    ("nma", (_W,), lambda p: p["window"] - 1, _nma, ("close",), "SMA", "close / SMA(close, n) - 1"),
    ("bb_pct", (_W, _NBDEV), lambda p: p["window"] - 1, _bbands, ("close",), "BBANDS",
     "(close - lower) / (upper - lower)"),
    ("bb_width", (_W, _NBDEV), lambda p: p["window"] - 1, _bbands, ("close",), "BBANDS",
     "(upper - lower) / middle"),
    ("volume_z", (_W,), lambda p: p["window"] - 1, _volume_z, ("volume",), "SMA, STDDEV",
     "(volume - SMA(volume, n)) / STDDEV(volume, n); population std"),
    ("rsi", (_W,), lambda p: p["window"], _rsi, ("close",), "RSI", "Wilder's RSI, 0..100"),
    ("roc", (_W,), lambda p: p["window"], _roc, ("close",), "ROC", "rate of change, percent"),
    ("macd", _MACD, _macd_lb, _macd, ("close",), "MACD", "MACD line"),
    ("macd_signal", _MACD, _macd_lb, _macd, ("close",), "MACD", "MACD signal line"),
    ("macd_hist", _MACD, _macd_lb, _macd, ("close",), "MACD", "MACD histogram"),
    ("adx", (_W,), lambda p: 2 * p["window"] - 1, _directional, ("high", "low", "close"), "ADX",
     "average directional index, 0..100"),
    ("plus_di", (_W,), lambda p: p["window"], _directional, ("high", "low", "close"), "PLUS_DI",
     "+DI, 0..100"),
    ("minus_di", (_W,), lambda p: p["window"], _directional, ("high", "low", "close"),
     "MINUS_DI", "-DI, 0..100"),
    ("atr", (_W,), lambda p: p["window"], _atr, ("high", "low", "close"), "ATR",
     "average true range, price units"),
    ("volatility", (_W,), lambda p: p["window"], _volatility, ("close",), "STDDEV(ROCP(1))",
     "population std of 1-bar returns, per bar"),
    ("stoch_k", _STOCH, _stoch_lb, _stoch, ("high", "low", "close"), "STOCH", "slow %K"),
    ("stoch_d", _STOCH, _stoch_lb, _stoch, ("high", "low", "close"), "STOCH", "slow %D"),
    ("obv", (), lambda p: 0, _obv, ("close", "volume"), "OBV", "on-balance volume"),
    ("obv_ema", (_W,), lambda p: p["window"] - 1, _obv_ema, ("close", "volume"), "EMA(OBV)",
     "EMA of on-balance volume"),
    ("return", (_W,), lambda p: p["window"], _return, ("close",), "ROCP",
     "return over n bars, a fraction"),
]  # fmt: skip


def _twin(builder, name):
    def polars(g: PolarsGraph, params: dict[str, Any], src: dict[str, str]):
        return {"value": builder(g, params)[name]}

    return polars


def _no_state(_p) -> np.ndarray:
    return np.empty(0)


for _name, _params, _lookback, _builder, _inputs, _talib, _doc in _SPECS:
    if _name not in _REGISTRY:
        register(
            Kind(
                name=_name,
                params=_params,
                inputs=_inputs,
                lookback=_lookback,
                kernel=None,
                state_size=lambda p: 0,
                init_state=_no_state,
                polars=_twin(_builder, _name),
                talib_name=_talib,
                doc=_doc,
            )
        )
