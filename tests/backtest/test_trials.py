"""Trials recorded in a real MLflow store deflate DSR: across runs, by the published formula."""

from __future__ import annotations

import math
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.stats import norm

from quantcli.backtest import stats
from quantcli.backtest.trials import (
    Trial,
    deflate,
    grid_trials,
    record_and_deflate,
    trial_id,
)
from quantcli.models.trials import TrialLog

EULER = 0.5772156649015329


@pytest.fixture
def trial_log(tmp_path, mlflow_template_db) -> TrialLog:
    db = tmp_path / "mlflow.db"
    shutil.copyfile(mlflow_template_db, db)
    return TrialLog(f"sqlite:///{db}")


def published_dsr(sr: float, trials: list[float], t: int, skew: float, kurt: float) -> float:
    """Bailey & Lopez de Prado (2014), written out independently of quantcli.backtest.stats."""
    n = len(trials)
    sr0 = math.sqrt(np.var(trials)) * (
        (1 - EULER) * norm.ppf(1 - 1 / n) + EULER * norm.ppf(1 - 1 / (n * math.e))
    )
    z = (sr - sr0) * math.sqrt(t - 1) / math.sqrt(1 - skew * sr + (kurt - 1) / 4 * sr**2)
    return float(norm.cdf(z))


def fake_result(grid_srs: list[float], returns: np.ndarray) -> SimpleNamespace:
    """What deflate/record read from a BacktestResult: grid, metrics of the gated path."""
    s = stats.summary(returns, 252)
    return SimpleNamespace(
        grid=[
            {"config": i, "params": {"num_leaves": 7 + i}, "sharpe_per_period_median": v}
            for i, v in enumerate(grid_srs)
        ],
        metrics={**s, "dsr": s["psr"], "n_trials": len(grid_srs)},
        path_returns=returns[None, :],
    )


def test_the_formula_matches_the_public_oracle():
    assert published_dsr(1.14, [3.5, 1.01, 1.02], 250, 0.0, 3.0) == pytest.approx(0.95836, abs=1e-5)


def test_fifty_recorded_trials_deflate_dsr_below_the_single_trial_psr(trial_log):
    rng = np.random.default_rng(3)
    z = rng.normal(size=750)
    returns = 0.0004 + 0.01 * (z - z.mean()) / z.std(ddof=1)  # per-period SR exactly 0.04
    # 50 configurations tried earlier under the name, in five separate runs of ten
    earlier = rng.normal(0.0, 0.03, 50)
    for run in range(5):
        trial_log.record(
            "momentum",
            [
                Trial(trial_id({"run": run, "i": i}), {"run": run, "i": i}, float(s), 750)
                for i, s in enumerate(earlier[run * 10 : (run + 1) * 10])
            ],
        )
    trial_log.record("other-model", [Trial("x" * 16, {}, 5.0, 750)])  # another name: not counted
    assert len(trial_log.sharpes("momentum")) == 50

    result = fake_result([0.05], returns)
    psr = result.metrics["psr"]
    assert result.metrics["sharpe_per_period"] == pytest.approx(0.04)
    assert 0.8 < psr < 0.9  # one trial: a fair chance the edge is real
    record_and_deflate(trial_log, "momentum", result, {"feature_set": "technical_v1"})
    m = result.metrics
    assert m["n_trials"] == 51 and m["n_prior_trials"] == 50
    expected = published_dsr(
        m["sharpe_per_period"], [0.05, *earlier.tolist()], 750, m["skew"], m["kurtosis"]
    )
    assert m["dsr"] == pytest.approx(expected, rel=1e-12)
    assert m["dsr"] < psr - 0.2  # deflated, clearly
    # the run itself is now recorded: 51 trials under the name
    assert len(trial_log.sharpes("momentum")) == 51


def test_the_same_configuration_twice_is_one_trial(trial_log):
    returns = np.random.default_rng(4).normal(0.001, 0.01, 500)
    ctx = {"feature_set": "technical_v1", "label": "fwd_return_5d"}
    first = fake_result([0.04, 0.06], returns)
    record_and_deflate(trial_log, "m", first, ctx)
    assert first.metrics["n_trials"] == 2 and first.metrics["n_prior_trials"] == 0
    again = fake_result([0.045, 0.055], returns)  # same params, new data: the same trials
    record_and_deflate(trial_log, "m", again, ctx)
    assert again.metrics["n_trials"] == 2
    assert sorted(trial_log.sharpes("m").values()) == [0.045, 0.055]  # updated, not added
    changed = fake_result([0.05], returns)
    changed.grid[0]["params"] = {"num_leaves": 63}  # a new configuration: a new trial
    record_and_deflate(trial_log, "m", changed, ctx)
    assert changed.metrics["n_trials"] == 3 and changed.metrics["n_prior_trials"] == 2


def test_a_hostile_model_name_is_refused_and_never_reaches_a_filter(trial_log):
    from quantcli.errors import InputError

    name = "x' OR tags.`quantcli.trial.id` != '"
    with pytest.raises(InputError, match="invalid model name"):
        trial_log.record(name, [Trial("a" * 16, {}, 0.1, 10)])
    with pytest.raises(InputError, match="invalid model name"):
        trial_log.record("x" * 201, [Trial("a" * 16, {}, 0.1, 10)])
    trial_log.record("plain", [Trial("b" * 16, {}, 0.2, 10)])
    # reading searches by a hash of the name: a hostile one finds nothing, raises nothing
    assert trial_log.sharpes(name) == {}
    assert trial_log.sharpes("plain") == {"b" * 16: 0.2}


def test_grid_trials_and_deflate_without_a_store():
    returns = np.random.default_rng(5).normal(0.001, 0.01, 300)
    res = fake_result([0.02, 0.07], returns)
    trials = grid_trials(res, {"label": "fwd_return_5d"})
    assert [t.sharpe_per_period for t in trials] == [0.02, 0.07]
    assert trials[0].trial_id != trials[1].trial_id and len(trials[0].trial_id) == 16
    deflate(res, [])
    assert res.metrics["n_trials"] == 2
    assert res.metrics["dsr"] == pytest.approx(
        stats.deflated_sharpe_ratio(
            res.metrics["sharpe_per_period"],
            [0.02, 0.07],
            300,
            res.metrics["skew"],
            res.metrics["kurtosis"],
        )
    )
