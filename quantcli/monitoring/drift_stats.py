"""The three drift statistics and their conventions (PSI, two-sample KS, Jensen-Shannon).

Peers disagree on every one of these choices, so quantcli fixes them here and everywhere it
reports a number:

* **Bins** -- cut at the baseline's deciles: the 9 interior edges are
  ``numpy.quantile(baseline, [0.1, ..., 0.9])`` (numpy's default ``linear`` method), giving 10
  bins ``(-inf, e1], (e1, e2], ..., (e9, +inf)``: right-closed, the outer two open-ended, so every
  current value falls in some bin. Ties in the baseline may make edges coincide; the bins between
  equal edges are then empty in both windows and contribute exactly 0 to PSI and JS.
* **PSI** -- ``sum_i (c_i - b_i) * ln(c_i / b_i)`` with ``b_i``/``c_i`` the baseline/current bin
  shares, each floored at ``1e-4`` (no renormalisation after the floor), natural log.
  Bands: ``< 0.1`` none, ``0.1 <= PSI < 0.25`` moderate, ``>= 0.25`` significant.
* **KS** -- the two-sample statistic ``D = sup |F_b - F_c|`` and the two-sided p-value exactly as
  ``scipy.stats.ks_2samp(method="auto")`` computes them: exact when both samples have at most
  10 000 values, else Smirnov's asymptotic ``kstwo.sf(D, round(n1 n2 / (n1 + n2)))``.
* **Jensen-Shannon divergence**, base 2 (so in ``[0, 1]``), over the same 10 bins with the raw
  (unfloored) shares: ``JSD = KL(b || m) / 2 + KL(c || m) / 2``, ``m = (b + c) / 2``. This is the
  square of ``scipy.spatial.distance.jensenshannon(b, c, base=2)``, which returns the *distance*.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from quantcli.errors import InputError
from quantcli.monitoring._drift_nb import ks_extremes_sorted, smirnov_sf

#: The quantiles that cut the 10 bins (``np.arange(1, 10) / 10``, exactly).
DECILES = np.arange(1, 10) / 10
#: Floor on a bin share before PSI's log ratio (an empty bin would otherwise give infinity).
PSI_FLOOR = 1e-4
#: PSI band limits: below the first, no drift; below the second, moderate; else significant.
PSI_MODERATE = 0.1
PSI_SIGNIFICANT = 0.25
#: scipy's ``ks_2samp(method="auto")`` is exact up to this many values in the larger sample.
KS_MAX_EXACT_N = 10_000


def decile_edges(sorted_baseline: np.ndarray) -> np.ndarray:
    """The 9 interior bin edges: the baseline's deciles (numpy ``linear`` quantiles).

    Parameters
    ----------
    sorted_baseline
        Finite baseline values, sorted ascending, at least one.
    """
    if sorted_baseline.size == 0:
        raise InputError("decile_edges: the baseline sample is empty")
    # np.quantile on a sorted array: introselect is linear on sorted input, and calling numpy
    # itself keeps the edges bit-identical to the straightforward reference.
    return np.quantile(sorted_baseline, DECILES)


def bin_counts(sorted_values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of ``sorted_values`` in the bins ``(-inf, e1], (e1, e2], ..., (e_k, +inf)``.

    O(k log n) on a sorted sample: the count at or below each edge is a binary search.
    Equal to ``np.bincount(np.digitize(x, edges, right=True), minlength=k + 1)``.
    """
    at_or_below = np.searchsorted(sorted_values, edges, side="right")
    return np.diff(np.concatenate(([0], at_or_below, [sorted_values.size]))).astype(np.int64)


def shares(counts: np.ndarray) -> np.ndarray:
    """Bin counts as shares of their total (all zeros if the total is zero)."""
    total = counts.sum()
    return counts / total if total else np.zeros(len(counts), dtype=np.float64)


def psi(baseline_shares: np.ndarray, current_shares: np.ndarray, floor: float = PSI_FLOOR) -> float:
    """Population Stability Index, natural log, shares floored at ``floor`` (no renormalising).

    >>> round(psi(np.array([0.5, 0.5]), np.array([0.6, 0.4])), 6)
    0.040547
    """
    b = np.maximum(np.asarray(baseline_shares, dtype=np.float64), floor)
    c = np.maximum(np.asarray(current_shares, dtype=np.float64), floor)
    return float(np.sum((c - b) * np.log(c / b)))


