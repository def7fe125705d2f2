"""The trend and flow kinds of ``technical_v1``: MACD, OBV and its EMA, the rates of change.

Stateful single-pass kernels in the sense of :mod:`quantcli.features.kinds._base`, with the
shared-call convention of :mod:`quantcli.features.kinds.classic` (``macd``, ``macd_signal`` and
``macd_hist`` share one kernel and one TA-Lib call).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from quantcli.features.kinds import classic_polars as twins
from quantcli.features.kinds._base import WINDOW, WINDOW2, Kind, Param, register
from quantcli.features.kinds._steps import (
    EMA_SIZE,
    NAN,
    ema_run,
    fma,
    std_of,
    var_run,
    var_size,
)
from quantcli.features.kinds.classic import _n, _zeros, register_group


# --- MACD: (line, signal, hist) -------------------------------------------------------------
@njit(cache=True, nogil=True)
def macd_kernel(inputs, params, state, out):
    fast = int(params[0])
    slow = int(params[1])
    signal = int(params[2])
    if slow < fast:
        fast, slow = slow, fast
    seed_end = slow - 1
    close = inputs[0]
    j = int(state[0])
    # ema_push's three states held in locals over the call (same arithmetic, same order); the
    # fast EMA is seeded from bar slow - fast so that both seeds end on bar seed_end
    fast_from = slow - fast
    s_tot, s_ema = state[1], state[2]
    f_tot, f_ema = state[3], state[4]
    g_tot, g_ema = state[5], state[6]
    k_slow = 2.0 / (slow + 1)
    k_fast = 2.0 / (fast + 1)
    k_sig = 2.0 / (signal + 1)
    for i in range(close.shape[0]):
        c = close[i]
        if j < seed_end:
            s_tot += c
            if j >= fast_from:
                f_tot += c
            out[0, i] = NAN
            out[1, i] = NAN
            out[2, i] = NAN
            j += 1
            continue
        if j == seed_end:
            s_tot += c
            s_ema = s_tot / slow
            f_tot += c
            f_ema = f_tot / fast
        else:
            s_ema = fma(c - s_ema, k_slow, s_ema)
            f_ema = fma(c - f_ema, k_fast, f_ema)
        raw = f_ema - s_ema
        js = j - seed_end  # the signal EMA's value index
        if js < signal - 1:
            g_tot += raw
            out[0, i] = NAN
            out[1, i] = NAN
            out[2, i] = NAN
        else:
            if js == signal - 1:
                g_tot += raw
                g_ema = g_tot / signal
            else:
                g_ema = fma(raw - g_ema, k_sig, g_ema)
            out[0, i] = raw
            out[1, i] = g_ema
            out[2, i] = raw - g_ema
        j += 1
    state[0] = j
    state[1], state[2], state[3], state[4], state[5], state[6] = (
        s_tot,
        s_ema,
        f_tot,
        f_ema,
        g_tot,
        g_ema,
    )


def _macd_lookback(p):
    return max(int(p["fast"]), int(p["slow"])) - 1 + int(p["signal"]) - 1


def _talib_macd(cols, p):
    import talib

    return talib.MACD(cols["close"], int(p["fast"]), int(p["slow"]), int(p["signal"]))


@njit(cache=True, nogil=True)
def macd_line_kernel(inputs, params, state, out):
    full = np.empty((3, inputs.shape[1]))
    macd_kernel(inputs, params, state, full)
    out[0, :] = full[0]


@njit(cache=True, nogil=True)
def macd_signal_kernel(inputs, params, state, out):
    full = np.empty((3, inputs.shape[1]))
    macd_kernel(inputs, params, state, full)
    out[0, :] = full[1]


@njit(cache=True, nogil=True)
def macd_hist_kernel(inputs, params, state, out):
    full = np.empty((3, inputs.shape[1]))
    macd_kernel(inputs, params, state, full)
    out[0, :] = full[2]


register_group(
    "macd",
    macd_kernel,
    ("macd", "macd_signal", "macd_hist"),
    {"macd": macd_line_kernel, "macd_signal": macd_signal_kernel, "macd_hist": macd_hist_kernel},
    params=(
        Param("fast", int, min=2, doc="bars of the fast EMA"),
        Param("slow", int, min=2, doc="bars of the slow EMA"),
        Param("signal", int, min=1, doc="bars of the signal EMA"),
    ),
    inputs=("close",),
    lookback=_macd_lookback,
    state_size=lambda p: 1 + 3 * EMA_SIZE,
    init_state=lambda p: _zeros(1 + 3 * EMA_SIZE),
    builder=twins.macd,
    talib=_talib_macd,
    talib_names=dict.fromkeys(("macd", "macd_signal", "macd_hist"), "MACD"),
    docs={
        "macd": "MACD line: EMA(fast) - EMA(slow), the fast seed ending on the slow one's bar",
        "macd_signal": "EMA(signal) of the MACD line",
        "macd_hist": "MACD line - signal",
    },
)


# --- OBV and its EMA ------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _obv_run(close, volume, state, j, out):
    """TA_OBV: OBV[0] = volume[0]; add/subtract the bar's volume on an up/down close.
    State: [acc, prev close] at ``state[1:3]``."""
    acc = state[1]
    prev = state[2]
    if j == 0 and close.shape[0]:
        acc = volume[0]
        prev = close[0]
    for i in range(close.shape[0]):
        c = close[i]
        # the direction as -1, 0 or 1 and a select, not branches: the close's direction is a
        # coin flip to the branch predictor; v * -1.0 added is exactly a subtraction of v
        sign = (1.0 if c > prev else 0.0) - (1.0 if c < prev else 0.0)
        moved = acc + volume[i] * sign
        acc = moved if sign != 0.0 else acc
        out[i] = acc
        prev = c
    state[1] = acc
    state[2] = prev


@njit(cache=True, nogil=True)
def obv_kernel(inputs, params, state, out):
    j = int(state[0])
    _obv_run(inputs[0], inputs[1], state, j, out[0])
    state[0] = j + inputs.shape[1]


@njit(cache=True, nogil=True)
def obv_ema_kernel(inputs, params, state, out):
    n = int(params[0])
    j = int(state[0])
    obv = np.empty(inputs.shape[1])
    _obv_run(inputs[0], inputs[1], state, j, obv)
    ema_run(obv, state, 3, n, j, 0, out[0])
    state[0] = j + inputs.shape[1]


def _talib_obv(cols, p):
    import talib

    return talib.OBV(cols["close"], cols["volume"])


def _talib_obv_ema(cols, p):
    import talib

    return talib.EMA(talib.OBV(cols["close"], cols["volume"]), _n(p))


register(
    Kind(
        name="obv",
        params=(),
        inputs=("close", "volume"),
        lookback=lambda p: 0,
        kernel=obv_kernel,
        state_size=lambda p: 3,
        init_state=lambda p: _zeros(3),
        polars=twins.twin(twins.obv, "obv"),
        talib=_talib_obv,
        talib_name="OBV",
        doc="on-balance volume: the running sum of volume signed by the close's direction",
    )
)
register(
    Kind(
        name="obv_ema",
        params=(WINDOW,),
        inputs=("close", "volume"),
        lookback=lambda p: _n(p) - 1,
        kernel=obv_ema_kernel,
        state_size=lambda p: 3 + EMA_SIZE,
        init_state=lambda p: _zeros(3 + EMA_SIZE),
        polars=twins.twin(twins.obv_ema, "obv_ema"),
        talib=_talib_obv_ema,
        talib_name="EMA",
        doc="EMA(window) of on-balance volume",
    )
)


# --- ROC, ROCP (return) and the volatility of ROCP(1) ---------------------------------------
@njit(cache=True, nogil=True)
def _rate_kernel(inputs, params, state, out, percent):
    """TA_ROC (``percent``: ``(close / close[t-n] - 1) * 100``) or TA_ROCP (a fraction,
    ``(close - close[t-n]) / close[t-n]``); 0 after a zero price. The two formulas are kept
    apart, not derived from each other, because TA-Lib rounds them differently. State: the bar
    count and a ring of the last ``n`` closes."""
    n = int(params[0])
    close = inputs[0]
    j = int(state[0])
    ring = state[1 : 1 + n]
    pos = j % n  # the slot of close[j - n], overwritten by close[j]
    for i in range(close.shape[0]):
        c = close[i]
        if j + i < n:
            out[0, i] = NAN
        else:
            prev = ring[pos]
            if prev == 0.0:
                out[0, i] = 0.0
            elif percent:
                out[0, i] = ((c / prev) - 1.0) * 100.0
            else:
                out[0, i] = (c - prev) / prev
        ring[pos] = c
        pos += 1
        if pos == n:
            pos = 0
    state[0] = j + close.shape[0]


@njit(cache=True, nogil=True)
def roc_kernel(inputs, params, state, out):
    _rate_kernel(inputs, params, state, out, True)


@njit(cache=True, nogil=True)
def return_kernel(inputs, params, state, out):
    _rate_kernel(inputs, params, state, out, False)


@njit(cache=True, nogil=True)
def volatility_kernel(inputs, params, state, out):
    """TA_STDDEV(n) of TA_ROCP(1), which starts at bar 1. State: [count, prev close, var]."""
    n = int(params[0])
    close = inputs[0]
    j = int(state[0])
    k = close.shape[0]
    first = 1 if j == 0 else 0  # bar 0 has no return
    if first and k:
        out[0, 0] = NAN
        state[1] = close[0]
    r = np.empty(k - first if k > first else 0)
    prev = state[1]
    for i in range(first, k):
        c = close[i]
        r[i - first] = (c - prev) / prev if prev != 0.0 else 0.0
        prev = c
    if k > first:
        state[1] = prev
    var = np.empty(r.shape[0])
    var_run(r, state, 2, n, j + first - 1, var)
    for i in range(r.shape[0]):
        out[0, i + first] = std_of(var[i])
    state[0] = j + k


def _talib_roc(cols, p):
    import talib

    return talib.ROC(cols["close"], _n(p))


def _talib_return(cols, p):
    import talib

    return talib.ROCP(cols["close"], _n(p))


def _talib_volatility(cols, p):
    import talib

    return talib.STDDEV(talib.ROCP(cols["close"], 1), _n(p), 1.0)


for _name, _kernel, _twin, _talib, _talib_name, _doc in (
    ("roc", roc_kernel, twins.roc, _talib_roc, "ROC", "(close / close[t-window] - 1) * 100"),
    ("return", return_kernel, twins.ret, _talib_return, "ROCP",
     "(close - close[t-window]) / close[t-window]"),
):  # fmt: skip
    register(
        Kind(
            name=_name,
            params=(WINDOW,),
            inputs=("close",),
            lookback=_n,
            kernel=_kernel,
            state_size=lambda p: 1 + _n(p),
            init_state=lambda p: _zeros(1 + _n(p)),
            polars=twins.twin(_twin, _name),
            talib=_talib,
            talib_name=_talib_name,
            doc=_doc + "; 0 after a zero price",
        )
    )

register(
    Kind(
        name="volatility",
        params=(WINDOW2,),
        inputs=("close",),
        lookback=_n,
        kernel=volatility_kernel,
        state_size=lambda p: 2 + var_size(_n(p)),
        init_state=lambda p: _zeros(2 + var_size(_n(p))),
        polars=twins.twin(twins.volatility, "volatility"),
        talib=_talib_volatility,
        talib_name="STDDEV",
        doc="STDDEV(ROCP(close, 1), window): the population deviation of one-bar returns",
    )
)
