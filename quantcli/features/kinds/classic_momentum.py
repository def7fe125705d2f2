"""The Wilder and range kinds of ``technical_v1``: RSI, ATR, the directional system, STOCH.

Stateful kernels in the sense of :mod:`quantcli.features.kinds._base` (``state[0]`` counts the
bars seen), operation for operation as TA-Lib computes them; see
:mod:`quantcli.features.kinds.classic` for the shared-call convention (``extra["group"]``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from quantcli.features.kinds import classic_polars as twins
from quantcli.features.kinds._base import WINDOW, WINDOW2, Kind, Param, register
from quantcli.features.kinds._steps import (
    NAN,
    fma,
    is_zero,
    sma_run,
    sma_size,
    true_range,
)
from quantcli.features.kinds._windows import ring_extremes
from quantcli.features.kinds.classic import _n, _zeros, register_group


# --- RSI: state [count, prev close, gain, loss] ---------------------------------------------
@njit(cache=True, nogil=True)
def rsi_kernel(inputs, params, state, out):
    """TA_RSI: Wilder averages of gains and losses seeded with their mean over bars 1..n.

    The Wilder step is ``(avg * (n - 1) + x) * (1 / n)`` with the reciprocal hoisted, and the
    gain/loss split is branch-free (TA-Lib >= 0.7 arithmetic). 0 when no change was ever seen.
    """
    n = int(params[0])
    inv_n = 1.0 / n
    keep = float(n - 1)
    close = inputs[0]
    j = int(state[0])
    prev, gain, loss = state[1], state[2], state[3]
    for i in range(close.shape[0]):
        c = close[i]
        if j == 0:
            prev = c
            out[0, i] = NAN
            j += 1
            continue
        d = c - prev
        prev = c
        if j > n:
            loss *= keep
            gain *= keep
        up = d if d > 0.0 else 0.0
        gain += up
        loss += up - d
        if j >= n:
            loss *= inv_n
            gain *= inv_n
            s = gain + loss
            out[0, i] = 100.0 * (gain / s) if s > 0.0 else 0.0
        else:
            out[0, i] = NAN
        j += 1
    state[0], state[1], state[2], state[3] = j, prev, gain, loss


def _talib_rsi(cols, p):
    import talib

    return talib.RSI(cols["close"], _n(p))


register(
    Kind(
        name="rsi",
        params=(WINDOW2,),
        inputs=("close",),
        lookback=_n,
        kernel=rsi_kernel,
        state_size=lambda p: 4,
        init_state=lambda p: _zeros(4),
        polars=twins.twin(twins.rsi, "rsi"),
        talib=_talib_rsi,
        talib_name="RSI",
        doc="Wilder's relative strength index, 0..100; 0 when no change was ever seen",
    )
)


# --- ATR: state [count, prev close, seed total, atr] ----------------------------------------
@njit(cache=True, nogil=True)
def atr_kernel(inputs, params, state, out):
    """TA_ATR: true range from bar 1, seeded with its mean over bars 1..n, then Wilder's
    ``atr = b * atr + (a * tr)`` (one fused multiply-add) with ``b = (n - 1) / n``, ``a = 1 - b``,
    as TA-Lib >= 0.7 computes it."""
    n = int(params[0])
    beta = (n - 1) / n
    alpha = 1.0 - beta
    high, low, close = inputs[0], inputs[1], inputs[2]
    j = int(state[0])
    prev_close, total, atr = state[1], state[2], state[3]
    for i in range(close.shape[0]):
        jj = j + i
        if jj == 0:
            out[0, i] = NAN
        else:
            tr = true_range(high[i], low[i], prev_close)
            if jj < n:
                total += tr
                out[0, i] = NAN
            elif jj == n:
                total += tr
                atr = total / n
                out[0, i] = atr
            else:
                atr = fma(beta, atr, alpha * tr)
                out[0, i] = atr
        prev_close = close[i]
    state[0], state[1], state[2], state[3] = j + close.shape[0], prev_close, total, atr


def _talib_atr(cols, p):
    import talib

    return talib.ATR(cols["high"], cols["low"], cols["close"], _n(p))


register(
    Kind(
        name="atr",
        params=(WINDOW,),
        inputs=("high", "low", "close"),
        lookback=_n,
        kernel=atr_kernel,
        state_size=lambda p: 4,
        init_state=lambda p: _zeros(4),
        polars=twins.twin(twins.atr, "atr"),
        talib=_talib_atr,
        talib_name="ATR",
        doc="Wilder's average true range",
    )
)


# --- the directional system: (ADX, +DI, -DI) ------------------------------------------------
# state [count, prev high, prev low, prev close, +DM sum, -DM sum, TR sum, DX sum, ADX]
@njit(cache=True, nogil=True)
def directional_kernel(inputs, params, state, out):
    """TA_ADX, TA_PLUS_DI and TA_MINUS_DI (period ``n``) in one pass: rows (ADX, +DI, -DI).

    +DM, -DM and TR are seeded with their sums over bars 1..n-1, then smoothed
    ``prev - prev / n + x``; the DIs start at bar n, ADX (mean of the first n DX) at bar 2n-1.
    """
    n = int(params[0])
    high, low, close = inputs[0], inputs[1], inputs[2]
    j = int(state[0])
    ph, pl_, pc = state[1], state[2], state[3]
    pdm, mdm, tr, sum_dx, prev_adx = state[4], state[5], state[6], state[7], state[8]
    for i in range(close.shape[0]):
        h = high[i]
        lo = low[i]
        if j == 0:
            out[0, i] = NAN
            out[1, i] = NAN
            out[2, i] = NAN
            ph, pl_, pc = h, lo, close[i]
            j += 1
            continue
        # +DM and -DM as TA-Lib assigns them: at most one is non-zero
        diff_p = h - ph
        diff_m = pl_ - lo
        p = 0.0
        m = 0.0
        if diff_m > 0 and diff_p < diff_m:
            m = diff_m
        elif diff_p > 0 and diff_p > diff_m:
            p = diff_p
        t = true_range(h, lo, pc)
        ph, pl_, pc = h, lo, close[i]
        if j < n:
            pdm += p
            mdm += m
            tr += t
            out[0, i] = NAN
            out[1, i] = NAN
            out[2, i] = NAN
            j += 1
            continue
        pdm = pdm - (pdm / n) + p
        mdm = mdm - (mdm / n) + m
        tr = tr - (tr / n) + t
        dx_defined = False
        dx = 0.0
        if is_zero(tr):
            out[1, i] = 0.0
            out[2, i] = 0.0
        else:
            minus = 100.0 * (mdm / tr)
            plus = 100.0 * (pdm / tr)
            out[1, i] = plus
            out[2, i] = minus
            s = minus + plus
            if not is_zero(s):
                dx = 100.0 * (abs(minus - plus) / s)
                dx_defined = True
        if j < 2 * n - 1:
            if dx_defined:
                sum_dx += dx
            out[0, i] = NAN
        elif j == 2 * n - 1:
            if dx_defined:
                sum_dx += dx
            prev_adx = sum_dx / n
            out[0, i] = prev_adx
        else:
            if dx_defined:
                prev_adx = ((prev_adx * (n - 1)) + dx) / n
            out[0, i] = prev_adx
        j += 1
    state[0], state[1], state[2], state[3] = j, ph, pl_, pc
    state[4], state[5], state[6], state[7], state[8] = pdm, mdm, tr, sum_dx, prev_adx


def _talib_directional(cols, p):
    import talib

    h, lo, c, n = cols["high"], cols["low"], cols["close"], _n(p)
    return talib.ADX(h, lo, c, n), talib.PLUS_DI(h, lo, c, n), talib.MINUS_DI(h, lo, c, n)


@njit(cache=True, nogil=True)
def adx_kernel(inputs, params, state, out):
    full = np.empty((3, inputs.shape[1]))
    directional_kernel(inputs, params, state, full)
    out[0, :] = full[0]


@njit(cache=True, nogil=True)
def plus_di_kernel(inputs, params, state, out):
    full = np.empty((3, inputs.shape[1]))
    directional_kernel(inputs, params, state, full)
    out[0, :] = full[1]


@njit(cache=True, nogil=True)
def minus_di_kernel(inputs, params, state, out):
    full = np.empty((3, inputs.shape[1]))
    directional_kernel(inputs, params, state, full)
    out[0, :] = full[2]


register_group(
    "directional",
    directional_kernel,
    ("adx", "plus_di", "minus_di"),
    {"adx": adx_kernel, "plus_di": plus_di_kernel, "minus_di": minus_di_kernel},
    params=(WINDOW2,),  # TA-Lib's one-bar DIs are ratios, not percents
    inputs=("high", "low", "close"),
    lookback={"adx": lambda p: 2 * _n(p) - 1, "plus_di": _n, "minus_di": _n},
    state_size=lambda p: 9,
    init_state=lambda p: _zeros(9),
    builder=twins.directional,
    talib=_talib_directional,
    talib_names={"adx": "ADX", "plus_di": "PLUS_DI", "minus_di": "MINUS_DI"},
    docs={
        "adx": "Wilder's average directional index, 0..100",
        "plus_di": "Wilder's +DI: 100 * smoothed +DM / smoothed TR; 0 for a zero TR",
        "minus_di": "Wilder's -DI: 100 * smoothed -DM / smoothed TR; 0 for a zero TR",
    },
)


# --- STOCH (SMA smoothing): (slow %K, slow %D) ----------------------------------------------
# state [count, hi index, lo index, HH, LL, high ring(fastk), low ring(fastk), SMA(slowk),
#        SMA(slowd)]
def _stoch_sizes(p):
    fastk, slowk, slowd = int(p["fastk"]), int(p["slowk"]), int(p["slowd"])
    return 5 + 2 * fastk + sma_size(slowk) + sma_size(slowd)


@njit(cache=True, nogil=True)
def stoch_kernel(inputs, params, state, out):
    """TA_STOCH with SMA smoothing: rows (slow %K, slow %D).

    fast %K = ((C - LL) / (HH - LL)) * 100, 0 when HH == LL, over ``fastk`` bars; the window
    extremes come from :func:`ring_extremes`, the bars before the call from ring buffers.
    Slow %K is reported from %D's first bar on, as TA-Lib does.
    """
    fastk = int(params[0])
    slowk = int(params[1])
    slowd = int(params[2])
    first_fast = fastk - 1
    start = first_fast + slowk - 1 + slowd - 1
    o_k = 5 + 2 * fastk
    o_d = o_k + 1 + slowk
    ring_h = state[5 : 5 + fastk]
    ring_l = state[5 + fastk : 5 + 2 * fastk]
    high, low, close = inputs[0], inputs[1], inputs[2]
    j = int(state[0])
    k = close.shape[0]
    hi_idx = int(state[1]) if j > 0 else -1
    lo_idx = int(state[2]) if j > 0 else -1
    hh, ll = state[3], state[4]
    hh_at = np.empty(k)
    ll_at = np.empty(k)
    if k:
        last = ring_extremes(high, low, ring_h, ring_l, j, hh_at, ll_at)
        if j + k > first_fast:  # the state holds the extremes from the first full window on
            hh, hi_idx, ll, lo_idx = last
    fast = np.empty(k)
    nf = 0
    for i in range(max(first_fast - j, 0), k):
        rng = hh_at[i] - ll_at[i]
        fast[nf] = ((close[i] - ll_at[i]) / rng) * 100.0 if rng != 0.0 else 0.0
        nf += 1
    i0 = k - nf  # the call's first bar with a fast %K
    jk0 = j + i0 - first_fast  # its index among the fast %K values
    slow_k = np.empty(nf)
    sma_run(fast[:nf], state, o_k, slowk, jk0, slow_k)
    m0 = min(max(slowk - 1 - jk0, 0), nf)  # the first defined slow %K
    slow_d = np.empty(nf - m0)
    sma_run(slow_k[m0:], state, o_d, slowd, jk0 + m0 - (slowk - 1), slow_d)
    for i in range(k):
        t = i - i0
        if t < 0:
            out[0, i] = NAN
            out[1, i] = NAN
        else:
            out[0, i] = slow_k[t] if j + i >= start else NAN
            out[1, i] = slow_d[t - m0] if t >= m0 else NAN
    state[0], state[1], state[2], state[3], state[4] = j + k, hi_idx, lo_idx, hh, ll


def _stoch_lookback(p):
    return int(p["fastk"]) - 1 + int(p["slowk"]) - 1 + int(p["slowd"]) - 1


def _talib_stoch(cols, p):
    import talib

    fastk, slowk, slowd = int(p["fastk"]), int(p["slowk"]), int(p["slowd"])
    return talib.STOCH(cols["high"], cols["low"], cols["close"], fastk, slowk, 0, slowd, 0)


@njit(cache=True, nogil=True)
def stoch_k_kernel(inputs, params, state, out):
    full = np.empty((2, inputs.shape[1]))
    stoch_kernel(inputs, params, state, full)
    out[0, :] = full[0]


@njit(cache=True, nogil=True)
def stoch_d_kernel(inputs, params, state, out):
    full = np.empty((2, inputs.shape[1]))
    stoch_kernel(inputs, params, state, full)
    out[0, :] = full[1]


register_group(
    "stoch",
    stoch_kernel,
    ("stoch_k", "stoch_d"),
    {"stoch_k": stoch_k_kernel, "stoch_d": stoch_d_kernel},
    params=(
        Param("fastk", int, min=1, doc="bars of the high/low window"),
        Param("slowk", int, min=1, doc="bars of the SMA smoothing %K"),
        Param("slowd", int, min=1, doc="bars of the SMA smoothing %D"),
    ),
    inputs=("high", "low", "close"),
    lookback=_stoch_lookback,
    state_size=_stoch_sizes,
    init_state=lambda p: _zeros(_stoch_sizes(p)),
    builder=twins.stoch,
    talib=_talib_stoch,
    talib_names={"stoch_k": "STOCH", "stoch_d": "STOCH"},
    docs={
        "stoch_k": "slow stochastic %K (SMA smoothing); 0 when the window's high equals its low",
        "stoch_d": "slow stochastic %D: SMA(slowd) of slow %K",
    },
)
