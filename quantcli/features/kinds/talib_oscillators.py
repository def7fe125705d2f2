"""Oscillators: MOM, CMO, PPO, ULTOSC, NATR, BOP and STOCHRSI, each TA-Lib's function
operation for operation, as one stateful pass per kernel (``state[0]`` counts the bars seen;
see :mod:`quantcli.features.kinds._base`). STOCHRSI's two outputs are two kinds sharing a
kernel, like MACD's. The Polars twins are in :mod:`quantcli.features.kinds.momentum_polars`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numba import njit

from quantcli.features.kinds import momentum_polars as twins
from quantcli.features.kinds._base import Param
from quantcli.features.kinds._steps import NAN, fma, is_zero, sma_push, true_range
from quantcli.features.kinds.talib_overlap import WINDOW, WINDOW2, _n, _talib, ema_step, kind

HLC = ("high", "low", "close")


# --- MOM ---------------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def mom_kernel(inputs, params, state, out):
    n = int(params[0])
    x = inputs[0]
    j = int(state[0])
    w = n + 1
    slot = j % w
    for i in range(x.shape[0]):
        state[1 + slot] = x[i]
        slot = slot + 1 if slot + 1 < w else 0  # also the slot of bar j - n
        out[0, i] = x[i] - state[1 + slot] if j >= n else NAN
        j += 1
    state[0] = j


kind(
    "mom",
    params=(WINDOW,),
    lookback=lambda p: _n(p),
    kernel=mom_kernel,
    size=lambda p: 2 + _n(p),
    polars=twins.mom,
    talib=_talib("MOM", "close"),
    talib_name="MOM",
    doc="close - close window bars ago, price units",
)


# --- CMO: Wilder-smoothed gains and losses, as TA-Lib's RSI -----------------------------------
@njit(cache=True, nogil=True)
def cmo_kernel(inputs, params, state, out):
    # state [j, prev_close, gain, loss]
    n = int(params[0])
    close = inputs[0]
    j = int(state[0])
    s1, s2, s3 = state[1], state[2], state[3]
    keep = float(n - 1)
    for i in range(close.shape[0]):
        c = close[i]
        if j == 0:
            s1 = c
            out[0, i] = NAN
            j += 1
            continue
        d = c - s1
        s1 = c
        if j > n:
            s3 *= keep
            s2 *= keep
        up = d if d > 0.0 else 0.0
        s2 += up
        s3 += up - d
        if j >= n:
            s3 /= n  # a division here, where TA-Lib's RSI multiplies by 1 / n
            s2 /= n
            s = s2 + s3
            out[0, i] = 100.0 * ((s2 - s3) / s) if not is_zero(s) else 0.0
        else:
            out[0, i] = NAN
        j += 1
    state[1], state[2], state[3] = s1, s2, s3
    state[0] = j


kind(
    "cmo",
    params=(WINDOW2,),
    lookback=lambda p: _n(p),
    kernel=cmo_kernel,
    size=lambda p: 4,
    polars=twins.cmo,
    talib=_talib("CMO", "close"),
    talib_name="CMO",
    doc="Chande momentum oscillator (Wilder smoothing), -100..100",
)


# --- PPO: SMAs (matype 0) or EMAs (matype 1, TA-Lib's default) ---------------------------------
@njit(cache=True, nogil=True)
def ppo_kernel(inputs, params, state, out):
    # state [j, sma_fast(1 + fast), sma_slow(1 + slow), ema_fast(2), ema_slow(2)]
    fast = int(params[0])
    slow = int(params[1])
    use_ema = params[2] == 1.0
    if slow < fast:
        fast, slow = slow, fast
    x = inputs[0]
    j = int(state[0])
    o_slow = 1 + 1 + fast
    o_ema = o_slow + 1 + slow
    fk = 2.0 / (fast + 1)
    sk = 2.0 / (slow + 1)
    for i in range(x.shape[0]):
        v = x[i]
        if use_ema:
            # both EMAs seeded on their own first window (unlike MACD's fast one)
            state[o_ema], state[o_ema + 1], f = ema_step(
                fast, fk, j, v, state[o_ema], state[o_ema + 1]
            )
            state[o_ema + 2], state[o_ema + 3], s = ema_step(
                slow, sk, j, v, state[o_ema + 2], state[o_ema + 3]
            )
        else:
            f = sma_push(state, 1, fast, j, v)
            s = sma_push(state, o_slow, slow, j, v)
        if j < slow - 1:
            out[0, i] = NAN
        else:
            out[0, i] = ((f - s) / s) * 100.0 if not is_zero(s) else 0.0
        j += 1
    state[0] = j


def _slow(p: Mapping[str, Any]) -> int:
    return max(int(p["fast"]), int(p["slow"]))


kind(
    "ppo",
    params=(
        Param("fast", int, min=2, default=12, doc="fast average bars"),
        Param("slow", int, min=2, default=26, doc="slow average bars"),
        Param("matype", int, min=0, max=1, default=1, doc="0 SMA, 1 EMA (TA-Lib's default)"),
    ),
    lookback=lambda p: _slow(p) - 1,
    kernel=ppo_kernel,
    size=lambda p: 1 + 2 + int(p["fast"]) + int(p["slow"]) + 4,
    polars=twins.ppo,
    talib=_talib("PPO", "close"),
    talib_name="PPO",
    doc="percentage price oscillator: (fast - slow) / slow * 100 of two SMAs or EMAs of close",
)


# --- ULTOSC: state [j, prev_close, a1, b1, a2, b2, a3, b3, ring(p3) of a, ring(p3) of b] -------
@njit(cache=True, nogil=True)
def ultosc_kernel(inputs, params, state, out):
    # TA-Lib sorts the periods: the shortest weighs 4, the middle 2, the longest 1
    ps = np.sort(params[:3].copy())
    p1, p2, p3 = int(ps[0]), int(ps[1]), int(ps[2])
    high, low, close = inputs[0], inputs[1], inputs[2]
    j = int(state[0])
    s1, s2, s3, s4, s5, s6, s7 = (
        state[1],
        state[2],
        state[3],
        state[4],
        state[5],
        state[6],
        state[7],
    )
    w = p3
    slot = j % w  # bar j's, kept per bar (an integer division costs more than the arithmetic)
    for i in range(close.shape[0]):
        if j == 0:
            s1 = close[i]
            out[0, i] = NAN
            j += 1
            slot = 1 % w
            continue
        prev = s1
        s1 = close[i]
        true_low = min(low[i], prev)
        a = close[i] - true_low
        b = true_range(high[i], low[i], prev)
        state[8 + slot] = a
        state[8 + w + slot] = b
        # each sum is primed with the bars of its own window ending at bar p3
        if j >= p3 - p1 + 1:
            s2 += a
            s3 += b
        if j >= p3 - p2 + 1:
            s4 += a
            s5 += b
        s6 += a
        s7 += b
        if j < p3:
            out[0, i] = NAN
        else:
            total = 0.0
            if not is_zero(s3):
                total = fma(4.0, s2 / s3, total)
            if not is_zero(s5):
                total = fma(2.0, s4 / s5, total)
            if not is_zero(s7):
                total += s6 / s7
            # the slots of bars j - p + 1, p = p1, p2, p3 (= w) leaving their windows
            t = slot - p1 + 1
            t = t + w if t < 0 else t
            s2 -= state[8 + t]
            s3 -= state[8 + w + t]
            t = slot - p2 + 1
            t = t + w if t < 0 else t
            s4 -= state[8 + t]
            s5 -= state[8 + w + t]
            t = slot + 1 if slot + 1 < w else 0
            s6 -= state[8 + t]
            s7 -= state[8 + w + t]
            out[0, i] = 100.0 * (total / 7.0)
        j += 1
        slot = slot + 1 if slot + 1 < w else 0
    state[1], state[2], state[3], state[4], state[5], state[6], state[7] = (
        s1,
        s2,
        s3,
        s4,
        s5,
        s6,
        s7,
    )
    state[0] = j


def _p3(p: Mapping[str, Any]) -> int:
    return max(int(p["window1"]), int(p["window2"]), int(p["window3"]))


kind(
    "ultosc",
    params=(
        Param("window1", int, min=1, default=7, doc="short window (weight 4)"),
        Param("window2", int, min=1, default=14, doc="middle window (weight 2)"),
        Param("window3", int, min=1, default=28, doc="long window (weight 1)"),
    ),
    inputs=HLC,
    lookback=_p3,
    kernel=ultosc_kernel,
    size=lambda p: 8 + 2 * _p3(p),
    polars=twins.ultosc,
    talib=_talib("ULTOSC", *HLC),
    talib_name="ULTOSC",
    doc="ultimate oscillator: weighted buying pressure over three windows, 0..100",
)


# --- NATR: state [j, prev_close, tr_sum / atr] --------------------------------------------------
@njit(cache=True, nogil=True)
def natr_kernel(inputs, params, state, out):
    n = int(params[0])
    high, low, close = inputs[0], inputs[1], inputs[2]
    j = int(state[0])
    s1, s2 = state[1], state[2]
    for i in range(close.shape[0]):
        if j == 0:
            s1 = close[i]
            out[0, i] = NAN
            j += 1
            continue
        tr = true_range(high[i], low[i], s1)
        s1 = close[i]
        if j < n:
            s2 += tr
            out[0, i] = NAN
        else:
            if j == n:
                s2 = (s2 + tr) / n
            else:  # Wilder's step as one fused multiply-add, as TA-Lib's ATR
                beta = (n - 1) / n
                s2 = fma(beta, s2, (1.0 - beta) * tr)
            c = close[i]
            out[0, i] = (s2 / c) * 100.0 if not is_zero(c) else 0.0
        j += 1
    state[1], state[2] = s1, s2
    state[0] = j


kind(
    "natr",
    params=(WINDOW2,),
    inputs=HLC,
    lookback=lambda p: _n(p),
    kernel=natr_kernel,
    size=lambda p: 3,
    polars=twins.natr,
    talib=_talib("NATR", *HLC),
    talib_name="NATR",
    doc="ATR(window) / close * 100: average true range in percent of the close",
)


# --- BOP ------------------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def bop_kernel(inputs, params, state, out):
    o, high, low, close = inputs[0], inputs[1], inputs[2], inputs[3]
    for i in range(close.shape[0]):
        rng = high[i] - low[i]
        out[0, i] = (close[i] - o[i]) / rng if rng >= 1e-8 else 0.0
    state[0] += close.shape[0]


kind(
    "bop",
    params=(),
    inputs=("open", *HLC),
    lookback=lambda p: 0,
    kernel=bop_kernel,
    size=lambda p: 1,
    polars=twins.bop,
    talib=_talib("BOP", "open", *HLC),
    talib_name="BOP",
    doc="balance of power: (close - open) / (high - low); 0 when the range is under 1e-8",
)


# --- STOCHRSI (fast %K and %D of RSI, SMA %D) ----------------------------------------------------
@njit(cache=True, nogil=True)
def stochrsi_group(inputs, params, state, out):
    """Rows: fast %K, fast %D of RSI(n). State [j, prev, gain, loss, ring(k) of RSI,
    sma_d(1 + d)]."""
    n, k, d = int(params[0]), int(params[1]), int(params[2])
    close = inputs[0]
    j = int(state[0])
    s1, s2, s3 = state[1], state[2], state[3]
    inv_n = 1.0 / n
    keep = float(n - 1)
    o_sma = 4 + k
    start = n + k - 1 + d - 1
    slot = (j - n) % k if j > n else 0  # the ring slot of the next RSI value, kept per value
    for i in range(close.shape[0]):
        c = close[i]
        rsi = NAN
        if j == 0:
            s1 = c
        else:
            dlt = c - s1
            s1 = c
            if j > n:
                s3 *= keep
                s2 *= keep
            up = dlt if dlt > 0.0 else 0.0
            s2 += up
            s3 += up - dlt
            if j >= n:
                s3 *= inv_n
                s2 *= inv_n
                s = s2 + s3
                rsi = 100.0 * (s2 / s) if s > 0.0 else 0.0
        fk = NAN
        fd = NAN
        if j >= n:
            r = j - n  # index of this RSI value
            state[4 + slot] = rsi  # slot r % k
            slot = slot + 1 if slot + 1 < k else 0
            if r >= k - 1:
                hh = -np.inf
                ll = np.inf
                for t in range(k):
                    v = state[4 + t]
                    hh = max(hh, v)
                    ll = min(ll, v)
                rng = hh - ll
                fk = ((rsi - ll) / rng) * 100.0 if not is_zero(rng) else 0.0
                fd = sma_push(state, o_sma, d, r - (k - 1), fk)
        if j < start:
            fk = NAN
            fd = NAN
        if out.shape[0] == 2:
            out[0, i] = fk
            out[1, i] = fd
        else:
            out[0, i] = fk if params[3] == 0.0 else fd
        j += 1
    state[1], state[2], state[3] = s1, s2, s3
    state[0] = j


def _stochrsi_lb(p: Mapping[str, Any]) -> int:
    return int(p["window"]) + int(p["fastk"]) - 1 + int(p["fastd"]) - 1


def _stochrsi_kind(name: str, row: int, doc: str) -> None:
    @njit(cache=True, nogil=True)
    def picker(inputs, params, state, out):
        p = np.empty(4)
        p[:3] = params[:3]
        p[3] = float(row)
        stochrsi_group(inputs, p, state, out)

    def oracle(cols, p, _r=row):
        import talib

        return talib.STOCHRSI(cols["close"], _n(p), p["fastk"], p["fastd"], 0)[_r]

    kind(
        name,
        params=(
            Param("window", int, min=2, default=14, doc="RSI bars"),
            Param("fastk", int, min=1, default=5, doc="%K window over the RSI"),
            Param("fastd", int, min=1, default=3, doc="%D SMA bars"),
        ),
        lookback=_stochrsi_lb,
        kernel=picker,
        size=lambda p: 4 + int(p["fastk"]) + 1 + int(p["fastd"]),
        polars=twins.stochrsi(row),
        talib=oracle,
        talib_name="STOCHRSI",
        doc=doc,
        extra={
            "group": "stochrsi",
            "row": row,
            "group_kernel": stochrsi_group,
            "group_rows": ("stochrsi_k", "stochrsi_d"),
        },
    )


_stochrsi_kind("stochrsi_k", 0, "fast %K of RSI(window) over fastk bars, 0..100")
_stochrsi_kind("stochrsi_d", 1, "fast %D: SMA(fastd) of stochrsi_k")
