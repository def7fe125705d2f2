"""Numba kernels of the drift engine: plain arrays in, plain numbers out.

The Python wrappers in :mod:`quantcli.monitoring.drift_stats` validate the input; these kernels
assume what the wrappers guarantee (sorted, finite, non-empty float64 arrays).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np


@nb.njit(cache=True, nogil=True)
def ks_extremes_sorted(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """``(max(F_a - F_b), max(F_b - F_a))`` over every distinct value of ``a`` and ``b``.

    One merge walk over the two sorted samples, O(n1 + n2). The empirical CDFs are evaluated
    right-continuously (all ties consumed) at every observed value, and each difference is
    computed as ``i / n1 - j / n2`` in float64, exactly as ``scipy.stats.ks_2samp`` computes
    ``searchsorted(side="right") / n`` on the concatenated sample, so the result is bit-identical.
    """
    n1 = a.shape[0]
    n2 = b.shape[0]
    i = 0
    j = 0
    d_max = 0.0
    d_min = 0.0
    while i < n1 or j < n2:
        v = a[i] if j >= n2 or (i < n1 and a[i] <= b[j]) else b[j]
        while i < n1 and a[i] <= v:
            i += 1
        while j < n2 and b[j] <= v:
            j += 1
        diff = i / n1 - j / n2
        if diff > d_max:
            d_max = diff
        if diff < d_min:
            d_min = diff
    return d_max, -d_min


_SIGN = np.uint64(1 << 63)
_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)
_DIGIT = np.uint64(0xFFFF)


@nb.njit(cache=True, nogil=True)
def radix_sort_finite(x: np.ndarray) -> None:
    """Sort finite float64 values in place: an LSD radix sort on 16-bit digits.

    The bits of a float map to unsigned keys in the same order (flip the sign bit of a positive
    value, every bit of a negative one), so four counting passes sort them, a pass whose digit
    all keys share skipped. Values equal to ``np.sort``'s, element by element (-0.0 before 0.0);
    on 1 M values several times faster than numpy's sort on the machines measured
    (docs/monitoring.md). NaN is not ordered here: callers pass finite values only.
    """
    n = x.shape[0]
    u = x.view(np.uint64)
    a = np.empty(n, np.uint64)
    counts = np.zeros((4, 1 << 16), np.int64)
    for i in range(n):
        k = u[i]
        k = (k ^ _ONES) if (k & _SIGN) else (k | _SIGN)
        a[i] = k
        counts[0, k & _DIGIT] += 1
        counts[1, (k >> np.uint64(16)) & _DIGIT] += 1
        counts[2, (k >> np.uint64(32)) & _DIGIT] += 1
        counts[3, k >> np.uint64(48)] += 1
    b = np.empty(n, np.uint64)
    for p in range(4):
        c = counts[p]
        if c.max() == n:  # one digit value for every key: the pass would not move anything
            continue
        total = 0
        for d in range(1 << 16):
            t = c[d]
            c[d] = total
            total += t
        shift = np.uint64(16 * p)
        for i in range(n):
            k = a[i]
            d = (k >> shift) & _DIGIT
            b[c[d]] = k
            c[d] += 1
        a, b = b, a
    for i in range(n):
        k = a[i]
        u[i] = (k ^ _SIGN) if (k & _SIGN) else (k ^ _ONES)


@nb.njit(cache=True, nogil=True)
def finite_copy(values: np.ndarray) -> tuple[np.ndarray, int, int]:
    """``(finite values, n_nan, n_inf)`` in one pass; the copy is the caller's to sort in place."""
    n = values.shape[0]
    out = np.empty(n, dtype=np.float64)
    k = 0
    n_nan = 0
    n_inf = 0
    for i in range(n):
        v = values[i]
        if np.isnan(v):
            n_nan += 1
        elif np.isinf(v):
            n_inf += 1
        else:
            out[k] = v
            k += 1
    return out[:k], n_nan, n_inf


@nb.njit(cache=True, nogil=True)
def mean_std(sorted_values: np.ndarray) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1), two passes; NaN where undefined."""
    n = sorted_values.shape[0]
    if n == 0:
        return np.nan, np.nan
    s = 0.0
    for i in range(n):
        s += sorted_values[i]
    mean = s / n
    if n < 2:
        return mean, np.nan
    ss = 0.0
    for i in range(n):
        d = sorted_values[i] - mean
        ss += d * d
    return mean, math.sqrt(ss / (n - 1))


@nb.njit(cache=True, nogil=True)
def smirnov_sf(n: int, e: float) -> float:
    """One-sided ``P(D+_n >= e)`` by the exact Birnbaum-Tingey sum, in log space.

    ``e * sum_{v=0}^{floor(n(1-e))} C(n, v) (e + v/n)^(v-1) (1 - e - v/n)^(n-v)``: the formula
    scipy's ``special.smirnov`` evaluates for ``n <= 1e6``, here in O(n) compiled steps.
    """
    vmax = int(n * (1.0 - e))  # floor: the product is positive
    lg_n1 = math.lgamma(n + 1.0)
    logs = np.empty(vmax + 1)
    top = -np.inf
    for v in range(vmax + 1):
        b = 1.0 - e - v / n
        if b <= 0.0:
            logs[v] = -np.inf
            continue
        lt = (
            lg_n1
            - math.lgamma(v + 1.0)
            - math.lgamma(n - v + 1.0)
            + (v - 1) * math.log(e + v / n)
            + (n - v) * math.log(b)
        )
        logs[v] = lt
        if lt > top:
            top = lt
    if top == -np.inf:
        return 0.0
    s = 0.0
    for v in range(vmax + 1):
        s += math.exp(logs[v] - top)
    return e * math.exp(top) * s
