"""DriftDetector end to end: verdicts, nulls, profiles, errors."""

from __future__ import annotations

import doctest

import numpy as np
import polars as pl
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from quantcli.errors import InputError
from quantcli.monitoring import drift as drift_module
from quantcli.monitoring import drift_stats
from quantcli.monitoring.drift import DriftDetector
from quantcli.monitoring.profile import BaselineProfile


def _frame(rng, n, shift=0.0, scale=1.0, k=4):
    return pl.DataFrame({f"f{i}": rng.normal(shift, scale, n) for i in range(k)})


def test_docstring_examples_run():
    for mod in (drift_module, drift_stats):
        failures, _ = doctest.testmod(mod, raise_on_error=False)
        assert failures == 0


def test_same_distribution_large_n_no_drift():
    rng = np.random.default_rng(11)
    res = DriftDetector().detect_feature_drift(_frame(rng, 200_000), _frame(rng, 200_000))
    assert res.drifted_features == []
    assert not res.drift_detected
    for f in res.features:
        assert f.psi < 0.001
        assert f.js_divergence < 0.001
        assert f.psi_band == "none"


def test_shifted_distribution_drifts_and_is_worst_first():
    rng = np.random.default_rng(12)
    base = _frame(rng, 100_000)
    cur = _frame(rng, 100_000).with_columns(
        pl.col("f2") + 1.0,  # large shift: significant
        pl.col("f0") + 0.4,  # moderate PSI
    )
    res = DriftDetector().detect_feature_drift(base, cur)
    assert [f.feature for f in res.features][:2] == ["f2", "f0"]
    assert set(res.drifted_features) == {"f0", "f2"}
    assert res.significant_features == ["f2"]
    worst = res.features[0]
    assert worst.psi_band == "significant" and worst.ks_pvalue < 1e-100
    assert res.features[1].psi_band == "moderate"


def test_every_statistic_matches_the_reference_loop():
    rng = np.random.default_rng(13)
    base = _frame(rng, 30_000, k=2)
    cur = _frame(rng, 20_000, shift=0.05, k=2)
    res = DriftDetector().detect_feature_drift(base, cur)
    for f in res.features:
        b = base[f.feature].to_numpy()
        c = cur[f.feature].to_numpy()
        edges = np.quantile(b, np.arange(1, 10) / 10)
        bc = np.bincount(np.digitize(b, edges, right=True), minlength=10) / b.size
        cc = np.bincount(np.digitize(c, edges, right=True), minlength=10) / c.size
        bf, cf = np.maximum(bc, 1e-4), np.maximum(cc, 1e-4)
        assert f.psi == pytest.approx(np.sum((cf - bf) * np.log(cf / bf)), rel=1e-12)
        assert f.js_divergence == pytest.approx(jensenshannon(bc, cc, base=2) ** 2, abs=1e-12)
        ref = stats.ks_2samp(b, c)
        assert abs(f.ks_statistic - ref.statistic) <= 1e-9
        assert abs(f.ks_pvalue - ref.pvalue) <= 1e-9
        assert f.baseline["mean"] == pytest.approx(b.mean(), rel=1e-12)
        assert f.current["std"] == pytest.approx(c.std(ddof=1), rel=1e-12)


def test_nulls_nans_and_infinities_are_counted_not_dropped_silently():
    base = pl.DataFrame({"x": [float(i) for i in range(100)]})
    cur = pl.DataFrame({"x": [None, float("nan"), float("inf"), float("-inf"), *range(96)]})
    f = DriftDetector().detect_feature_drift(base, cur).features[0]
    assert f.current == {
        "n_rows": 100,
        "n_finite": 96,
        "n_null": 1,
        "n_nan": 1,
        "n_inf": 2,
        "mean": pytest.approx(47.5),
        "std": pytest.approx(np.arange(96).std(ddof=1)),
    }
    assert f.baseline["n_null"] == 0 and f.baseline["n_finite"] == 100
    # the tests run on the 96 finite values
    assert sum(f.current_counts) == 96


def test_profile_roundtrip_gives_identical_result(tmp_path):
    rng = np.random.default_rng(14)
    base = _frame(rng, 50_000).with_columns(
        pl.when(pl.int_range(pl.len()) % 7 == 0).then(None).otherwise(pl.col("f1")).alias("f1")
    )
    cur = _frame(rng, 40_000, shift=0.2)
    det = DriftDetector()
    direct = det.detect_feature_drift(base, cur, timestamp="t")
    path = det.profile(base, source="2017").save(tmp_path / "base.profile")
    assert path == tmp_path / "base.profile"  # no .npz appended
    loaded = BaselineProfile.load(path)
    assert loaded.features["f1"].summary.n_null == 50_000 // 7 + 1
    via_profile = det.detect_feature_drift(loaded, cur, timestamp="t")
    a, b = direct.to_dict(), via_profile.to_dict()
    assert a.pop("baseline_source") == "frame" and b.pop("baseline_source") == "2017"
    assert a == b


def test_feature_selection_and_key_columns_skipped():
    rng = np.random.default_rng(15)
    base = _frame(rng, 1000).with_columns(pl.lit("AAA").alias("symbol"))
    cur = _frame(rng, 1000).with_columns(pl.lit("AAA").alias("symbol"))
    assert {f.feature for f in DriftDetector().detect_feature_drift(base, cur).features} == {
        "f0",
        "f1",
        "f2",
        "f3",
    }
    res = DriftDetector().detect_feature_drift(base, cur, features=["f3"])
    assert [f.feature for f in res.features] == ["f3"]


def test_errors_name_the_problem(tmp_path):
    rng = np.random.default_rng(16)
    base = _frame(rng, 100)
    with pytest.raises(InputError, match="current window lacks feature"):
        DriftDetector().detect_feature_drift(base, base.drop("f1"))
    with pytest.raises(InputError, match=r"feature 'f0': the current window has no finite"):
        DriftDetector().detect_feature_drift(
            base, base.with_columns(pl.lit(None, dtype=pl.Float64).alias("f0"))
        )
    with pytest.raises(InputError, match=r"psi_threshold=-1"):
        DriftDetector(psi_threshold=-1)
    with pytest.raises(InputError, match="ks_threshold"):
        DriftDetector(ks_threshold=2)
    bad = tmp_path / "bad.npz"
    bad.write_text("not a zip")
    with pytest.raises(InputError, match="not a readable drift profile"):
        BaselineProfile.load(bad)
    with pytest.raises(InputError, match="profile file not found"):
        BaselineProfile.load(tmp_path / "missing.npz")
