"""The classic kinds of ``technical_v1``: averages, bands, volume z-score; the shared helpers.

Every kernel is a single stateful pass (see :mod:`quantcli.features.kinds._base`): ``state[0]``
counts the bars seen, the rest holds the running sums, EMA values and window ring buffers of
:mod:`quantcli.features.kinds._steps`. Kinds computed by one TA-Lib call (``bb_pct`` and
``bb_width``; ``macd``, ``macd_signal`` and ``macd_hist``) share one kernel that writes all of
the call's outputs; ``extra["group"]`` names the call and ``extra["output"]`` the kind's row,
so the engine runs the call once for every feature of equal parameters.

MACD, OBV and the rates of change are in :mod:`quantcli.features.kinds.classic_trend`; the
momentum kinds (RSI, ATR, the directional system, STOCH) in
:mod:`quantcli.features.kinds.classic_momentum`; the Polars twins of all three in
:mod:`quantcli.features.kinds.classic_polars`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from numba import njit

from quantcli.features.kinds import classic_polars as twins
from quantcli.features.kinds._base import WINDOW, WINDOW2, Kind, Param, register
from quantcli.features.kinds._steps import (
    NAN,
    sma_run,
    sma_size,
    sma_var_run,
    var_size,
)


def _n(p: Mapping[str, Any]) -> int:
    return int(p["window"])


def _zeros(size: int) -> np.ndarray:
    return np.zeros(size, dtype=np.float64)


def register_group(
    group: str,
    kernel: Any,
    rows: tuple[str, ...],
    pickers: Mapping[str, Any],
    *,
    lookback: Callable[[Mapping[str, Any]], int] | Mapping[str, Callable],
    builder: Any,
    talib: Callable[..., tuple[np.ndarray, ...]],
    talib_names: Mapping[str, str],
    docs: Mapping[str, str],
    **common: Any,
) -> None:
    """Register one kind per output of a TA-Lib call that computes several (``rows``, in the
    order ``kernel`` writes them). Each kind's own kernel (``pickers[name]``) runs the shared
    one and keeps its row; ``extra`` tells the engine to run ``kernel`` once for all of them
    (the state layout is the shared kernel's, so the two are interchangeable)."""
    for row, name in enumerate(rows):
        lb = lookback[name] if isinstance(lookback, Mapping) else lookback
        register(
            Kind(
                name=name,
                lookback=lb,
                kernel=pickers[name],
                polars=twins.twin(builder, name),
                talib=lambda cols, p, _f=talib, _r=row: _f(cols, p)[_r],
                talib_name=talib_names.get(name, ""),
                doc=docs.get(name, ""),
                extra={"group": group, "row": row, "group_kernel": kernel, "group_rows": rows},
                **common,
            )
        )


# --- the per-bar arithmetic after the running sums, over whole C-contiguous arrays -----------
# Kept apart from the kernels so that LLVM vectorizes the square roots and divisions (the
# kernels' ``out`` rows are strided views, which it does not): with error_model="numpy" a
# division has no zero check, and every zero denominator is selected away before it matters.
# IEEE division and square root are correctly rounded in vector and scalar form alike.
@njit(cache=True, nogil=True, error_model="numpy")
def _bb_rows(close, middle, var, nbdev, pct, width):
    for i in range(close.shape[0]):
        mid = middle[i]
        dev = (np.sqrt(var[i]) + 0.0) * nbdev  # + 0.0: as std_of, a -0.0 variance gives +0.0
        upper = mid + dev
        lower = mid - dev
        w = upper - lower
        pct[i] = (close[i] - lower) / w if w != 0.0 else 0.0
        width[i] = w / mid if mid != 0.0 else 0.0


@njit(cache=True, nogil=True, error_model="numpy")
def _z_rows(x, mean, var, out):
    for i in range(x.shape[0]):
        sd = np.sqrt(var[i]) + 0.0
        out[i] = (x[i] - mean[i]) / sd if sd != 0.0 else 0.0


@njit(cache=True, nogil=True)
def _contiguous(x, w):
    """``x[w:]`` as a fresh C-contiguous array."""
    c = np.empty(x.shape[0] - w)
    c[:] = x[w:]
    return c


# --- NMA: close / SMA(close, n) - 1 ---------------------------------------------------------
@njit(cache=True, nogil=True)
def nma_kernel(inputs, params, state, out):
    n = int(params[0])
    close = inputs[0]
    j = int(state[0])
    k = close.shape[0]
    m = np.empty(k)
    sma_run(close, state, 1, n, j, m)
    for i in range(k):
        if j + i < n - 1:
            out[0, i] = NAN
        else:
            out[0, i] = close[i] / m[i] - 1.0 if m[i] != 0.0 else 0.0
    state[0] = j + k


def _talib_nma(cols, p):
    import talib

    c = cols["close"]
    with np.errstate(divide="ignore", invalid="ignore"):
        return c / talib.SMA(c, _n(p)) - 1.0


register(
    Kind(
        name="nma",
        params=(WINDOW,),
        inputs=("close",),
        lookback=lambda p: _n(p) - 1,
        kernel=nma_kernel,
        state_size=lambda p: 1 + sma_size(_n(p)),
        init_state=lambda p: _zeros(1 + sma_size(_n(p))),
        polars=twins.twin(twins.nma, "nma"),
        talib=_talib_nma,
        talib_name="SMA",
        doc="close / SMA(close, window) - 1; 0 when the SMA is 0",
    )
)


# --- BBANDS: (bb_pct, bb_width) -------------------------------------------------------------
@njit(cache=True, nogil=True)
def bbands_kernel(inputs, params, state, out):
    n = int(params[0])
    nbdev = params[1]
    close = inputs[0]
    j = int(state[0])
    k = close.shape[0]
    middle = np.empty(k)
    var = np.empty(k)
    sma_var_run(close, state, 1, 1 + 1 + n, n, j, middle, var)
    w = min(max(n - 1 - j, 0), k)  # warm-up bars of this call
    pct = np.empty(k - w)
    width = np.empty(k - w)
    _bb_rows(_contiguous(close, w), middle[w:], var[w:], nbdev, pct, width)
    out[:, :w] = NAN
    out[0, w:] = pct
    out[1, w:] = width
    state[0] = j + k


def _bb_state(p):
    return 1 + sma_size(_n(p)) + var_size(_n(p))


def _talib_bbands(cols, p):
    import talib

    c = cols["close"]
    upper, middle, lower = talib.BBANDS(c, _n(p), float(p["nbdev"]), float(p["nbdev"]), 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (c - lower) / (upper - lower), (upper - lower) / middle


@njit(cache=True, nogil=True)
def bb_pct_kernel(inputs, params, state, out):
    full = np.empty((2, inputs.shape[1]))
    bbands_kernel(inputs, params, state, full)
    out[0, :] = full[0]


@njit(cache=True, nogil=True)
def bb_width_kernel(inputs, params, state, out):
    full = np.empty((2, inputs.shape[1]))
    bbands_kernel(inputs, params, state, full)
    out[0, :] = full[1]


register_group(
    "bbands",
    bbands_kernel,
    ("bb_pct", "bb_width"),
    {"bb_pct": bb_pct_kernel, "bb_width": bb_width_kernel},
    params=(WINDOW2, Param("nbdev", float, min=0.0, doc="band width in standard deviations")),
    inputs=("close",),
    lookback=lambda p: _n(p) - 1,
    state_size=_bb_state,
    init_state=lambda p: _zeros(_bb_state(p)),
    builder=twins.bbands,
    talib=_talib_bbands,
    talib_names={"bb_pct": "BBANDS", "bb_width": "BBANDS"},
    docs={
        "bb_pct": "(close - lower) / (upper - lower) of the Bollinger bands; 0 for a zero width",
        "bb_width": "(upper - lower) / middle of the Bollinger bands; 0 for a zero middle",
    },
)


# --- volume z-score: (volume - SMA) / STDDEV ------------------------------------------------
@njit(cache=True, nogil=True)
def volume_z_kernel(inputs, params, state, out):
    n = int(params[0])
    volume = inputs[0]
    j = int(state[0])
    k = volume.shape[0]
    m = np.empty(k)
    var = np.empty(k)
    sma_var_run(volume, state, 1, 1 + 1 + n, n, j, m, var)
    w = min(max(n - 1 - j, 0), k)  # warm-up bars of this call
    row = np.empty(k - w)
    _z_rows(_contiguous(volume, w), m[w:], var[w:], row)
    out[0, :w] = NAN
    out[0, w:] = row
    state[0] = j + k


def _talib_volume_z(cols, p):
    import talib

    v = cols["volume"]
    with np.errstate(divide="ignore", invalid="ignore"):
        return (v - talib.SMA(v, _n(p))) / talib.STDDEV(v, _n(p), 1.0)


register(
    Kind(
        name="volume_z",
        params=(WINDOW2,),
        inputs=("volume",),
        lookback=lambda p: _n(p) - 1,
        kernel=volume_z_kernel,
        state_size=_bb_state,
        init_state=lambda p: _zeros(_bb_state(p)),
        polars=twins.twin(twins.volume_z, "volume_z"),
        talib=_talib_volume_z,
        talib_name="STDDEV",
        doc="(volume - SMA(volume, window)) / STDDEV(volume, window); 0 for a zero deviation",
    )
)