def psi_band(value: float) -> str:
    """``"none"`` (< 0.1), ``"moderate"`` (0.1 to 0.25) or ``"significant"`` (>= 0.25)."""
    if value >= PSI_SIGNIFICANT:
        return "significant"
    if value >= PSI_MODERATE:
        return "moderate"
    return "none"


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence in bits (base 2, in ``[0, 1]``) of two share vectors.

    Both vectors are normalised to sum to 1 first (as scipy does); ``0 * log 0 = 0``.
    Equal to ``scipy.spatial.distance.jensenshannon(p, q, base=2) ** 2``.
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    p = p / p.sum()
    q = q / q.sum()
    m = (p + q) / 2.0

    def _kl_bits(x: np.ndarray) -> float:
        # m > 0 too: a subnormal share (5e-324) beside a zero halves to m = 0; its true
        # contribution x * log2(2) = x is below 1e-323 bits, so dropping it is exact in float64
        nz = (x > 0) & (m > 0)
        return float(np.sum(x[nz] * np.log2(x[nz] / m[nz])))

    # Rounding can leave a tiny negative value for identical inputs; the divergence is >= 0.
    return max(0.0, (_kl_bits(p) + _kl_bits(q)) / 2.0)


def ks_2samp_sorted(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sided two-sample KS ``(statistic, p-value)`` of two sorted finite samples.

    Equal to ``scipy.stats.ks_2samp(a, b)`` (``method="auto"``, two-sided): the statistic comes
    from one O(n) merge walk (no re-sort, no searchsorted of the joint sample); the p-value is
    scipy's own -- the exact small-sample case delegates to scipy (cheap at n <= 10 000), the
    asymptotic case is ``scipy.stats.kstwo.sf(D, round(n1 n2 / (n1 + n2)))``.
    """
    n1, n2 = a.shape[0], b.shape[0]
    if n1 == 0 or n2 == 0:
        raise InputError(f"ks_2samp_sorted: empty sample (n1={n1}, n2={n2})")
    if max(n1, n2) <= KS_MAX_EXACT_N:
        from scipy import stats

        with warnings.catch_warnings():
            # scipy warns when its exact computation overflows and falls back to the asymptotic
            # p-value; the fallback is the documented behaviour we reproduce, not an error.
            warnings.simplefilter("ignore", RuntimeWarning)
            res = stats.ks_2samp(a, b)
        return float(res.statistic), float(res.pvalue)
    d_plus, d_minus = ks_extremes_sorted(a, b)
    d = d_minus if d_minus > d_plus else d_plus
    return float(d), ks_asymptotic_pvalue(d, n1, n2)


def ks_asymptotic_pvalue(d: float, n1: int, n2: int) -> float:
    """Smirnov's asymptotic two-sided p-value as scipy computes it: ``kstwo.sf(d, round(en))``."""
    m, n = sorted([float(n1), float(n2)], reverse=True)
    en = m * n / (m + n)
    prob = kstwo_sf(d, int(np.round(en)))
    return min(1.0, max(0.0, prob)) if math.isfinite(prob) else prob


#: scipy's ``special.smirnov`` sums exactly up to this n and switches to an approximation above.
SMIRNOV_EXACT_MAX_N = 1_000_000


def kstwo_sf(d: float, n: int) -> float:
    """``scipy.stats.kstwo.sf(d, n)``, with scipy's one slow branch compiled.

    For ``n > 140``, ``1 < n d < n - 1``, ``d < 0.5`` and ``2.2 <= n d^2 < 370`` scipy returns
    ``2 * special.smirnov(n, d)``, an exact O(n) sum that takes seconds at n = 500 000 (a two-sample
    test of 1 M vs 1 M values). The same sum runs here in Numba (see ``smirnov_sf``; agreement
    with scipy is tested within 1e-9). Every other case calls scipy itself.
    """
    if 140 < n <= SMIRNOV_EXACT_MAX_N and 0.0 < d < 0.5:
        t = n * d
        if 1.0 < t < n - 1 and 2.2 <= t * d < 370.0:
            return min(1.0, max(0.0, 2.0 * smirnov_sf(n, d)))
    from scipy import stats

    return float(stats.kstwo.sf(d, n))
