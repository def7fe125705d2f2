"""Highest and lowest values of sliding windows, branch-free: STOCH and WILLR.

A running extreme that rescans its window when the extreme leaves it (TA-Lib's way) takes
data-dependent branches on every bar, and a rescan on about one bar in six of a random walk;
the van Herk / Gil-Werman form below costs the same few comparisons on every bar. The values
are the window's own, so they equal a running extreme's to the bit.

:func:`ring_extremes` continues a kernel's state: the values before the call come from two ring
buffers (value ``q`` at slot ``q % w``), which are brought up to date, and the return value is
``(hh, hi, ll, lo)`` of the last (possibly partial) window -- the extremes and the newest value
number holding each, which is what a running extreme keeps in its state.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def window_extremes(xh, xl, w, hi, lo):
    """``hi[t] = max(xh[t-w+1 .. t])`` and ``lo[t] = min(xl[t-w+1 .. t])`` for ``t >= w - 1``
    (``hi[:w-1]``, ``lo[:w-1]`` are left as they are): the suffix extremes of aligned blocks of
    ``w`` values, then per value one comparison with the running prefix extreme of its block.
    """
    m = xh.shape[0]
    if m < w:
        return
    suf_h = np.empty(m)
    suf_l = np.empty(m)
    for b0 in range(0, m, w):
        b1 = min(b0 + w, m) - 1
        sh = xh[b1]
        sl = xl[b1]
        suf_h[b1] = sh
        suf_l[b1] = sl
        for t in range(b1 - 1, b0 - 1, -1):
            v = xh[t]
            sh = v if v > sh else sh
            suf_h[t] = sh
            v = xl[t]
            sl = v if v < sl else sl
            suf_l[t] = sl
    ph = xh[0]
    pl = xl[0]
    left = 0  # values left in the current block
    for t in range(m):
        vh = xh[t]
        vl = xl[t]
        if left == 0:
            left = w
            ph = vh
            pl = vl
        else:
            ph = vh if vh > ph else ph
            pl = vl if vl < pl else pl
        left -= 1
        if t >= w - 1:
            a = suf_h[t - w + 1]
            c = suf_l[t - w + 1]
            hi[t] = a if a > ph else ph
            lo[t] = c if c < pl else pl


@njit(cache=True, nogil=True)
def _staged(high, low, ring_h, ring_l, j):
    """The values a call's windows read -- up to ``w - 1`` from the rings, then the call's --
    and how many came from the rings."""
    w = ring_h.shape[0]
    before = min(j, w - 1)
    m = before + high.shape[0]
    bh = np.empty(m)
    bl = np.empty(m)
    for q in range(j - before, j):
        bh[q - j + before] = ring_h[q % w]
        bl[q - j + before] = ring_l[q % w]
    bh[before:] = high
    bl[before:] = low
    return bh, bl, before


@njit(cache=True, nogil=True)
def _push(high, low, ring_h, ring_l, j):
    """Bring the rings up to date with the call's values; ``(hh, hi, ll, lo)`` of the last
    window (newest to oldest: a strictly more extreme older value takes over)."""
    w = ring_h.shape[0]
    k = high.shape[0]
    for q in range(max(j, j + k - w), j + k):
        ring_h[q % w] = high[q - j]
        ring_l[q % w] = low[q - j]
    hi = lo = j + k - 1
    hh = high[k - 1]
    ll = low[k - 1]
    for q in range(j + k - 2, max(j + k - w, 0) - 1, -1):
        vh = ring_h[q % w] if q < j else high[q - j]
        vl = ring_l[q % w] if q < j else low[q - j]
        if vh > hh:
            hh = vh
            hi = q
        if vl < ll:
            ll = vl
            lo = q
    return hh, hi, ll, lo


@njit(cache=True, nogil=True)
def ring_extremes(high, low, ring_h, ring_l, j, hh_at, ll_at):
    """Values ``j, j + 1, ...`` (``high``, ``low``, not empty) over windows of
    ``w = ring_h.shape[0]``: ``hh_at[i]`` the highest high and ``ll_at[i]`` the lowest low of
    values ``j + i - w + 1 .. j + i``, for each ``i`` with ``j + i >= w - 1``. Returns the
    state of the last window (see the module docstring)."""
    w = ring_h.shape[0]
    if j:
        bh, bl, before = _staged(high, low, ring_h, ring_l, j)
        hh_b = np.empty(bh.shape[0])
        ll_b = np.empty(bh.shape[0])
        window_extremes(bh, bl, w, hh_b, ll_b)
        for t in range(max(before, w - 1), bh.shape[0]):
            hh_at[t - before] = hh_b[t]
            ll_at[t - before] = ll_b[t]
    else:  # the first call: no copies
        window_extremes(high, low, w, hh_at, ll_at)
    return _push(high, low, ring_h, ring_l, j)
