"""PerformanceMonitor and RetrainingTrigger: exact metrics, the four reasons, persistence."""

from __future__ import annotations

import math
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from quantcli.errors import InputError
from quantcli.monitoring.performance import PerformanceMonitor, rolling_metrics
from quantcli.monitoring.retrain import RetrainingTrigger

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _days(n):
    return [T0 + timedelta(days=i) for i in range(n)]


def test_rolling_metrics_hand_computed():
    # positions +1, -1, +1, 0 ; returns 0.1, 0.05, -0.2, 0.3 -> strategy 0.1, -0.05, -0.2, 0
    pred = np.array([0.5, -0.1, 2.0, 0.0])
    act = np.array([0.1, 0.05, -0.2, 0.3])
    m = rolling_metrics(_days(4), pred, act, periods_per_year=252)
    r = np.array([0.1, -0.05, -0.2, 0.0])
    assert m["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(252), rel=1e-12)
    # wealth 1.1, 1.045, 0.836, 0.836 ; peak 1.1 -> drawdown 0.836/1.1 - 1 = -0.24
    assert m["max_drawdown"] == pytest.approx(-0.24, rel=1e-12)
    assert m["win_rate"] == pytest.approx(1 / 3)  # 3 positioned, 1 positive
    assert m["direction_accuracy"] == pytest.approx(1 / 4)  # only the first sign matches
    assert m["correlation"] == pytest.approx(np.corrcoef(pred, act)[0, 1], rel=1e-12)
    assert m["cumulative_return"] == pytest.approx(0.836 - 1, rel=1e-12)


def test_first_period_loss_counts_in_drawdown_and_same_ts_is_one_period():
    ts = [T0, T0, T0 + timedelta(days=1)]
    m = rolling_metrics(ts, np.array([1.0, 1.0, 1.0]), np.array([-0.1, -0.3, 0.1]))
    assert m["n_periods"] == 2 and m["n_samples"] == 3
    assert m["max_drawdown"] == pytest.approx(-0.2)  # mean of -0.1 and -0.3 from wealth 1


def test_monitor_state_survives_a_restart_in_another_process(qcli_home):
    mon = PerformanceMonitor(window_size=50)
    rng = np.random.default_rng(1)
    act = rng.normal(0.001, 0.01, 80)
    pred = act + rng.normal(0, 0.01, 80)
    mon.log_predictions(pl.DataFrame({"ts": _days(80), "prediction": pred, "actual": act}))
    mon.log_prediction(T0 + timedelta(days=100), 0.3)  # outcome not known yet: not in the window
    first = mon.calculate_metrics(now=T0 + timedelta(days=101))
    code = (
        "from quantcli.monitoring.performance import PerformanceMonitor\n"
        "import json\n"
        "m = PerformanceMonitor(window_size=50).calculate_metrics(record=False)\n"
        "print(json.dumps([m['n_samples'], m['sharpe'], m['max_drawdown'], m['window_start']]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    n, sharpe, dd, start = __import__("json").loads(out.stdout)
    assert n == 50 and start == _days(80)[30].isoformat()
    assert sharpe == first["sharpe"] and dd == first["max_drawdown"]
    expected = rolling_metrics(_days(80)[30:], pred[30:], act[30:])
    assert first["sharpe"] == pytest.approx(expected["sharpe"], rel=1e-12)
    assert len(PerformanceMonitor().metrics_history()) == 1


def test_degradation_flag_and_reasons(qcli_home):
    mon = PerformanceMonitor(window_size=10, min_sharpe=1.0, max_drawdown=-0.25)
    act = np.array([-0.1] * 5 + [0.01] * 5)
    mon.log_predictions(pl.DataFrame({"ts": _days(10), "prediction": np.ones(10), "actual": act}))
    m = mon.calculate_metrics(record=False)
    assert m["degraded"]
    assert any("Sharpe" in r for r in m["reasons"])
    assert any("drawdown" in r for r in m["reasons"])


def test_bad_parameters_and_rows_name_the_problem(qcli_home):
    with pytest.raises(InputError, match="window_size=1"):
        PerformanceMonitor(window_size=1)
    with pytest.raises(InputError, match=r"max_drawdown=0\.25"):
        PerformanceMonitor(max_drawdown=0.25)
    with pytest.raises(InputError, match="non-finite"):
        PerformanceMonitor().log_prediction(T0, float("nan"), 0.1)
    with pytest.raises(InputError, match="min_samples=0"):
        RetrainingTrigger(min_samples=0)


# -- the trigger: each reason alone ---------------------------------------------------------
NOW = T0 + timedelta(days=200)


def _trigger(**kw):
    t = RetrainingTrigger(schedule_days=90, min_samples=100, drift_threshold=3, **kw)
    t.mark_training_completed(NOW - timedelta(days=10))
    return t


def test_nothing_due(qcli_home):
    due, reasons = _trigger().should_retrain(
        {"drifted_features": ["a", "b"]}, {"degraded": False}, now=NOW
    )
    assert (due, reasons) == (False, [])


def test_reason_schedule_alone(qcli_home):
    t = _trigger()
    t.mark_training_completed(NOW - timedelta(days=90))
    due, reasons = t.should_retrain(None, None, now=NOW)
    assert due and len(reasons) == 1 and reasons[0].startswith("schedule: last training 90.0 days")
    assert t.should_retrain(None, None, now=NOW - timedelta(seconds=1)) == (False, [])


def test_reason_schedule_when_never_trained(qcli_home):
    due, reasons = RetrainingTrigger().should_retrain(now=NOW)
    assert due and reasons == ["schedule: no completed training on record"]


def test_reason_drift_alone(qcli_home):
    due, reasons = _trigger().should_retrain({"drifted_features": ["a", "b", "c"]}, now=NOW)
    assert due and len(reasons) == 1 and reasons[0].startswith("drift: 3 features drifted")


def test_reason_performance_alone(qcli_home):
    metrics = {"degraded": True, "reasons": ["rolling Sharpe 0.2 below the minimum 1"]}
    due, reasons = _trigger().should_retrain(None, metrics, now=NOW)
    assert due and reasons == ["performance: rolling Sharpe 0.2 below the minimum 1"]


def test_reason_samples_alone_counts_only_after_training(qcli_home):
    t = _trigger()
    trained = NOW - timedelta(days=10)
    mon = PerformanceMonitor()
    before = [trained - timedelta(hours=i + 1) for i in range(50)]
    after = [trained + timedelta(minutes=i + 1) for i in range(99)]
    mon.log_predictions(
        pl.DataFrame({"ts": before + after, "prediction": [1.0] * 149, "actual": [0.01] * 149})
    )
    assert t.should_retrain(now=NOW) == (False, [])  # 99 < 100
    mon.log_prediction(trained + timedelta(days=1), 1.0, None)  # no outcome: not a sample
    assert t.should_retrain(now=NOW) == (False, [])
    mon.log_prediction(trained + timedelta(days=1), 1.0, 0.02)
    due, reasons = t.should_retrain(now=NOW)
    assert due and reasons == [
        "samples: 100 new labelled samples since the last training (minimum 100)"
    ]


def test_trigger_state_persists_across_a_restart(qcli_home):
    RetrainingTrigger().mark_training_completed("2024-03-01T12:00:00+00:00")
    code = (
        "from quantcli.monitoring.retrain import RetrainingTrigger\n"
        "print(RetrainingTrigger().last_trained_at().isoformat())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "2024-03-01T12:00:00+00:00"
    # a different alias has its own state
    assert RetrainingTrigger(name="staging").last_trained_at() is None


def test_outcomes_attach_later_never_overwrite_and_cli(qcli_home, tmp_path, qcli):
    ts = [T0, T0, T0 + timedelta(days=1)]
    preds = tmp_path / "preds.csv"
    pl.DataFrame({"symbol": ["A", "B", "A"], "ts": ts, "prediction": [1.0, -1.0, 0.5]}).write_csv(
        preds
    )
    outs = tmp_path / "outcomes.csv"
    pl.DataFrame({"symbol": ["A", "B", "C"], "ts": ts, "actual": [0.01, 0.02, 0.03]}).write_csv(
        outs
    )
    run = qcli("monitor", "performance", "--log", preds, "--outcomes", outs, "--json")
    assert run.code == 0, run.err
    m = run.json
    # A@T0 and B@T0 matched; C has no prediction, A@T0+1 has no outcome yet
    assert m["n_samples"] == 2 and m["n_periods"] == 1
    mon = PerformanceMonitor()
    again = pl.DataFrame({"symbol": ["A"], "ts": [T0], "actual": [0.5]})
    assert mon.record_outcomes(again) == 0  # an outcome is never overwritten
    assert mon.window()["actual"].to_list() == [0.01, 0.02]
    with pytest.raises(InputError, match="outcomes frame lacks column"):
        mon.record_outcomes(pl.DataFrame({"ts": [T0], "actual": [0.1]}))
