"""Drift engine throughput: DriftDetector vs a straightforward per-column scipy/numpy loop.

Both compute the same three tests (PSI on baseline deciles, scipy's two-sample KS, JS divergence
base 2) on the same frames in the same run; the benchmark asserts the results agree, the speed-up
ratio (goal: >= 5x) and an absolute budget. The full size (100 features x 1 M rows per window)
is marked ``slow``; the unmarked case keeps the CI smoke run short.
"""

from __future__ import annotations

import time

import numpy as np
import polars as pl
import pytest

from quantcli.monitoring.drift import DriftDetector


def _frames(n_features: int, n_rows: int, seed: int = 42) -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(seed)
    names = [f"f{i:03d}" for i in range(n_features)]
    base = rng.standard_normal((n_features, n_rows))
    cur = rng.standard_normal((n_features, n_rows))
    cur[::10] += 0.5  # every 10th feature drifts
    return (
        pl.from_numpy(base, schema=names, orient="col"),
        pl.from_numpy(cur, schema=names, orient="col"),
    )


def reference_loop(base: pl.DataFrame, cur: pl.DataFrame) -> dict[str, tuple[float, ...]]:
    """The straightforward peer: per column, numpy quantiles and digitize, scipy KS and JS."""
    from scipy import stats
    from scipy.spatial.distance import jensenshannon

    out = {}
    for name in base.columns:
        b = base[name].to_numpy()
        c = cur[name].to_numpy()
        b, c = b[np.isfinite(b)], c[np.isfinite(c)]
        edges = np.quantile(b, np.arange(1, 10) / 10)
        bs = np.bincount(np.digitize(b, edges, right=True), minlength=10) / b.size
        cs = np.bincount(np.digitize(c, edges, right=True), minlength=10) / c.size
        bf, cf = np.maximum(bs, 1e-4), np.maximum(cs, 1e-4)
        psi = float(np.sum((cf - bf) * np.log(cf / bf)))
        ks = stats.ks_2samp(b, c)
        jsd = float(jensenshannon(bs, cs, base=2) ** 2)
        out[name] = (psi, float(ks.statistic), float(ks.pvalue), jsd)
    return out


def _run(benchmark, n_features: int, n_rows: int, budget_s: float, min_ratio: float = 5.0) -> None:
    base, cur = _frames(n_features, n_rows)
    det = DriftDetector()
    det.detect_feature_drift(base.head(20_000), cur.head(20_000))  # compile the Numba kernel

    t0 = time.perf_counter()
    ref = reference_loop(base, cur)
    t_ref = time.perf_counter() - t0

    t0 = time.perf_counter()
    res = benchmark.pedantic(det.detect_feature_drift, args=(base, cur), rounds=1, iterations=1)
    t_ours = time.perf_counter() - t0

    for f in res.features:
        psi, d, p, jsd = ref[f.feature]
        assert f.psi == pytest.approx(psi, rel=1e-12, abs=1e-15)
        assert abs(f.ks_statistic - d) <= 1e-9 and abs(f.ks_pvalue - p) <= 1e-9
        assert f.js_divergence == pytest.approx(jsd, rel=1e-9, abs=1e-15)
    assert sorted(res.drifted_features) == [f"f{i:03d}" for i in range(0, n_features, 10)]

    ratio = t_ref / t_ours
    benchmark.extra_info.update(
        {"reference_loop_s": t_ref, "drift_detector_s": t_ours, "speedup": ratio}
    )
    print(
        f"\ndrift {n_features} features x {n_rows} rows (baseline and current): "
        f"DriftDetector {t_ours:.2f} s, per-column scipy/numpy loop {t_ref:.2f} s, "
        f"speed-up {ratio:.1f}x"
    )
    if not benchmark.disabled:  # budgets: `pytest benchmarks`; the smoke run checks it runs
        assert ratio >= min_ratio, f"speed-up {ratio:.1f}x below the {min_ratio}x goal"
        assert t_ours <= budget_s, f"{t_ours:.2f} s over the {budget_s} s budget"


def test_drift_10_features_x_200k(benchmark):
    # At 200 k rows scipy's searchsorted still fits in cache and the KS p-value (the same scipy
    # call on both sides) is a larger share, so the ratio is smaller than at full size; the 5x
    # goal is asserted at 1 M rows below.
    _run(benchmark, 10, 200_000, budget_s=3.0, min_ratio=2.0)


@pytest.mark.slow
def test_drift_100_features_x_1m(benchmark):
    # budget: ~10 s expected on an idle 2-core machine; measured 47.8 s (reference loop 326 s,
    # 6.8x) while other jobs kept the load average at 13, hence the generous bound
    _run(benchmark, 100, 1_000_000, budget_s=60.0)
