"""Moving averages and trend kinds on ``close``: EMA, WMA, DEMA, TEMA, KAMA, TRIX, SAR and
LINEARREG_SLOPE, each TA-Lib's function operation for operation.

Every kernel is one stateful pass (see :mod:`quantcli.features.kinds._base`): ``state[0]``
counts the bars seen; the rest holds running sums, EMA values and window ring buffers, so a
build continued from a stored state is bit-identical to one over all bars. The Polars twins are
in :mod:`quantcli.features.kinds.talib_polars`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numba import njit

from quantcli.features.kinds import talib_polars as twins
from quantcli.features.kinds._base import Kind, Param, register
from quantcli.features.kinds._steps import EMA_SIZE, NAN, ema_push, fma, is_zero

WINDOW = Param("window", int, min=1, doc="bars in the window")
WINDOW2 = Param("window", int, min=2, doc="bars in the window")


def _n(p: Mapping[str, Any]) -> int:
    return int(p["window"])


def _zeros(size: int) -> np.ndarray:
    return np.zeros(size, dtype=np.float64)


def _talib(name: str, *args: str):
    """The TA-Lib oracle ``talib.<name>(<columns>, <params in order>)``."""

    def call(cols: Mapping[str, np.ndarray], p: Mapping[str, Any]) -> np.ndarray:
        import talib

        return getattr(talib, name)(*(cols[a] for a in args), *p.values())

    return call


def kind(name: str, **kw: Any) -> Kind:
    """Register a kind whose state is a fixed-size vector given by ``size(params)``."""
    size = kw.pop("size")
    kw.setdefault("inputs", ("close",))
    return register(
        Kind(
            name=name,
            state_size=size,
            init_state=lambda p, _s=size: _zeros(_s(p)),
            **kw,
        )
    )


# --- EMA -----------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def ema_kernel(inputs, params, state, out):
    n = int(params[0])
    x = inputs[0]
    j = int(state[0])
    for i in range(x.shape[0]):
        out[0, i] = ema_push(state, 1, n, j, x[i], 0)
        j += 1
    state[0] = j


kind(
    "ema",
    params=(WINDOW2,),
    lookback=lambda p: _n(p) - 1,
    kernel=ema_kernel,
    size=lambda p: 1 + EMA_SIZE,
    polars=twins.ema,
    talib=_talib("EMA", "close"),
    talib_name="EMA",
    doc="exponential moving average of close, k = 2 / (window + 1), seeded with the SMA",
)


# --- WMA: state [j, period_sub, period_sum, trailing, ring(n)] -------------------------------
@njit(cache=True, nogil=True)
def wma_kernel(inputs, params, state, out):
    n = int(params[0])
    x = inputs[0]
    j = int(state[0])
    divider = float((n * (n + 1)) >> 1)
    for i in range(x.shape[0]):
        v = x[i]
        state[4 + j % n] = v
        if j < n - 1:
            state[1] += v
            state[2] += v * float(j + 1)
            out[0, i] = NAN
        else:
            state[1] += v
            state[1] -= state[3]
            state[2] += v * float(n)
            state[3] = state[4 + (j + 1) % n]  # the value leaving the window next bar
            out[0, i] = state[2] / divider
            state[2] -= state[1]
        j += 1
    state[0] = j


kind(
    "wma",
    params=(WINDOW2,),
    lookback=lambda p: _n(p) - 1,
    kernel=wma_kernel,
    size=lambda p: 4 + _n(p),
    polars=twins.wma,
    talib=_talib("WMA", "close"),
    talib_name="WMA",
    extra={"parity": "TA-Lib's weighted running sum is not reproduced to the last bit"},
    doc="linearly weighted moving average of close (weights 1..window, newest heaviest)",
)


# --- DEMA / TEMA / TRIX: chained EMAs ------------------------------------------------------
@njit(cache=True, nogil=True)
def _chain(state, n, j, v, depth):
    """Feed ``v`` (bar ``j``) through ``depth`` chained EMAs at state[1..]; returns the EMAs."""
    e1 = ema_push(state, 1, n, j, v, 0)
    e2 = NAN
    e3 = NAN
    if depth > 1 and j >= n - 1:
        e2 = ema_push(state, 3, n, j - (n - 1), e1, 0)
        if depth > 2 and j >= 2 * (n - 1):
            e3 = ema_push(state, 5, n, j - 2 * (n - 1), e2, 0)
    return e1, e2, e3


@njit(cache=True, nogil=True)
def dema_kernel(inputs, params, state, out):
    n = int(params[0])
    x = inputs[0]
    j = int(state[0])
    for i in range(x.shape[0]):
        e1, e2, _ = _chain(state, n, j, x[i], 2)
        out[0, i] = (2.0 * e1) - e2 if j >= 2 * (n - 1) else NAN
        j += 1
    state[0] = j


@njit(cache=True, nogil=True)
def tema_kernel(inputs, params, state, out):
    n = int(params[0])
    x = inputs[0]
    j = int(state[0])
    for i in range(x.shape[0]):
        e1, e2, e3 = _chain(state, n, j, x[i], 3)
        out[0, i] = e3 + ((3.0 * e1) - (3.0 * e2)) if j >= 3 * (n - 1) else NAN
        j += 1
    state[0] = j


@njit(cache=True, nogil=True)
def trix_kernel(inputs, params, state, out):
    # state [j, ema1(2), ema2(2), ema3(2), previous triple EMA]
    n = int(params[0])
    x = inputs[0]
    j = int(state[0])
    first = 3 * (n - 1)
    for i in range(x.shape[0]):
        _, _, e3 = _chain(state, n, j, x[i], 3)
        if j > first:
            prev = state[7]
            out[0, i] = ((e3 / prev) - 1.0) * 100.0 if prev != 0.0 else 0.0
        else:
            out[0, i] = NAN
        state[7] = e3
        j += 1
    state[0] = j


kind(
    "dema",
    params=(WINDOW2,),
    lookback=lambda p: 2 * (_n(p) - 1),
    kernel=dema_kernel,
    size=lambda p: 1 + 2 * EMA_SIZE,
    polars=twins.dema,
    talib=_talib("DEMA", "close"),
    talib_name="DEMA",
    doc="double EMA of close: 2 EMA - EMA(EMA)",
)
kind(
    "tema",
    params=(WINDOW2,),
    lookback=lambda p: 3 * (_n(p) - 1),
    kernel=tema_kernel,
    size=lambda p: 1 + 3 * EMA_SIZE,
    polars=twins.tema,
    talib=_talib("TEMA", "close"),
    talib_name="TEMA",
    doc="triple EMA of close: 3 EMA - 3 EMA(EMA) + EMA(EMA(EMA))",
)
kind(
    "trix",
    params=(WINDOW,),
    lookback=lambda p: 3 * (_n(p) - 1) + 1,
    kernel=trix_kernel,
    size=lambda p: 2 + 3 * EMA_SIZE,
    polars=twins.trix,
    talib=_talib("TRIX", "close"),
    talib_name="TRIX",
    doc="1-bar rate of change of the triple EMA of close, percent; 0 after a zero",
)


# --- KAMA: state [j, sum_roc1, kama, trailing_value, ring(n + 1)] --------------------------
@njit(cache=True, nogil=True)
def kama_kernel(inputs, params, state, out):
    n = int(params[0])
    x = inputs[0]
    j = int(state[0])
    w = n + 1
    const_max = 2.0 / (30.0 + 1.0)
    const_diff = 2.0 / (2.0 + 1.0) - const_max
    for i in range(x.shape[0]):
        v = x[i]
        state[4 + j % w] = v
        if j >= 1 and j <= n:
            # the seed: sum of |x[t-1] - x[t]| over bars 1..n
            state[1] += abs(state[4 + (j - 1) % w] - v)
        if j < n:
            out[0, i] = NAN
            j += 1
            continue
        oldest = state[4 + (j - n) % w]  # x[j - n]
        period_roc = v - oldest
        if j == n:
            state[2] = state[4 + (j - 1) % w]  # KAMA starts from the previous close
        else:
            state[1] -= abs(state[3] - oldest)
            state[1] += abs(v - state[4 + (j - 1) % w])
        state[3] = oldest
        s = state[1]
        er = 1.0 if s <= period_roc or is_zero(s) else abs(period_roc / s)
        sc = fma(er, const_diff, const_max)
        sc *= sc
        state[2] = fma(v - state[2], sc, state[2])
        out[0, i] = state[2]
        j += 1
    state[0] = j


kind(
    "kama",
    params=(WINDOW,),
    lookback=lambda p: _n(p),
    kernel=kama_kernel,
    size=lambda p: 4 + _n(p) + 1,
    polars=twins.kama,
    talib=_talib("KAMA", "close"),
    talib_name="KAMA",
    doc="Kaufman adaptive moving average of close (efficiency ratio over window, 2/30 bars)",
)


# --- SAR: state [j, is_long, sar, ep, af, new_high, new_low] ---------------------------------
@njit(cache=True, nogil=True)
def sar_kernel(inputs, params, state, out):
    acc = params[0]
    af_max = params[1]
    high = inputs[0]
    low = inputs[1]
    j = int(state[0])
    for i in range(high.shape[0]):
        if j == 0:
            state[5] = high[i]
            state[6] = low[i]
            out[0, i] = NAN
            j += 1
            continue
        if j == 1:
            # the first direction: short when bar 1's -DM(1) is positive, as TA-Lib decides
            diff_p = high[i] - state[5]
            diff_m = state[6] - low[i]
            is_long = not (diff_m > 0.0 and diff_p < diff_m)
            state[1] = 1.0 if is_long else 0.0
            if is_long:
                state[3] = high[i]
                state[2] = state[6]
            else:
                state[3] = low[i]
                state[2] = state[5]
            state[4] = min(acc, af_max)
            state[5] = high[i]
            state[6] = low[i]
        prev_high = state[5]
        prev_low = state[6]
        new_high = high[i]
        new_low = low[i]
        state[5] = new_high
        state[6] = new_low
        sar = state[2]
        ep = state[3]
        af = state[4]
        if state[1] == 1.0:
            if new_low <= sar:
                state[1] = 0.0
                sar = ep
                sar = max(sar, prev_high, new_high)
                out[0, i] = sar
                af = min(acc, af_max)
                ep = new_low
                sar = fma(af, ep - sar, sar)
                sar = max(sar, prev_high, new_high)
            else:
                out[0, i] = sar
                if new_high > ep:
                    ep = new_high
                    af += acc
                    if af > af_max:
                        af = af_max
                sar = fma(af, ep - sar, sar)
                sar = min(sar, prev_low, new_low)
        else:
            if new_high >= sar:
                state[1] = 1.0
                sar = ep
                sar = min(sar, prev_low, new_low)
                out[0, i] = sar
                af = min(acc, af_max)
                ep = new_high
                sar = fma(af, ep - sar, sar)
                sar = min(sar, prev_low, new_low)
            else:
                out[0, i] = sar
                if new_low < ep:
                    ep = new_low
                    af += acc
                    if af > af_max:
                        af = af_max
                sar = fma(af, ep - sar, sar)
                sar = max(sar, prev_high, new_high)
        state[2] = sar
        state[3] = ep
        state[4] = af
        j += 1
    state[0] = j


kind(
    "sar",
    params=(
        Param("acceleration", float, min=0.0, default=0.02, doc="step of the acceleration factor"),
        Param("maximum", float, min=0.0, default=0.2, doc="cap of the acceleration factor"),
    ),
    inputs=("high", "low"),
    lookback=lambda p: 1,
    kernel=sar_kernel,
    size=lambda p: 7,
    polars=twins.sar,
    talib=_talib("SAR", "high", "low"),
    talib_name="SAR",
    doc="Wilder's parabolic stop-and-reverse, in price units",
)


# --- LINEARREG_SLOPE: state [j, ring(n)] -----------------------------------------------------
@njit(cache=True, nogil=True)
def linreg_slope_kernel(inputs, params, state, out):
    n = int(params[0])
    x = inputs[0]
    j = int(state[0])
    sum_x = n * (n - 1) * 0.5
    sum_x_sqr = n * (n - 1) * (2 * n - 1) / 6.0
    divisor = sum_x * sum_x - n * sum_x_sqr
    for i in range(x.shape[0]):
        state[1 + j % n] = x[i]
        if j < n - 1:
            out[0, i] = NAN
        else:
            sum_xy = 0.0
            sum_y = 0.0
            for k in range(n - 1, -1, -1):  # x[j - k] weighs k, as TA-Lib's loop
                v = state[1 + (j - k) % n]
                sum_y += v
                sum_xy = fma(float(k), v, sum_xy)
            out[0, i] = (n * sum_xy - sum_x * sum_y) / divisor
        j += 1
    state[0] = j


kind(
    "linearreg_slope",
    params=(WINDOW2,),
    lookback=lambda p: _n(p) - 1,
    kernel=linreg_slope_kernel,
    size=lambda p: 1 + _n(p),
    polars=twins.linearreg_slope,
    talib=_talib("LINEARREG_SLOPE", "close"),
    talib_name="LINEARREG_SLOPE",
    extra={"parity": "TA-Lib's summation order of the window's sums is not reproduced"},
    doc="slope of the least-squares line through the last window closes, price per bar",
)
