"""The drift statistics against scipy/numpy oracles and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats
from scipy.spatial.distance import jensenshannon

from quantcli.monitoring._drift_nb import ks_extremes_sorted, radix_sort_finite
from quantcli.monitoring.drift_stats import (
    bin_counts,
    decile_edges,
    js_divergence,
    ks_2samp_sorted,
    kstwo_sf,
    psi,
    psi_band,
    shares,
)


def test_psi_hand_computed_two_bins():
    # (0.6 - 0.5) ln(0.6/0.5) + (0.4 - 0.5) ln(0.4/0.5) = 0.1 ln 1.2 + 0.1 ln 1.25
    expected = 0.1 * math.log(1.2) + 0.1 * math.log(1.25)
    assert psi(np.array([0.5, 0.5]), np.array([0.6, 0.4])) == pytest.approx(expected, abs=1e-15)


def test_psi_empty_bins_are_floored_at_1e_4_without_renormalising():
    b = np.array([0.5, 0.5, 0.0])
    c = np.array([0.0, 0.5, 0.5])
    # bin 1: (1e-4 - 0.5) ln(1e-4 / 0.5); bin 2: 0; bin 3: (0.5 - 1e-4) ln(0.5 / 1e-4)
    expected = (1e-4 - 0.5) * math.log(1e-4 / 0.5) + (0.5 - 1e-4) * math.log(0.5 / 1e-4)
    assert psi(b, c) == pytest.approx(expected, rel=1e-14)
    assert psi(b, c) == pytest.approx(2 * 0.4999 * math.log(5000), rel=1e-14)


def test_psi_both_empty_bin_contributes_zero():
    assert psi(np.array([0.5, 0.5, 0.0]), np.array([0.5, 0.5, 0.0])) == 0.0


def test_psi_uses_natural_log():
    # ten equal bins shifted: each term is (c - b) ln(c / b); log10 would give 2.3x less
    b = np.full(10, 0.1)
    c = np.array([0.2, 0.0] + [0.1] * 8)
    expected = 0.1 * math.log(2.0) + (1e-4 - 0.1) * math.log(1e-4 / 0.1)
    assert psi(b, c) == pytest.approx(expected, rel=1e-14)


@pytest.mark.parametrize(
    ("value", "band"),
    [
        (0.0, "none"),
        (0.0999, "none"),
        (0.1, "moderate"),
        (0.2499, "moderate"),
        (0.25, "significant"),
    ],
)
def test_psi_bands(value, band):
    assert psi_band(value) == band


def test_decile_edges_equal_numpy_quantiles():
    x = np.sort(np.random.default_rng(3).standard_normal(1001))
    np.testing.assert_array_equal(decile_edges(x), np.quantile(x, np.arange(1, 10) / 10))
    # 0..100: deciles are exactly 10, 20, ..., 90
    np.testing.assert_array_equal(decile_edges(np.arange(101.0)), np.arange(10.0, 100.0, 10.0))


def test_bin_counts_right_closed_outer_open():
    edges = np.arange(10.0, 100.0, 10.0)
    values = np.array([-1e9, 10.0, 10.5, 20.0, 90.0, 90.0001, 1e9])
    # (-inf,10]: -1e9, 10 | (10,20]: 10.5, 20 | ... (80,90]: 90 | (90, inf): 90.0001, 1e9
    assert bin_counts(values, edges).tolist() == [2, 2, 0, 0, 0, 0, 0, 0, 1, 2]


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=200), st.integers(0, 2**31))
def test_bin_counts_equal_digitize(values, seed):
    x = np.sort(np.array(values))
    base = np.sort(np.random.default_rng(seed).standard_normal(50) * 100)
    edges = decile_edges(base)
    expected = np.bincount(np.digitize(x, edges, right=True), minlength=10)
    assert bin_counts(x, edges).tolist() == expected.tolist()


def test_psi_on_binned_samples_hand_computed():
    base = np.sort(np.arange(100.0))  # deciles at 9.9, 19.8, ..., 89.1: 10 values per bin
    edges = decile_edges(base)
    assert bin_counts(base, edges).tolist() == [10] * 10
    cur = np.sort(np.concatenate([np.full(50, 5.0), np.full(50, 95.0)]))  # only the outer bins
    c = shares(bin_counts(cur, edges))
    assert c.tolist() == [0.5] + [0.0] * 8 + [0.5]
    expected = 2 * (0.5 - 0.1) * math.log(5.0) + 8 * (1e-4 - 0.1) * math.log(1e-3)
    assert psi(shares(bin_counts(base, edges)), c) == pytest.approx(expected, rel=1e-14)


# Normal floats only: with a subnormal share such as 5e-324 the midpoint (p + q) / 2 underflows
# to 0 and the oracle itself breaks (scipy's jensenshannon returns inf for [0, 0, 1] vs
# [0, 5e-324, 1]); a normal float >= 2.2e-308 out of a sum <= 1,200 keeps every midpoint > 0.
@given(
    st.lists(st.floats(0, 100, allow_subnormal=False), min_size=2, max_size=12),
    st.lists(st.floats(0, 100, allow_subnormal=False), min_size=2, max_size=12),
)
def test_js_divergence_is_scipy_distance_squared_base_2(p, q):
    p, q = np.array(p[: min(len(p), len(q))]), np.array(q[: min(len(p), len(q))])
    if p.sum() == 0 or q.sum() == 0:
        return
    expected = jensenshannon(p, q, base=2) ** 2
    assert js_divergence(p, q) == pytest.approx(expected, abs=1e-12)
    assert 0.0 <= js_divergence(p, q) <= 1.0


@pytest.mark.parametrize(
    ("p", "q", "expected"),
    [
        ([0.0, 0.0, 1.0], [0.0, 5e-324, 1.0], 0.0),  # scipy's jensenshannon gives inf here
        ([5e-324, 1.0], [0.0, 1.0], 0.0),
        ([5e-324, 0.5, 0.5], [0.0, 1.0, 0.0], jensenshannon([0.5, 0.5], [1.0, 0.0], base=2) ** 2),
    ],
)
def test_js_divergence_with_a_subnormal_share_is_finite_and_exact(p, q, expected):
    """A subnormal share beside a zero: its midpoint underflows to 0; the divergence stays the
    one of the normal shares (the subnormal's true contribution is below 1e-323 bits)."""
    got = js_divergence(np.array(p), np.array(q))
    assert np.isfinite(got)
    assert got == pytest.approx(expected, abs=1e-15)


def test_js_divergence_disjoint_is_one_bit():
    assert js_divergence(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("n1", "n2", "shift", "rounding"),
    [
        (5, 7, 0.0, None),
        (100, 100, 0.3, None),
        (1000, 1300, 0.1, 1),  # heavy ties
        (10_000, 10_000, 0.02, None),  # the largest exact case
        (10_001, 9_000, 0.05, None),  # asymptotic from here
        (20_000, 15_000, 0.0, 2),
        (200_000, 150_000, 0.01, None),
    ],
)
def test_ks_equals_scipy_within_1e_9(n1, n2, shift, rounding):
    rng = np.random.default_rng(n1 + n2)
    a = rng.standard_normal(n1)
    b = rng.standard_normal(n2) + shift
    if rounding is not None:
        a, b = np.round(a, rounding), np.round(b, rounding)
    ref = stats.ks_2samp(a, b)
    d, p = ks_2samp_sorted(np.sort(a), np.sort(b))
    assert abs(d - ref.statistic) <= 1e-9
    assert abs(p - ref.pvalue) <= 1e-9
    assert d == ref.statistic  # same float operations: bit-identical


@given(
    st.lists(st.integers(-5, 5), min_size=2, max_size=60),
    st.lists(st.integers(-5, 5), min_size=2, max_size=60),
)
def test_ks_merge_walk_equals_scipy_statistic_with_ties(a, b):
    # min_size=2: scipy's asymptotic branch divides by zero for n1 = n2 = 1 (round(0.5) = 0)
    a = np.sort(np.array(a, dtype=np.float64))
    b = np.sort(np.array(b, dtype=np.float64))
    d_plus, d_minus = ks_extremes_sorted(a, b)
    assert max(d_plus, d_minus) == stats.ks_2samp(a, b, method="asymp").statistic


# scipy's slow branch: n > 140, 2.2 <= n d^2 < 370 and d < 0.5 (so n d^2 < n / 4)
_BRANCH = [
    (n, nxsq)
    for n in (141, 1_000, 25_000)
    for nxsq in (2.2, 2.5, 4.0, 8.0, 20.0, 100.0, 369.0)
    if nxsq < n / 4
]


@pytest.mark.parametrize(("n", "nxsq"), _BRANCH)
def test_kstwo_sf_compiled_branch_equals_scipy(n, nxsq):
    d = math.sqrt(nxsq / n)
    assert abs(kstwo_sf(d, n) - stats.kstwo.sf(d, n)) <= 1e-9
    # relative agreement too, where the p-value is not vanishing
    assert kstwo_sf(d, n) == pytest.approx(stats.kstwo.sf(d, n), rel=1e-8, abs=1e-300)


@pytest.mark.parametrize(("n", "d"), [(10, 0.3), (140, 0.2), (5_000, 0.001), (2_000_000, 0.0012)])
def test_kstwo_sf_other_branches_delegate_to_scipy(n, d):
    assert kstwo_sf(d, n) == stats.kstwo.sf(d, n)


@given(
    st.lists(
        st.floats(allow_nan=False, allow_infinity=False, width=64)
        | st.sampled_from([0.0, -0.0, 5e-324, -5e-324, 1.7976931348623157e308, -2.2e-308]),
        max_size=300,
    )
)
def test_radix_sort_equals_numpy_sort_on_any_finite_floats(values):
    x = np.array(values, dtype=np.float64)
    got = x.copy()
    radix_sort_finite(got)
    assert np.array_equal(got, np.sort(x))  # -0.0 == 0.0; every other value bit for bit
    assert sorted(got.view(np.int64).tolist()) == sorted(x.view(np.int64).tolist())  # a permutation
    signed = np.signbit(got) & (got == 0)
    assert not np.any(signed[1:] & ~signed[:-1] & (got[:-1] == 0))  # -0.0 before 0.0
    # numpy's sort, as sort_finite uses it, gives the radix sort's bytes
    from quantcli.monitoring.profile import sort_finite

    mine = x.copy()
    sort_finite(mine)
    assert mine.tobytes() == got.tobytes()


@pytest.mark.parametrize("radix", [True, False], ids=["radix", "numpy"])
def test_large_columns_sort_to_the_same_bytes_whichever_sort_is_faster(radix, monkeypatch):
    from quantcli.monitoring import profile
    from quantcli.monitoring.profile import RADIX_MIN_SIZE, summarize_column

    rng = np.random.default_rng(5)
    x = np.concatenate([rng.standard_normal(RADIX_MIN_SIZE), rng.integers(-3, 3, 999) * 1.0])
    x[::97] = np.nan
    x[1::89] = -0.0
    monkeypatch.setattr(profile, "radix_is_faster", lambda: radix)
    summary = summarize_column("f", x, 0)
    finite = x[np.isfinite(x)]
    assert np.array_equal(summary.sorted_values, np.sort(finite))
    canonical = finite.copy()
    radix_sort_finite(canonical)
    assert summary.sorted_values.tobytes() == canonical.tobytes()
