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
from quantcli.features.kinds._base import WINDOW, WINDOW2, Kind, Param, register
from quantcli.features.kinds._steps import NAN, fma, is_zero


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


# --- EMA: state [j, seed sum, ema] --------------------------------------------------------
@njit(cache=True, nogil=True, inline="always")
def ema_step(n, k, j, x, total, prev):
    """TA_EMA(n) on value ``j``: ``(total, prev, value)`` after it. The seed is the mean of the
    first ``n`` values; then ``ema = (x - ema) * k + ema`` as one fused multiply-add, as in
    TA-Lib's build. The state lives in locals (a kernel loads and stores it once per call)."""
    if j < n - 1:
        return total + x, prev, NAN
    if j == n - 1:
        total += x
        prev = total / n
        return total, prev, prev
    prev = fma(x - prev, k, prev)
    return total, prev, prev


@njit(cache=True, nogil=True)
def ema_kernel(inputs, params, state, out):
    n = int(params[0])
    k = 2.0 / (n + 1)
    x = inputs[0]
    j = int(state[0])
    total, prev = state[1], state[2]
    for i in range(x.shape[0]):
        total, prev, out[0, i] = ema_step(n, k, j, x[i], total, prev)
        j += 1
    state[0], state[1], state[2] = j, total, prev


