"""Numba kernels of the drift engine: plain arrays in, plain numbers out.

The Python wrappers in :mod:`quantcli.monitoring.drift_stats` validate the input; these kernels
assume what the wrappers guarantee (sorted, finite, non-empty float64 arrays).
"""

from __future__ import annotations

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
