"""Stateful one-bar steps shared by the kernels: TA-Lib's running sums, variance and EMA.

Each step reads and updates a slice of a kernel's flat ``float64`` state vector at offset ``o``
and takes the index ``j`` of the value among the values fed to it so far (0 for the first).
The arithmetic is TA-Lib's, operation for operation and in the same order (running sums that
add the new value and subtract the trailing one, Wilder updates written
``(prev * (n - 1) + x) / n``, fused multiply-adds where TA-Lib's build contracts), so a kernel
built from these steps is bit-identical to TA-Lib whether it runs over all bars at once or
continues from a stored state.

TA-Lib's zero conventions are kept: a variance below 1e-8 gives a standard deviation of 0
(``TA_IS_ZERO_OR_NEG``); RSI, +DI, -DI and DX are 0 when their denominator is within 1e-8 of 0
(``TA_IS_ZERO``).
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit
from numba.core import types
from numba.extending import intrinsic

ZERO = 1e-8  # TA-Lib's TA_IS_ZERO / TA_IS_ZERO_OR_NEG threshold
NAN = math.nan


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


@njit(cache=True, nogil=True)
def is_zero(v):
    """TA-Lib's TA_IS_ZERO: within 1e-8 of zero."""
    return -ZERO < v < ZERO


# --- SMA: state [total, ring(n)] ------------------------------------------------------------
def sma_size(n: int) -> int:
    return 1 + n


@njit(cache=True, nogil=True)
def sma_push(st, o, n, j, x):
    """TA_INT_SMA: add ``x`` (value ``j``); the mean of the last ``n`` values once ``j >= n-1``
    (NaN before). The trailing value is subtracted after the mean is taken, as TA-Lib does."""
    slot = j % n  # one integer division a value: it costs more than the arithmetic
    st[o] += x
    st[o + 1 + slot] = x
    if j < n - 1:
        return NAN
    tmp = st[o]
    slot = slot + 1 if slot + 1 < n else 0
    st[o] -= st[o + 1 + slot]  # value j - n + 1, the one leaving the window
    return tmp / n


# --- variance: state [shift, s1, s2, countdown, ring(n)] ------------------------------------
def var_size(n: int) -> int:
    return 4 + n


@njit(cache=True, nogil=True)
def var_push(st, o, n, j, x):
    """TA_VAR(n) (population), cancellation-free as TA-Lib >= 0.7 computes it; NaN before the
    first full window.

    Running sums of deviations from a shift ``K`` (the window's first value), so
    ``var = sum((x-K)^2)/n - (sum(x-K)/n)^2`` never subtracts two ~mean^2 quantities. The shift
    is re-anchored on the window mean by a fresh two-pass sum (over the ring buffer) when the
    variance falls below 1e-6 of the mean squared deviation, when the value leaving the window
    dwarfs the sum, or every ``32 n`` bars; after a re-anchor a variance below 1e-12 of that
    scale is 0.
    """
    ring = o + 4
    st[ring + j % n] = x
    if j == 0:
        st[o] = x
    shift = st[o]
    d = x - shift
    if j < n - 1:
        st[o + 1] += d
        st[o + 2] += d * d
        return NAN
    if j == n - 1:
        st[o + 3] = 32 * n
    inv_n = 1.0 / n
    s1 = st[o + 1] + d
    s2 = st[o + 2] + d * d
    m1 = s1 * inv_n
    var = s2 * inv_n - m1 * m1
    d = st[ring + (j + 1) % n] - shift  # value j - n + 1 leaves the window
    s1 -= d
    d *= d
    s2 -= d
    countdown = st[o + 3] - 1.0
    if var < 0.000001 * (s2 * inv_n) or d > 1000000.0 * s2 or countdown <= 0:
        countdown = 32 * n
        # two passes over the window j - n + 1 .. j, oldest first
        total = 0.0
        for q in range(j - n + 1, j + 1):
            total += st[ring + q % n]
        shift = total * inv_n
        s1 = 0.0
        s2 = 0.0
        for q in range(j - n + 1, j + 1):
            e = st[ring + q % n] - shift
            s1 += e
            s2 += e * e
        m1 = s1 * inv_n
        var = s2 * inv_n - m1 * m1
        if var < 0.000000000001 * (s2 * inv_n):
            var = 0.0
        d = st[ring + (j + 1) % n] - shift
        s1 -= d
        s2 -= d * d
    st[o] = shift
    st[o + 1] = s1
    st[o + 2] = s2
    st[o + 3] = countdown
    return var