kind(
    "ema",
    params=(WINDOW2,),
    lookback=lambda p: _n(p) - 1,
    kernel=ema_kernel,
    size=lambda p: 3,
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
    sub, total, trailing = state[1], state[2], state[3]
    divider = float((n * (n + 1)) >> 1)
    slot = j % n
    for i in range(x.shape[0]):
        v = x[i]
        state[4 + slot] = v
        slot = slot + 1 if slot + 1 < n else 0  # now the slot of bar j + 1 - n
        sub += v
        if j < n - 1:
            total += v * float(j + 1)
            out[0, i] = NAN
        else:
            sub -= trailing
            total += v * float(n)
            trailing = state[4 + slot]  # the value leaving the window next bar
            out[0, i] = total / divider
            total -= sub
        j += 1
    state[0], state[1], state[2], state[3] = j, sub, total, trailing


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
def chain_kernel(inputs, params, state, out):
    """``depth`` chained EMAs (state [j, sum1, ema1, sum2, ema2, sum3, ema3, prev e3]) and the
    kind's output from them: DEMA (``params[1] == 2``), TEMA (3) or TRIX (4: TEMA's chain)."""
    n = int(params[0])
    kind = int(params[1])
    k = 2.0 / (n + 1)
    x = inputs[0]
    j = int(state[0])
    s1, e1, s2, e2, s3, e3, prev3 = (
        state[1],
        state[2],
        state[3],
        state[4],
        state[5],
        state[6],
        state[7],
    )
    lag2 = n - 1
    lag3 = 2 * (n - 1)
    for i in range(x.shape[0]):
        s1, e1, v1 = ema_step(n, k, j, x[i], s1, e1)
        v2 = NAN
        v3 = NAN
        if j >= lag2:
            s2, e2, v2 = ema_step(n, k, j - lag2, v1, s2, e2)
            if kind != 2 and j >= lag3:
                s3, e3, v3 = ema_step(n, k, j - lag3, v2, s3, e3)
        if kind == 2:
            out[0, i] = (2.0 * v1) - v2 if j >= lag3 else NAN
        elif kind == 3:
            out[0, i] = v3 + ((3.0 * v1) - (3.0 * v2)) if j >= 3 * (n - 1) else NAN
        else:
            if j > 3 * (n - 1):
                out[0, i] = ((v3 / prev3) - 1.0) * 100.0 if prev3 != 0.0 else 0.0
            else:
                out[0, i] = NAN
            prev3 = v3
        j += 1
    state[0], state[1], state[2], state[3], state[4] = j, s1, e1, s2, e2
    state[5], state[6], state[7] = s3, e3, prev3


@njit(cache=True, nogil=True)
def dema_kernel(inputs, params, state, out):
    chain_kernel(inputs, np.array([params[0], 2.0]), state, out)


@njit(cache=True, nogil=True)
def tema_kernel(inputs, params, state, out):
    chain_kernel(inputs, np.array([params[0], 3.0]), state, out)


@njit(cache=True, nogil=True)
def trix_kernel(inputs, params, state, out):
    chain_kernel(inputs, np.array([params[0], 4.0]), state, out)


kind(
    "dema",
    params=(WINDOW2,),
    lookback=lambda p: 2 * (_n(p) - 1),
    kernel=dema_kernel,
    size=lambda p: 8,
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
    size=lambda p: 8,
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
    size=lambda p: 8,
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
    noise, kama, trailing = state[1], state[2], state[3]
    w = n + 1
    const_max = 2.0 / (30.0 + 1.0)
    const_diff = 2.0 / (2.0 + 1.0) - const_max
    slot = j % w
    for i in range(x.shape[0]):
        v = x[i]
        # ring slots of bars j, j - 1 and j - n (= j + 1 modulo the ring of n + 1)
        cur = slot
        before = cur - 1 if cur > 0 else w - 1
        after = cur + 1 if cur + 1 < w else 0
        slot = after
        prev = state[4 + before]  # x[j - 1] (unused at j == 0)
        state[4 + cur] = v
        if j >= 1 and j <= n:
            noise += abs(prev - v)  # the seed: |x[t-1] - x[t]| over bars 1..n
        if j < n:
            out[0, i] = NAN
            j += 1
            continue
        oldest = state[4 + after]  # x[j - n]
        period_roc = v - oldest
        if j == n:
            kama = prev  # KAMA starts from the previous close
        else:
            noise -= abs(trailing - oldest)
            noise += abs(v - prev)
        trailing = oldest
        er = 1.0 if noise <= period_roc or is_zero(noise) else abs(period_roc / noise)
        if er > 1.0:  # rounding of the running noise sum on a one-way window: TA-Lib caps it
            er = 1.0
        sc = fma(er, const_diff, const_max)
        sc *= sc
        kama = fma(v - kama, sc, kama)
        out[0, i] = kama
        j += 1
    state[0], state[1], state[2], state[3] = j, noise, kama, trailing


kind(
    "kama",
    params=(WINDOW2,),
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
    s1, s2, s3, s4, s5, s6 = state[1], state[2], state[3], state[4], state[5], state[6]
    for i in range(high.shape[0]):
        if j == 0:
            s5 = high[i]
            s6 = low[i]
            out[0, i] = NAN
            j += 1
            continue
        if j == 1:
            # the first direction: short when bar 1's -DM(1) is positive, as TA-Lib decides
            diff_p = high[i] - s5
            diff_m = s6 - low[i]
            is_long = not (diff_m > 0.0 and diff_p < diff_m)
            s1 = 1.0 if is_long else 0.0
            if is_long:
                s3 = high[i]
                s2 = s6
            else:
                s3 = low[i]
                s2 = s5
            s4 = min(acc, af_max)
            s5 = high[i]
            s6 = low[i]
        prev_high = s5
        prev_low = s6
        new_high = high[i]
        new_low = low[i]
        s5 = new_high
        s6 = new_low
        sar = s2
        ep = s3
        af = s4
        if s1 == 1.0:
            if new_low <= sar:
                s1 = 0.0
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
                s1 = 1.0
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
        s2 = sar
        s3 = ep
        s4 = af
        j += 1
    state[1], state[2], state[3], state[4], state[5], state[6] = s1, s2, s3, s4, s5, s6
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


# --- LINEARREG_SLOPE: state [j, sum_xy, sum_y, ring(n)] --------------------------------------
@njit(cache=True, nogil=True)
def linreg_slope_kernel(inputs, params, state, out):
    # x[j - i] weighs i (the newest 0), as TA-Lib; sums rolled forward one bar at a time: every
    # weight grows by 1 and the value leaving the window (weight n) is dropped
    n = int(params[0])
    x = inputs[0]
    j = int(state[0])
    sum_xy, sum_y = state[1], state[2]
    sum_x = n * (n - 1) * 0.5
    sum_x_sqr = n * (n - 1) * (2 * n - 1) / 6.0
    divisor = sum_x * sum_x - n * sum_x_sqr
    ring = j % n
    for i in range(x.shape[0]):
        v = x[i]
        slot = 3 + ring
        ring = ring + 1 if ring + 1 < n else 0
        if j < n:
            sum_xy += sum_y  # the values so far each weigh one more
            sum_y += v
            state[slot] = v
        else:
            old = state[slot]  # x[j - n]
            sum_xy += sum_y
            sum_xy -= n * old
            sum_y -= old
            sum_y += v
            state[slot] = v
        out[0, i] = (n * sum_xy - sum_x * sum_y) / divisor if j >= n - 1 else NAN
        j += 1
    state[0], state[1], state[2] = j, sum_xy, sum_y


kind(
    "linearreg_slope",
    params=(WINDOW2,),
    lookback=lambda p: _n(p) - 1,
    kernel=linreg_slope_kernel,
    size=lambda p: 3 + _n(p),
    polars=twins.linearreg_slope,
    talib=_talib("LINEARREG_SLOPE", "close"),
    talib_name="LINEARREG_SLOPE",
    extra={"parity": "TA-Lib's rolled sums are not reproduced to the last bit"},
    doc="slope of the least-squares line through the last window closes, price per bar",
)
