"""Window oscillators and ranges: CCI, MFI, WILLR and AROON/AROONOSC, each TA-Lib's function
operation for operation.

One stateful pass per kernel (see :mod:`quantcli.features.kinds._base`); ``state[0]`` counts
the bars seen, window values live in ring buffers indexed by bar number modulo the window, so a
continued build reads exactly the values a full one would. Kinds of one TA-Lib call with two
outputs (AROON) are kinds sharing a kernel, like MACD's. The Polars twins are in
:mod:`quantcli.features.kinds.momentum_polars`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from quantcli.features.kinds import momentum_polars as twins
from quantcli.features.kinds._steps import NAN, is_zero
from quantcli.features.kinds._windows import ring_extremes
from quantcli.features.kinds.talib_overlap import WINDOW2, _n, _talib, kind

HLC = ("high", "low", "close")


# --- CCI: state [j, ring(n) of typical prices] -----------------------------------------------
@njit(cache=True, nogil=True)
def cci_kernel(inputs, params, state, out):
    n = int(params[0])
    high, low, close = inputs[0], inputs[1], inputs[2]
    j = int(state[0])
    slot = j % n
    for i in range(close.shape[0]):
        last = (high[i] + low[i] + close[i]) / 3.0
        state[1 + slot] = last
        slot += 1
        if slot == n:
            slot = 0
        if j < n - 1:
            out[0, i] = NAN
        else:
            # TA-Lib sums its circular buffer in slot order, not in time order
            avg = 0.0
            for k in range(n):
                avg += state[1 + k]
            avg /= n
            dev = 0.0
            for k in range(n):
                dev += abs(state[1 + k] - avg)
            diff = last - avg
            ok = not is_zero(diff) and not is_zero(dev)
            out[0, i] = diff / (0.015 * (dev / n)) if ok else 0.0
        j += 1
    state[0] = j


kind(
    "cci",
    params=(WINDOW2,),
    inputs=HLC,
    lookback=lambda p: _n(p) - 1,
    kernel=cci_kernel,
    size=lambda p: 1 + _n(p),
    polars=twins.cci,
    talib=_talib("CCI", *HLC),
    talib_name="CCI",
    doc="commodity channel index of the typical price over window bars",
)


# --- MFI: state [j, prev_tp, pos_sum, neg_sum, ring(n) of pos, ring(n) of neg] ---------------
@njit(cache=True, nogil=True)
def mfi_kernel(inputs, params, state, out):
    n = int(params[0])
    high, low, close, volume = inputs[0], inputs[1], inputs[2], inputs[3]
    j = int(state[0])
    s1, s2, s3 = state[1], state[2], state[3]
    slot = j % n
    for i in range(close.shape[0]):
        tp = (high[i] + low[i] + close[i]) / 3.0
        if j == 0:
            s1 = tp
            out[0, i] = NAN
            j += 1
            slot = 1 % n
            continue
        if j > n:  # the flow leaving the window
            s2 -= state[4 + slot]
            s3 -= state[4 + n + slot]
        change = tp - s1
        s1 = tp
        flow = tp * volume[i]
        pos = 0.0
        neg = 0.0
        if change < 0.0:
            neg = flow
        elif change > 0.0:
            pos = flow
        s2 += pos
        s3 += neg
        state[4 + slot] = pos
        state[4 + n + slot] = neg
        slot += 1
        if slot == n:
            slot = 0
        if j < n:
            out[0, i] = NAN
        else:
            total = s2 + s3
            # TA-Lib's MFI: 0 when less than one unit of money flowed over the window
            out[0, i] = 0.0 if total < 1.0 else 100.0 * (s2 / total)
        j += 1
    state[1], state[2], state[3] = s1, s2, s3
    state[0] = j


kind(
    "mfi",
    params=(WINDOW2,),
    inputs=(*HLC, "volume"),
    lookback=lambda p: _n(p),
    kernel=mfi_kernel,
    size=lambda p: 4 + 2 * _n(p),
    polars=twins.mfi,
    talib=_talib("MFI", *HLC, "volume"),
    talib_name="MFI",
    extra={
        "parity": "TA-Lib clears the rounding residue its money-flow sums keep after a flat "
        "or zero-volume stretch; here it stays (below 1e-9 of the 0..100 scale)"
    },
    doc="money flow index over window bars, 0..100; 0 when under 1 unit of flow",
)


# --- WILLR / AROON: window extremes, state [j, hh, hi, ll, lo, ring(w) highs, ring(w) lows] ---
@njit(cache=True, nogil=True, inline="always")
def _rescan_max(state, o, w, first, last):
    """The highest value of ring ``state[o:o+w]`` over bars ``first .. last`` and its bar
    number, scanned oldest to newest so that ties go to the newest bar."""
    slot = first % w
    best = state[o + slot]
    at = first
    for t in range(first + 1, last + 1):
        slot = slot + 1 if slot + 1 < w else 0
        v = state[o + slot]
        if v >= best:
            best = v
            at = t
    return best, at


@njit(cache=True, nogil=True, inline="always")
def _rescan_min(state, o, w, first, last):
    """:func:`_rescan_max` for the lowest value."""
    slot = first % w
    best = state[o + slot]
    at = first
    for t in range(first + 1, last + 1):
        slot = slot + 1 if slot + 1 < w else 0
        v = state[o + slot]
        if v <= best:
            best = v
            at = t
    return best, at


@njit(cache=True, nogil=True, inline="always")
def _track(state, w, j, slot, h, lw, hh, hi, ll, lo):
    """Push bar ``j`` and return the extremes of bars ``j-w+1 .. j`` and their bar numbers.

    As TA-Lib: a new bar at least as extreme takes over (ties go to the newest bar); when the
    extreme leaves the window the window is rescanned. Amortized O(1), and the same choices
    whether the window was reached in one call or two. ``slot`` is ``j % w``."""
    state[5 + slot] = h
    state[5 + w + slot] = lw
    start = max(j - w + 1, 0)
    if hi < start or j == 0:
        hh, hi = _rescan_max(state, 5, w, start, j)
    elif h >= hh:
        hh = h
        hi = j
    if lo < start or j == 0:
        ll, lo = _rescan_min(state, 5 + w, w, start, j)
    elif lw <= ll:
        ll = lw
        lo = j
    return hh, hi, ll, lo


@njit(cache=True, nogil=True)
def willr_kernel(inputs, params, state, out):
    """TA_WILLR: ``((HH - C) / (HH - LL)) * -100``; the window extremes from
    :func:`ring_extremes` (branch-free), the state the same a running extreme keeps."""
    n = int(params[0])
    high, low, close = inputs[0], inputs[1], inputs[2]
    j = int(state[0])
    k = close.shape[0]
    if k == 0:
        return
    hh_at = np.empty(k)
    ll_at = np.empty(k)
    hh, hi, ll, lo = ring_extremes(high, low, state[5 : 5 + n], state[5 + n : 5 + 2 * n], j,
                                   hh_at, ll_at)  # fmt: skip
    warm = min(max(n - 1 - j, 0), k)
    for i in range(warm):
        out[0, i] = NAN
    for i in range(warm, k):
        rng = hh_at[i] - ll_at[i]
        out[0, i] = ((hh_at[i] - close[i]) / rng) * -100.0 if rng != 0.0 else 0.0
    state[0], state[1], state[2], state[3], state[4] = j + k, hh, hi, ll, lo


kind(
    "willr",
    params=(WINDOW2,),
    inputs=HLC,
    lookback=lambda p: _n(p) - 1,
    kernel=willr_kernel,
    size=lambda p: 5 + 2 * _n(p),
    polars=twins.willr,
    talib=_talib("WILLR", *HLC),
    talib_name="WILLR",
    doc="Williams' %R over window bars, -100..0; 0 when high == low",
)


@njit(cache=True, nogil=True)
def aroon_group(inputs, params, state, out):
    """Rows: AROON down, AROON up, AROONOSC (window of n + 1 bars)."""
    n = int(params[0])
    high, low = inputs[0], inputs[1]
    j = int(state[0])
    hh, hi, ll, lo = state[1], int(state[2]), state[3], int(state[4])
    w = n + 1
    factor = 100.0 / n
    rows = out.shape[0]
    pick = params[1] if rows == 1 else 0.0
    slot = j % w
    for i in range(high.shape[0]):
        hh, hi, ll, lo = _track(state, w, j, slot, high[i], low[i], hh, hi, ll, lo)
        slot += 1
        if slot == w:
            slot = 0
        if j < n:
            for r in range(rows):
                out[r, i] = NAN
        else:
            down = factor * (n - (j - lo))
            up = factor * (n - (j - hi))
            if rows == 3:
                out[0, i] = down
                out[1, i] = up
                out[2, i] = factor * (hi - lo)
            elif pick == 0.0:
                out[0, i] = down
            elif pick == 1.0:
                out[0, i] = up
            else:
                out[0, i] = factor * (hi - lo)
        j += 1
    state[0], state[1], state[2], state[3], state[4] = j, hh, hi, ll, lo


def _aroon_kind(name: str, row: int, talib_name: str, doc: str) -> None:
    @njit(cache=True, nogil=True)
    def picker(inputs, params, state, out):
        p = np.empty(2)
        p[0] = params[0]
        p[1] = float(row)
        aroon_group(inputs, p, state, out)

    def oracle(cols, p, _r=row):
        import talib

        if _r == 2:
            return talib.AROONOSC(cols["high"], cols["low"], _n(p))
        return talib.AROON(cols["high"], cols["low"], _n(p))[_r]

    kind(
        name,
        params=(WINDOW2,),
        inputs=("high", "low"),
        lookback=lambda p: _n(p),
        kernel=picker,
        size=lambda p: 5 + 2 * (_n(p) + 1),
        polars=twins.aroon(row),
        talib=oracle,
        talib_name=talib_name,
        doc=doc,
        extra={
            "group": "aroon",
            "row": row,
            "group_kernel": aroon_group,
            "group_rows": ("aroon_down", "aroon_up", "aroonosc"),
        },
    )


_aroon_kind("aroon_down", 0, "AROON", "bars since the window's lowest low, scaled 100..0")
_aroon_kind("aroon_up", 1, "AROON", "bars since the window's highest high, scaled 100..0")
_aroon_kind("aroonosc", 2, "AROONOSC", "aroon_up - aroon_down, -100..100")
