"""The CPCV backtest engine on synthetic frames: verdicts, path recombination, determinism."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from quantcli.backtest import CombinatorialPurgedCV
from quantcli.backtest._pnl_nb import simulate
from quantcli.backtest.engine import run_cpcv_backtest
from quantcli.errors import GateFailedError, InputError
from quantcli.models.estimators import LightGBMFactory

from .conftest import FEATURES

SMALL_LGBM = {"n_estimators": 20, "num_leaves": 7, "min_child_samples": 20}


def small_cv() -> CombinatorialPurgedCV:
    return CombinatorialPurgedCV(n_groups=6, n_test_groups=2, embargo_pct=0.01)


class NegatedModel:
    """LightGBM with its predictions negated: a strategy that trades against the signal."""

    def __init__(self):
        self.inner = LightGBMFactory(SMALL_LGBM, seed=1)({})

    def fit(self, X, y):
        self.inner.fit(X, y)
        return self

    def predict(self, X):
        return -self.inner.predict(X)


def negated_factory(params):
    return NegatedModel()


class TrainSizeModel:
    """Predicts its training-set size, plus 0.5 if a test row was among its training rows."""

    def fit(self, X, y):
        self.seen = set(X[:, 0].tolist())
        return self

    def predict(self, X):
        leaked = np.array([row in self.seen for row in X[:, 0].tolist()], dtype=float)
        return len(self.seen) + 0.5 * leaked


def train_size_factory(params):
    return TrainSizeModel()


def test_pnl_kernel_by_hand():
    # two symbols, rebalance at bars 0 and 2 (h = 2), 10 bps per unit traded, borrow 1e-3 a bar
    targets = np.array([[0.5, -0.5], [0.0, 0.0], [0.5, 0.5], [0.0, 0.0]])
    rebalance = np.array([True, False, True, False])
    r = np.array([[0.10, 0.10], [0.0, -0.10], [0.0, 0.0], [0.02, 0.0]])
    cost = np.full((4, 2), 1e-3)
    gross, net, tov, tc, bor = simulate(targets, rebalance, r, cost, 1e-3)
    # bar 0: trade 1.0 of capital, gross 0, cost 1e-3, borrow 0.5e-3
    assert (tov[0], tc[0], bor[0]) == pytest.approx((1.0, 1e-3, 5e-4))
    assert gross[0] == pytest.approx(0.0) and net[0] == pytest.approx(-1.5e-3)
    # bar 1: no trade; weights drifted to 0.55/g and -0.55/g, g = 1 + net[0]
    g = 1 - 1.5e-3
    assert tov[1] == 0.0 and bor[1] == pytest.approx(1e-3 * 0.55 / g)
    assert gross[1] == pytest.approx(-0.55 / g * -0.10)
    assert net[1] == pytest.approx(gross[1] - bor[1])
    # bar 2: from the drifted weights to (0.5, 0.5)
    g2 = 1 + net[1]
    w_pre = np.array([0.55 / g, -0.55 / g * 0.9]) / g2
    assert tov[2] == pytest.approx(np.abs([0.5, 0.5] - w_pre).sum())
    assert net[3] == pytest.approx(0.5 * 0.02 / (1 + net[2]))
    assert np.allclose(net, gross - tc - bor, rtol=0, atol=1e-15)


def test_planted_signal_passes_and_negated_signal_fails(signal_frame):
    good = run_cpcv_backtest(
        signal_frame,
        FEATURES,
        model_factory=LightGBMFactory(SMALL_LGBM, seed=1),
        cv=small_cv(),
    )
    assert good.passed, good.reasons
    assert good.metrics["sharpe"] > 1.2 and good.metrics["psr"] > 0.95
    assert good.metrics["ic_mean"] > 0.02
    assert good.path_returns.shape == (5, signal_frame["ts"].n_unique())
    assert good.metrics["dsr"] == pytest.approx(good.metrics["psr"])  # one trial: SR0 = 0
    bad = run_cpcv_backtest(signal_frame, FEATURES, model_factory=negated_factory, cv=small_cv())
    assert not bad.passed
    assert bad.metrics["sharpe"] < 0
    assert any(r.startswith("Sharpe ratio") for r in bad.reasons)
    assert any(r.startswith("PSR") for r in bad.reasons)
    # the one gate rule of every workflow result: a pass returns itself, a failure exits 1
    assert good.raise_if_failed() is good
    with pytest.raises(GateFailedError) as info:
        bad.raise_if_failed()
    assert info.value.exit_code == 1 and info.value.reasons == list(bad.reasons)
    assert info.value.result["verdict"]["reasons"] == list(bad.reasons)


def test_paths_take_each_group_from_the_right_split_without_leaks(signal_frame):
    frame = signal_frame.with_columns(pl.int_range(pl.len()).cast(pl.Float64).alias("row"))
    cv = small_cv()
    res = run_cpcv_backtest(frame, ["row"], model_factory=train_size_factory, cv=cv)
    n_train = {f["split"]: f["n_train"] for f in res.fold_metrics}
    groups = cv.sample_groups(frame, timestamps=frame["ts"])
    expected = np.array([[n_train[s] for s in path] for path in cv.path_splits()])
    # integer predictions: no test row was ever in its training set
    assert np.array_equal(res.path_predictions, expected[:, groups].astype(float))


def test_deterministic_and_same_with_an_executor_object(signal_frame, monkeypatch):
    from quantcli.scale import LocalExecutor

    kw = {"model_factory": LightGBMFactory(SMALL_LGBM, seed=7), "cv": small_cv()}
    calls = []
    # `executor="local"` fits on threads; the sequential reference must give the same bytes
    monkeypatch.setenv("QCLI_FIT_THREADS", "3")
    a = run_cpcv_backtest(signal_frame, FEATURES, progress=lambda d, t: calls.append((d, t)), **kw)
    b = run_cpcv_backtest(
        signal_frame.sample(fraction=1.0, shuffle=True, seed=1),  # row order must not matter
        FEATURES,
        executor=LocalExecutor(),
        **kw,
    )
    assert a.path_returns.tobytes() == b.path_returns.tobytes()
    assert a.to_dict() == b.to_dict()
    assert calls == [(i, 15) for i in range(1, 16)]


def test_grid_gives_dsr_and_pbo(signal_frame):
    grid = [{"num_leaves": 3}, {"num_leaves": 7}, {"learning_rate": 0.01}]
    res = run_cpcv_backtest(
        signal_frame,
        FEATURES,
        model_factory=LightGBMFactory({"n_estimators": 20, "min_child_samples": 20}, seed=1),
        cv=small_cv(),
        param_grid=grid,
    )
    d = res.to_dict()
    assert len(d["grid"]) == 3 and d["selected_params"] == grid[res.selected_config]
    assert [(f["split"], f["config"]) for f in d["fold_metrics"]] == [
        (s, c) for s in range(15) for c in range(3)
    ]
    best = max(g["sharpe_median"] for g in d["grid"])
    assert d["grid"][res.selected_config]["sharpe_median"] == best
    assert 0.0 <= d["metrics"]["pbo"] <= 1.0
    assert d["metrics"]["dsr"] <= d["metrics"]["psr"]
    assert d["strategy"]["pbo"]["n_blocks"] == 16


def test_label_returns_on_non_overlapping_periods(signal_frame):
    res = run_cpcv_backtest(
        signal_frame.drop("fwd_return_1d"),
        FEATURES,
        model_factory=LightGBMFactory(SMALL_LGBM, seed=1),
        cv=small_cv(),
    )
    assert res.strategy["return_source"] == "label"
    assert res.strategy["holding_bars"] == 5
    assert res.strategy["periods_per_year"] == pytest.approx(252 / 5)
    assert res.path_returns.shape[1] == -(-signal_frame["ts"].n_unique() // 5)


def test_frame_errors(signal_frame):
    with pytest.raises(InputError, match=r"lacks column\(s\) \['label_end'\]"):
        run_cpcv_backtest(signal_frame.drop("label_end"), FEATURES)
    bad = signal_frame.with_columns(
        pl.when(pl.int_range(pl.len()) == 3).then(None).otherwise(pl.col("label")).alias("label")
    )
    with pytest.raises(InputError, match="column `label` has 1 null/NaN value"):
        run_cpcv_backtest(bad, FEATURES)


def test_periods_per_year_from_the_caller_or_the_bar_spacing(signal_frame):
    kw = {"model_factory": LightGBMFactory(SMALL_LGBM, seed=1), "cv": small_cv()}
    weekly = run_cpcv_backtest(signal_frame, FEATURES, periods_per_year=52, **kw)
    m = weekly.metrics
    assert weekly.strategy["periods_per_year"] == 52
    assert m["sharpe"] == pytest.approx(m["sharpe_per_period"] * np.sqrt(52), rel=1e-12)
    # no value given: daily bars (one-day median spacing) annualize with 252, hourly with 24x
    daily = run_cpcv_backtest(signal_frame, FEATURES, **kw)
    assert daily.strategy["periods_per_year"] == 252
    t0 = signal_frame["ts"].min()
    hourly = signal_frame.with_columns(
        ts=t0 + (pl.col("ts") - t0) / 24, label_end=t0 + (pl.col("label_end") - t0) / 24
    )
    assert run_cpcv_backtest(hourly, FEATURES, **kw).strategy["periods_per_year"] == 252 * 24