@njit(cache=True, nogil=True)
def std_push(st, o, n, j, x):
    """TA_STDDEV(n, nbdev=1): the square root of :func:`var_push` (0 for a zero variance)."""
    v = var_push(st, o, n, j, x)
    if v != v:
        return v
    return np.sqrt(v) if v != 0.0 else 0.0


# --- EMA: state [total, prev] ---------------------------------------------------------------
EMA_SIZE = 2


@njit(cache=True, nogil=True)
def ema_push(st, o, n, j, x, seed_from):
    """TA_EMA(n), k = 2 / (n + 1), seeded with the mean of values ``seed_from .. seed_from+n-1``
    (``seed_from`` is 0 for a plain EMA; MACD starts its fast seed late so that it ends on the
    slow one's bar). The step ``ema = (x - ema) * k + ema`` is one fused multiply-add, as in
    TA-Lib's build. NaN before the seed."""
    seed_end = seed_from + n - 1
    if j < seed_end:
        if j >= seed_from:
            st[o] += x
        return NAN
    if j == seed_end:
        st[o] += x
        st[o + 1] = st[o] / n
        return st[o + 1]
    prev = fma(x - st[o + 1], 2.0 / (n + 1), st[o + 1])
    st[o + 1] = prev
    return prev


@njit(cache=True, nogil=True)
def true_range(high, low, prev_close):
    out = high - low
    t = abs(high - prev_close)
    if t > out:
        out = t
    t = abs(low - prev_close)
    if t > out:
        out = t
    return out


# --- whole-segment forms: the same arithmetic as the pushes above, state held in locals ------
# A kernel that feeds every bar of a call through one of these keeps its running sums in
# registers for the whole loop; the pushes load and store them on every value, since the state
# array may alias the kernel's other arrays.
@njit(cache=True, nogil=True)
def sma_run(x, st, o, n, j, out):
    """:func:`sma_push` of ``x[0], x[1], ...`` (values ``j, j + 1, ...``) into ``out``."""
    total = st[o]
    ring = st[o + 1 : o + 1 + n]
    pos = j % n  # the slot of value j
    for i in range(x.shape[0]):
        v = x[i]
        total += v
        ring[pos] = v
        pos += 1
        if pos == n:
            pos = 0
        if j + i < n - 1:
            out[i] = NAN
        else:
            tmp = total
            total -= ring[pos]  # value j + i - n + 1, the one leaving the window
            out[i] = tmp / n
    st[o] = total


@njit(cache=True, nogil=True)
def var_run(x, st, o, n, j, out):
    """:func:`var_push` of ``x[0], x[1], ...`` (values ``j, j + 1, ...``) into ``out``."""
    shift = st[o]
    s1 = st[o + 1]
    s2 = st[o + 2]
    countdown = st[o + 3]
    ring = st[o + 4 : o + 4 + n]
    inv_n = 1.0 / n
    pos = j % n
    for i in range(x.shape[0]):
        jj = j + i
        v = x[i]
        ring[pos] = v
        pos += 1
        if pos == n:
            pos = 0  # now the slot of value jj - n + 1, the oldest of the window
        if jj == 0:
            shift = v
        d = v - shift
        if jj < n - 1:
            s1 += d
            s2 += d * d
            out[i] = NAN
            continue
        if jj == n - 1:
            countdown = 32 * n
        s1 += d
        s2 += d * d
        m1 = s1 * inv_n
        var = s2 * inv_n - m1 * m1
        d = ring[pos] - shift
        s1 -= d
        d *= d
        s2 -= d
        countdown -= 1.0
        if var < 0.000001 * (s2 * inv_n) or d > 1000000.0 * s2 or countdown <= 0:
            countdown = 32 * n
            total = 0.0
            q = pos
            for _ in range(n):
                total += ring[q]
                q += 1
                if q == n:
                    q = 0
            shift = total * inv_n
            s1 = 0.0
            s2 = 0.0
            q = pos
            for _ in range(n):
                e = ring[q] - shift
                s1 += e
                s2 += e * e
                q += 1
                if q == n:
                    q = 0
            m1 = s1 * inv_n
            var = s2 * inv_n - m1 * m1
            if var < 0.000000000001 * (s2 * inv_n):
                var = 0.0
            d = ring[pos] - shift
            s1 -= d
            s2 -= d * d
        out[i] = var
    st[o] = shift
    st[o + 1] = s1
    st[o + 2] = s2
    st[o + 3] = countdown


