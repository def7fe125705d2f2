"""Transforms of other features of the same set: lag, ratio, difference, rolling z-score.

Scope ``"features"`` (see :mod:`quantcli.features.kinds._base`): ``inputs`` are the roles
(``of``, ``other``) whose params name earlier features, and the kernel reads those features'
full columns (NaN in their warm-up), so a transform's lookback is its inputs' plus its own.
Each kernel is one stateful pass; NaN in, NaN out. No TA-Lib counterpart; the tests compare them
with NumPy written from the definition.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl
from numba import njit

from quantcli.features.kinds._base import Kind, Param, register
from quantcli.features.kinds._steps import NAN
from quantcli.features.polars_graph import _ZERO, PolarsGraph

OF = Param("of", str, min=None, doc="the feature transformed")
OTHER = Param("other", str, min=None, doc="the second feature")


def _zeros(size: int) -> np.ndarray:
    return np.zeros(size, dtype=np.float64)


def _first(g: PolarsGraph, src: Mapping[str, str]) -> int:
    return max(g.first[c] for c in src.values())


# --- lag: state [j, ring(k + 1)] ------------------------------------------------------------
@njit(cache=True, nogil=True)
def lag_kernel(inputs, params, state, out):
    k = int(params[0])
    x = inputs[0]
    j = int(state[0])
    w = k + 1
    slot = j % w  # bar j's, then bar j - k's (one integer division a call, not a bar)
    for i in range(x.shape[0]):
        state[1 + slot] = x[i]
        slot = slot + 1 if slot + 1 < w else 0
        out[0, i] = state[1 + slot] if j >= k else NAN
        j += 1
    state[0] = j


def _lag_polars(g: PolarsGraph, p: dict[str, Any], src: dict[str, str]):
    k = int(p["periods"])
    return {"value": (pl.col(src["of"]).shift(k), g.first[src["of"]] + k)}


def _lag_ref(cols: Mapping[str, np.ndarray], p: Mapping[str, Any]) -> np.ndarray:
    x, k = cols["of"], int(p["periods"])
    return np.concatenate([np.full(min(k, len(x)), np.nan), x[: max(len(x) - k, 0)]])


# --- ratio and difference: stateless (state [j]) ----------------------------------------------
@njit(cache=True, nogil=True)
def ratio_kernel(inputs, params, state, out):
    a = inputs[0]
    b = inputs[1]
    for i in range(a.shape[0]):
        if a[i] != a[i] or b[i] != b[i]:
            out[0, i] = NAN
        else:
            out[0, i] = a[i] / b[i] if b[i] != 0.0 else 0.0
    state[0] += a.shape[0]


@njit(cache=True, nogil=True)
def difference_kernel(inputs, params, state, out):
    a = inputs[0]
    b = inputs[1]
    for i in range(a.shape[0]):
        out[0, i] = a[i] - b[i]
    state[0] += a.shape[0]


def _ratio_polars(g: PolarsGraph, p: dict[str, Any], src: dict[str, str]):
    a, b = pl.col(src["of"]), pl.col(src["other"])
    return {"value": (pl.when(b == 0.0).then(0.0).otherwise(a / b), _first(g, src))}


def _difference_polars(g: PolarsGraph, p: dict[str, Any], src: dict[str, str]):
    return {"value": (pl.col(src["of"]) - pl.col(src["other"]), _first(g, src))}


def _ratio_ref(cols, p):
    a, b = cols["of"], cols["other"]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(b == 0.0, 0.0, a / b)
    return np.where(np.isnan(a) | np.isnan(b), np.nan, out)


# --- rolling z-score: state [j, ring(n)] --------------------------------------------------------
@njit(cache=True, nogil=True)
def zscore_kernel(inputs, params, state, out):
    n = int(params[0])
    x = inputs[0]
    j = int(state[0])
    slot = j % n  # bar j's (one integer division a call, not a bar)
    for i in range(x.shape[0]):
        state[1 + slot] = x[i]
        slot = slot + 1 if slot + 1 < n else 0  # now bar j - n + 1's, the window's oldest
        if j < n - 1:
            out[0, i] = NAN
        else:
            # two passes over the window in time order: no running-sum drift to carry over
            total = 0.0
            t = slot
            for _ in range(n):
                total += state[1 + t]
                t = t + 1 if t + 1 < n else 0
            mean = total / n
            ss = 0.0
            for _ in range(n):
                d = state[1 + t] - mean
                ss += d * d
                t = t + 1 if t + 1 < n else 0
            std = np.sqrt(ss / n)
            if std != std:
                out[0, i] = NAN
            else:
                out[0, i] = (x[i] - mean) / std if std >= 1e-8 else 0.0
        j += 1
    state[0] = j


def _zscore_polars(g: PolarsGraph, p: dict[str, Any], src: dict[str, str]):
    n = int(p["window"])
    mean = pl.col(g.rolling("mean", src["of"], n))
    std = pl.col(g.stddev(src["of"], n))
    z = pl.when(std < _ZERO).then(0.0).otherwise((pl.col(src["of"]) - mean) / std)
    return {"value": (z, g.first[src["of"]] + n - 1)}


def _zscore_ref(cols, p):
    x, n = cols["of"], int(p["window"])
    out = np.full(len(x), np.nan)
    for t in range(n - 1, len(x)):
        w = x[t - n + 1 : t + 1]
        std = w.std()
        out[t] = np.nan if np.isnan(std) else (0.0 if std < 1e-8 else (x[t] - w.mean()) / std)
    return out


def _kind(name, params, inputs, lookback, kernel, size, polars, ref, doc) -> None:
    register(
        Kind(
            name=name,
            params=params,
            inputs=inputs,
            lookback=lookback,
            kernel=kernel,
            state_size=size,
            init_state=lambda p, _s=size: _zeros(_s(p)),
            polars=polars,
            talib=ref,
            scope="features",
            doc=doc,
        )
    )


_kind(
    "lag",
    (OF, Param("periods", int, min=1, doc="bars back")),
    ("of",),
    lambda p: int(p["periods"]),
    lag_kernel,
    lambda p: 2 + int(p["periods"]),
    _lag_polars,
    _lag_ref,
    "the feature `of` as it was `periods` bars earlier",
)
_kind(
    "ratio",
    (OF, OTHER),
    ("of", "other"),
    lambda p: 0,
    ratio_kernel,
    lambda p: 1,
    _ratio_polars,
    _ratio_ref,
    "of / other; 0 where other is 0",
)
_kind(
    "difference",
    (OF, OTHER),
    ("of", "other"),
    lambda p: 0,
    difference_kernel,
    lambda p: 1,
    _difference_polars,
    lambda c, p: c["of"] - c["other"],
    "of - other",
)
_kind(
    "zscore",
    (OF, Param("window", int, min=2, doc="bars in the window")),
    ("of",),
    lambda p: int(p["window"]) - 1,
    zscore_kernel,
    lambda p: 1 + int(p["window"]),
    _zscore_polars,
    _zscore_ref,
    "rolling z-score of `of` over window bars (population std); 0 when std < 1e-8",
)
