"""Numba kernels of the technical indicators, operation for operation as TA-Lib computes them.

Each indicator takes plain float64 arrays of ONE symbol (a contiguous block, oldest bar first)
and returns a full-length array with NaN in the warm-up bars, like TA-Lib's Python wrapper.
The arithmetic follows TA-Lib's C source step by step (running sums that add the new value and
subtract the trailing one, ``E[x^2] - E[x]^2`` variances, Wilder updates written
``(prev * (n - 1) + x) / n``), so the results agree with TA-Lib to the last bit or nearly so,
not merely to a tolerance: a ratio such as ``close / SMA - 1`` near zero would otherwise turn a
1e-16 difference into a large relative one.

TA-Lib's zero conventions are kept: a variance below 1e-8 gives a standard deviation of 0
(``TA_IS_ZERO_OR_NEG``); RSI, +DI, -DI and DX are 0 when their denominator is within 1e-8 of 0
(``TA_IS_ZERO``); stochastic %K is 0 when HH == LL; ROC/ROCP are 0 after a zero price.

:func:`group_blocks` runs one indicator group (BBANDS, MACD, the directional system, STOCH, or a
single indicator) over every symbol block; it releases the GIL, and
:mod:`quantcli.features.expressions` runs symbol ranges on threads (plain threads rather than
``prange``, which doubles the one-off compile time) inside one Polars expression per group.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit
from numba.core import types
from numba.extending import intrinsic

# Kind codes shared with quantcli.features.compute.KIND_CODES.
NMA, BB_PCT, BB_WIDTH, VOLUME_Z, RSI, ROC, MACD, MACD_SIGNAL, MACD_HIST = range(9)
ADX, PLUS_DI, MINUS_DI, ATR, VOLATILITY, STOCH_K, STOCH_D, OBV, OBV_EMA, RETURN = range(9, 19)

_ZERO = 1e-8  # TA-Lib's TA_IS_ZERO / TA_IS_ZERO_OR_NEG threshold


@intrinsic
def fma(typingctx, a, b, c):
    """``a * b + c`` rounded once (LLVM's ``llvm.fma.f64``).

    TA-Lib's wheels are compiled with floating-point contraction, so its EMA and Wilder steps
    are fused multiply-adds; matching them bit for bit needs the same single rounding.
    """
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context, builder, signature, args):
        dbl = ir.DoubleType()
        fnty = ir.FunctionType(dbl, [dbl, dbl, dbl])
        fn = builder.module.declare_intrinsic("llvm.fma", [dbl], fnty)
        return builder.call(fn, args)

    return sig, codegen


@njit(cache=True)
def _nans(size, valid_from):
    """An uninitialised float64[size] whose undefined prefix ``[0, valid_from)`` is NaN.

    Filling only the prefix (not the whole array, as ``np.full`` would) halves the memory
    traffic of the kernels; every value from ``valid_from`` on is written by the caller.
    """
    out = np.empty(size)
    for i in range(min(max(valid_from, 0), size)):
        out[i] = np.nan
    return out


@njit(cache=True)
def _is_zero(v):
    """TA-Lib's TA_IS_ZERO: within 1e-8 of zero."""
    return -_ZERO < v < _ZERO


@njit(cache=True)
def sma(x, first, n):
    """TA_INT_SMA over ``x[first:]``: a running sum divided by ``n``; defined from ``first+n-1``."""
    size = x.shape[0]
    out = _nans(size, first + n - 1)
    start = first + n - 1
    if start >= size:
        return out
    total = 0.0
    i = first
    while i < start:
        total += x[i]
        i += 1
    trailing = first
    while i < size:
        total += x[i]
        tmp = total
        total -= x[trailing]
        trailing += 1
        out[i] = tmp / n
        i += 1
    return out


@njit(cache=True)
def _two_pass(x, a, b, inv_n):
    """(shift, s1, s2): the window mean of ``x[a:b+1]`` and the deviation sums around it."""
    total = 0.0
    for j in range(a, b + 1):
        total += x[j]
    shift = total * inv_n
    s1 = 0.0
    s2 = 0.0
    for j in range(a, b + 1):
        d = x[j] - shift
        s1 += d
        s2 += d * d
    return shift, s1, s2


@njit(cache=True)
def variance(x, first, n):
    """TA_VAR(n) over ``x[first:]``: population variance, cancellation-free (TA-Lib >= 0.7).

    Running sums of deviations from a shift ``K`` (the window's first value), so
    ``var = sum((x-K)^2)/n - (sum(x-K)/n)^2`` never subtracts two ~mean^2 quantities. The shift
    is re-anchored on the window mean by a fresh two-pass sum when the variance falls below 1e-6
    of the mean squared deviation, when the value leaving the window dwarfs the sum (an outlier
    passing through), or every ``32 n`` bars; after a re-anchor a variance below 1e-12 of that
    scale is 0. Non-negative by construction.
    """
    size = x.shape[0]
    out = _nans(size, first + n - 1)
    start = first + n - 1
    if start >= size:
        return out
    inv_n = 1.0 / n
    trailing = first
    shift = x[trailing]
    s1 = 0.0
    s2 = 0.0
    for j in range(trailing, start):
        d = x[j] - shift
        s1 += d
        s2 += d * d
    countdown = 32 * n
    for i in range(start, size):
        d = x[i] - shift
        s1 += d
        s2 += d * d
        m1 = s1 * inv_n
        var = s2 * inv_n - m1 * m1
        d = x[trailing] - shift
        s1 -= d
        d *= d
        s2 -= d
        trailing += 1
        countdown -= 1
        if var < 0.000001 * (s2 * inv_n) or d > 1000000.0 * s2 or countdown <= 0:
            countdown = 32 * n
            window_start = i - n + 1
            shift, s1, s2 = _two_pass(x, window_start, i, inv_n)
            m1 = s1 * inv_n
            var = s2 * inv_n - m1 * m1
            if var < 0.000000000001 * (s2 * inv_n):
                var = 0.0
            d = x[window_start] - shift
            s1 -= d
            s2 -= d * d
        out[i] = var
    return out


@njit(cache=True)
def stddev(x, first, n):
    """TA_STDDEV(n, nbdev=1) over ``x[first:]``: the square root of :func:`variance`."""
    out = variance(x, first, n)
    for i in range(first + n - 1, x.shape[0]):
        v = out[i]
        out[i] = np.sqrt(v) if v != 0.0 else 0.0
    return out


@njit(cache=True)
def ema(x, first, n, seed_end):
    """TA_EMA with k = 2 / (n + 1), seeded with the mean of the ``n`` values ending at
    ``seed_end`` (``first + n - 1`` for a plain EMA; MACD ends its fast seed on the slow one's);
    the step ``ema = (x - ema) * k + ema`` is one fused multiply-add, as in TA-Lib's build.
    """
    size = x.shape[0]
    out = _nans(size, seed_end)
    if seed_end >= size:
        return out
    k = 2.0 / (n + 1)
    total = 0.0
    for i in range(seed_end - n + 1, seed_end + 1):
        total += x[i]
    prev = total / n
    out[seed_end] = prev
    for i in range(seed_end + 1, size):
        prev = fma(x[i] - prev, k, prev)
        out[i] = prev
    return out


@njit(cache=True)
def macd(close, fast, slow, signal):
    """TA_MACD: (line, signal, hist); the fast EMA's seed window ends on the slow one's bar."""
    if slow < fast:
        fast, slow = slow, fast
    size = close.shape[0]
    seed_end = slow - 1
    start = seed_end + signal - 1
    line = _nans(size, start)
    hist = _nans(size, start)
    if start >= size:
        return line, _nans(size, size), hist
    slow_ema = ema(close, 0, slow, seed_end)
    fast_ema = ema(close, 0, fast, seed_end)
    raw = _nans(size, seed_end)
    for i in range(seed_end, size):
        raw[i] = fast_ema[i] - slow_ema[i]
    sig = ema(raw, seed_end, signal, start)
    for i in range(start, size):
        line[i] = raw[i]
        hist[i] = raw[i] - sig[i]
    return line, sig, hist


@njit(cache=True)
def rsi(close, n):
    """TA_RSI: Wilder averages of gains and losses seeded with their mean over bars 1..n.

    The Wilder step is ``(avg * (n - 1) + x) * (1 / n)`` with the reciprocal hoisted, and the
    gain/loss split is branch-free (TA-Lib >= 0.7 arithmetic). 0 when no change was ever seen.
    """
    size = close.shape[0]
    out = _nans(size, n)
    if n >= size:
        return out
    inv_n = 1.0 / n
    keep = float(n - 1)
    gain = 0.0
    loss = 0.0
    prev = close[0]
    # bars 1..n sum the seed; from bar n on each bar is a Wilder step: one loop, as TA-Lib's
    for i in range(1, size):
        d = close[i] - prev
        prev = close[i]
        if i > n:
            loss *= keep
            gain *= keep
        up = d if d > 0.0 else 0.0
        gain += up
        loss += up - d
        if i >= n:
            loss *= inv_n
            gain *= inv_n
            s = gain + loss
            out[i] = 100.0 * (gain / s) if s > 0.0 else 0.0
    return out


@njit(cache=True)
def _true_range(high, low, prev_close):
    out = high - low
    t = abs(high - prev_close)
    if t > out:
        out = t
    t = abs(low - prev_close)
    if t > out:
        out = t
    return out


@njit(cache=True)
def atr(high, low, close, n):
    """TA_ATR: true range from bar 1, seeded with its mean over bars 1..n, then Wilder's
    ``atr = b * atr + (a * tr)`` (one fused multiply-add) with ``b = (n - 1) / n``, ``a = 1 - b``,
    as TA-Lib >= 0.7 computes it."""
    size = close.shape[0]
    out = _nans(size, n)
    if n >= size:
        return out
    beta = (n - 1) / n
    alpha = 1.0 - beta
    total = 0.0
    for i in range(1, n + 1):
        total += _true_range(high[i], low[i], close[i - 1])
    prev = total / n
    out[n] = prev
    for i in range(n + 1, size):
        prev = fma(beta, prev, alpha * _true_range(high[i], low[i], close[i - 1]))
        out[i] = prev
    return out


@njit(cache=True)
def _dm(high, low, i):
    """(+DM, -DM) of bar ``i`` as TA-Lib assigns them (at most one is non-zero)."""
    diff_p = high[i] - high[i - 1]
    diff_m = low[i - 1] - low[i]
    if diff_m > 0 and diff_p < diff_m:
        return 0.0, diff_m
    if diff_p > 0 and diff_p > diff_m:
        return diff_p, 0.0
    return 0.0, 0.0


@njit(cache=True)
def directional(high, low, close, n):
    """TA_PLUS_DI, TA_MINUS_DI and TA_ADX (period ``n``) in one pass: (+DI, -DI, ADX).

    +DM, -DM and TR are seeded with their sums over bars 1..n-1, then smoothed
    ``prev - prev / n + x``; the DIs start at bar n, ADX (mean of the first n DX) at bar 2n-1.
    """
    size = close.shape[0]
    pdi = _nans(size, n)
    mdi = _nans(size, n)
    adx = _nans(size, 2 * n - 1)
    if n >= size:
        return pdi, mdi, adx
    pdm = 0.0
    mdm = 0.0
    tr = 0.0
    for i in range(1, n):
        p, m = _dm(high, low, i)
        pdm += p
        mdm += m
        tr += _true_range(high[i], low[i], close[i - 1])
    sum_dx = 0.0
    prev_adx = 0.0
    for i in range(n, size):
        p, m = _dm(high, low, i)
        pdm = pdm - (pdm / n) + p
        mdm = mdm - (mdm / n) + m
        tr = tr - (tr / n) + _true_range(high[i], low[i], close[i - 1])
        dx_defined = False
        dx = 0.0
        if _is_zero(tr):
            pdi[i] = 0.0
            mdi[i] = 0.0
        else:
            minus = 100.0 * (mdm / tr)
            plus = 100.0 * (pdm / tr)
            pdi[i] = plus
            mdi[i] = minus
            s = minus + plus
            if not _is_zero(s):
                dx = 100.0 * (abs(minus - plus) / s)
                dx_defined = True
        if i < 2 * n - 1:
            if dx_defined:
                sum_dx += dx
        elif i == 2 * n - 1:
            if dx_defined:
                sum_dx += dx
            prev_adx = sum_dx / n
            adx[i] = prev_adx
        else:
            if dx_defined:
                prev_adx = ((prev_adx * (n - 1)) + dx) / n
            adx[i] = prev_adx
    return pdi, mdi, adx


@njit(cache=True)
def stoch(high, low, close, fastk, slowk, slowd):
    """TA_STOCH with SMA smoothing: (slow %K, slow %D).

    fast %K = ((C - LL) / (HH - LL)) * 100, 0 when HH == LL, over ``fastk`` bars.
    """
    size = close.shape[0]
    first_fast = fastk - 1
    start = first_fast + slowk - 1 + slowd - 1
    if start >= size:
        return _nans(size, size), _nans(size, size)
    fast = _nans(size, first_fast)
    # running extremes: rescan the window only when the extreme falls out of it (amortised O(n))
    hi_idx = -1
    lo_idx = -1
    hh = 0.0
    ll = 0.0
    for i in range(first_fast, size):
        w0 = i - fastk + 1
        if hi_idx < w0:
            hi_idx = w0
            hh = high[w0]
            for j in range(w0 + 1, i + 1):
                if high[j] >= hh:
                    hh = high[j]
                    hi_idx = j
        elif high[i] >= hh:
            hh = high[i]
            hi_idx = i
        if lo_idx < w0:
            lo_idx = w0
            ll = low[w0]
            for j in range(w0 + 1, i + 1):
                if low[j] <= ll:
                    ll = low[j]
                    lo_idx = j
        elif low[i] <= ll:
            ll = low[i]
            lo_idx = i
        rng = hh - ll
        fast[i] = ((close[i] - ll) / rng) * 100.0 if rng != 0.0 else 0.0
    k = sma(fast, first_fast, slowk)
    d = sma(k, first_fast + slowk - 1, slowd)
    for i in range(start):  # slow %K is reported from %D's first bar on, as TA-Lib does
        k[i] = np.nan
    return k, d


@njit(cache=True)
def obv(close, volume):
    """TA_OBV: OBV[0] = volume[0]; add/subtract the bar's volume on an up/down close."""
    size = close.shape[0]
    out = np.empty(size)
    if size == 0:
        return out
    acc = volume[0]
    prev = close[0]
    for i in range(size):
        c = close[i]
        if c > prev:
            acc += volume[i]
        elif c < prev:
            acc -= volume[i]
        out[i] = acc
        prev = c
    return out


@njit(cache=True)
def _rate_of_change(close, n, percent):
    """TA_ROC (``percent``: ``(close / close[t-n] - 1) * 100``) or TA_ROCP (a fraction,
    ``(close - close[t-n]) / close[t-n]``); 0 after a zero price. The two formulas are kept
    apart, not derived from each other, because TA-Lib rounds them differently."""
    size = close.shape[0]
    out = _nans(size, n)
    for i in range(n, size):
        prev = close[i - n]
        if prev == 0.0:
            out[i] = 0.0
        elif percent:
            out[i] = ((close[i] / prev) - 1.0) * 100.0
        else:
            out[i] = (close[i] - prev) / prev
    return out


@njit(cache=True)
def rocp(close, n):
    """TA_ROCP: (close - close[t-n]) / close[t-n], a fraction; 0 after a zero price."""
    return _rate_of_change(close, n, False)


@njit(cache=True)
def roc(close, n):
    """TA_ROC: (close / close[t-n] - 1) * 100, in percent; 0 after a zero price."""
    return _rate_of_change(close, n, True)


@njit(cache=True)
def group_of(code):
    """Features computed together share a group (the first member's code): BBANDS, MACD,
    the directional system and STOCH are each computed once per symbol."""
    if code == BB_WIDTH:
        return BB_PCT
    if code in (MACD_SIGNAL, MACD_HIST):
        return MACD
    if code in (PLUS_DI, MINUS_DI):
        return ADX
    if code == STOCH_D:
        return STOCH_K
    return code


@njit(cache=True)
def member_row(code):
    """Row of ``code`` in its group's output (see :func:`group_values`)."""
    if code in (BB_WIDTH, MACD_SIGNAL, STOCH_D, PLUS_DI):
        return 1
    if code in (MACD_HIST, MINUS_DI):
        return 2
    return 0


@njit(cache=True)
def group_values(group, p0, p1, p2, high, low, close, volume):
    """Every output of one group for one symbol, as three full-length arrays.

    BB_PCT: (bb_pct, bb_width, -); MACD: (line, signal, hist); ADX: (adx, +DI, -DI);
    STOCH_K: (slow %K, slow %D, -); any other kind: (its output, -, -). ``-`` is an empty array.
    """
    size = close.shape[0]
    none = np.empty(0)
    if group == NMA:
        n = int(p0)
        m = sma(close, 0, n)
        out = _nans(size, n - 1)
        for i in range(n - 1, size):
            out[i] = close[i] / m[i] - 1.0 if m[i] != 0.0 else 0.0
        return out, none, none
    if group == BB_PCT:
        n = int(p0)
        middle = sma(close, 0, n)
        std = stddev(close, 0, n)
        pct = _nans(size, n - 1)
        width_rel = _nans(size, n - 1)
        for i in range(n - 1, size):
            dev = std[i] * p1
            upper = middle[i] + dev
            lower = middle[i] - dev
            width = upper - lower
            pct[i] = (close[i] - lower) / width if width != 0.0 else 0.0
            width_rel[i] = width / middle[i] if middle[i] != 0.0 else 0.0
        return pct, width_rel, none
    if group == VOLUME_Z:
        n = int(p0)
        m = sma(volume, 0, n)
        sd = stddev(volume, 0, n)
        out = _nans(size, n - 1)
        for i in range(n - 1, size):
            out[i] = (volume[i] - m[i]) / sd[i] if sd[i] != 0.0 else 0.0
        return out, none, none
    if group == RSI:
        return rsi(close, int(p0)), none, none
    if group == ROC:
        return roc(close, int(p0)), none, none
    if group == MACD:
        return macd(close, int(p0), int(p1), int(p2))
    if group == ADX:
        pdi, mdi, adx = directional(high, low, close, int(p0))
        return adx, pdi, mdi
    if group == ATR:
        return atr(high, low, close, int(p0)), none, none
    if group == VOLATILITY:
        return stddev(rocp(close, 1), 1, int(p0)), none, none
    if group == STOCH_K:
        k, d = stoch(high, low, close, int(p0), int(p1), int(p2))
        return k, d, none
    if group == OBV:
        return obv(close, volume), none, none
    if group == OBV_EMA:
        n = int(p0)
        return ema(obv(close, volume), 0, n, n - 1), none, none
    if group == RETURN:
        return rocp(close, int(p0)), none, none
    return _nans(size, size), none, none


@njit(cache=True)
def feature(code, p0, p1, p2, high, low, close, volume):
    """One feature of one symbol, by kind code and up to three parameters (full length)."""
    values = group_values(group_of(code), p0, p1, p2, high, low, close, volume)
    return values[member_row(code)]


@njit(cache=True, nogil=True)
def group_blocks(
    group, p0, p1, p2, starts, out_starts, skip, high, low, close, volume, out, sym_lo, sym_hi
):
    """One indicator group over symbol blocks ``sym_lo .. sym_hi - 1``, each block's bars from
    ``skip`` on, into ``out`` (releases the GIL, so disjoint symbol ranges can run on threads).

    Parameters
    ----------
    group : int
        The group's kind code (see :func:`group_of`); ``p0, p1, p2`` its parameters.
    starts : int64[S + 1]
        Row offsets of the symbol blocks in the input arrays (sorted by symbol, ts).
    out_starts : int64[S + 1]
        Row offsets of each block's written rows in ``out`` (``starts`` when ``skip`` is 0).
    skip : int
        Bars not written at the start of each block (the warm-up); each block is still computed
        from its first bar.
    high, low, close, volume : float64[N]
        The inputs, contiguous per symbol.
    out : float64[R, M]
        Written in place: ``out[r, out_starts[s] + i - skip]`` is the group's ``r``-th output
        (see :func:`group_values`) at bar ``i >= skip`` of block ``s``; ``R`` is 1 to 3.
    """
    rows = out.shape[0]
    for s in range(sym_lo, sym_hi):
        a = starts[s]
        b = starts[s + 1]
        if b - a <= skip:
            continue
        values = group_values(group, p0, p1, p2, high[a:b], low[a:b], close[a:b], volume[a:b])
        o0 = out_starts[s] - skip
        for r in range(rows):
            src = values[r]
            dst = out[r]
            for i in range(skip, b - a):
                dst[o0 + i] = src[i]