@njit(cache=True, nogil=True)
def sma_var_run(x, st, o_sma, o_var, n, j, mean, var_out):
    """:func:`sma_run` (state at ``o_sma``) and :func:`var_run` (state at ``o_var``) of the same
    values in one pass: Bollinger bands and the volume z-score read both of one window."""
    total = st[o_sma]
    ring_m = st[o_sma + 1 : o_sma + 1 + n]
    shift = st[o_var]
    s1 = st[o_var + 1]
    s2 = st[o_var + 2]
    countdown = st[o_var + 3]
    ring = st[o_var + 4 : o_var + 4 + n]
    inv_n = 1.0 / n
    pos = j % n
    for i in range(x.shape[0]):
        jj = j + i
        v = x[i]
        total += v
        ring_m[pos] = v
        ring[pos] = v
        pos += 1
        if pos == n:
            pos = 0  # now the slot of value jj - n + 1, the oldest of the window
        if jj == 0:
            shift = v
        d = v - shift
        if jj < n - 1:
            s1 += d
            s2 += d * d
            mean[i] = NAN
            var_out[i] = NAN
            continue
        tmp = total
        total -= ring_m[pos]
        mean[i] = tmp / n
        if jj == n - 1:
            countdown = 32 * n
        s1 += d
        s2 += d * d
        m1 = s1 * inv_n
        var = s2 * inv_n - m1 * m1
        d = ring[pos] - shift
        s1 -= d
        d *= d
        s2 -= d
        countdown -= 1.0
        if var < 0.000001 * (s2 * inv_n) or d > 1000000.0 * s2 or countdown <= 0:
            countdown = 32 * n
            acc = 0.0
            q = pos
            for _ in range(n):
                acc += ring[q]
                q += 1
                if q == n:
                    q = 0
            shift = acc * inv_n
            s1 = 0.0
            s2 = 0.0
            q = pos
            for _ in range(n):
                e = ring[q] - shift
                s1 += e
                s2 += e * e
                q += 1
                if q == n:
                    q = 0
            m1 = s1 * inv_n
            var = s2 * inv_n - m1 * m1
            if var < 0.000000000001 * (s2 * inv_n):
                var = 0.0
            d = ring[pos] - shift
            s1 -= d
            s2 -= d * d
        var_out[i] = var
    st[o_sma] = total
    st[o_var] = shift
    st[o_var + 1] = s1
    st[o_var + 2] = s2
    st[o_var + 3] = countdown


@njit(cache=True, nogil=True)
def std_of(v):
    """TA_STDDEV from a variance (NaN stays NaN, 0 stays 0)."""
    if v != v or v == 0.0:
        return v if v != v else 0.0
    return np.sqrt(v)


@njit(cache=True, nogil=True)
def ema_run(x, st, o, n, j, seed_from, out):
    """:func:`ema_push` of ``x[0], x[1], ...`` (values ``j, j + 1, ...``) into ``out``."""
    total = st[o]
    prev = st[o + 1]
    seed_end = seed_from + n - 1
    k = 2.0 / (n + 1)
    for i in range(x.shape[0]):
        jj = j + i
        v = x[i]
        if jj < seed_end:
            if jj >= seed_from:
                total += v
            out[i] = NAN
        elif jj == seed_end:
            total += v
            prev = total / n
            out[i] = prev
        else:
            prev = fma(v - prev, k, prev)
            out[i] = prev
    st[o] = total
    st[o + 1] = prev
