"""The monitoring workflows' typed results: the JSON keys the commands printed, one gate rule
(``raise_if_failed``), and the workspace they read and write."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from quantcli.errors import GateFailedError
from quantcli.monitoring.drift_check import latest_drift_run, run_drift_check
from quantcli.monitoring.guard import GuardResult, run_guard
from quantcli.monitoring.performance import PerformanceMetrics, PerformanceMonitor
from quantcli.monitoring.retrain import RetrainDecision, RetrainingTrigger, check_retrain
from quantcli.monitoring.shadow import ShadowComparison, shadow_compare
from quantcli.results import jsonable
from quantcli.workspace import Workspace
from tests.monitoring.conftest import SHIFTED
from tests.monitoring.test_guard import _bad_days

T0 = datetime(2024, 1, 1, tzinfo=UTC)

METRIC_KEYS = [
    "monitor", "computed_at", "window_size", "n_samples", "n_periods", "sharpe", "max_drawdown",
    "win_rate", "direction_accuracy", "correlation", "cumulative_return", "window_start",
    "window_end", "degraded", "reasons", "thresholds", "periods_per_year", "conventions",
]  # fmt: skip


def _log(mon: PerformanceMonitor, n: int, good: bool) -> None:
    act = np.random.default_rng(3).normal(0.001, 0.01, n)
    mon.log_predictions(
        pl.DataFrame(
            {"ts": [T0 + timedelta(days=i) for i in range(n)], "prediction": act if good else -act,
             "actual": act}
        )
    )  # fmt: skip


def test_degraded_performance_fails_with_its_reasons(qcli_home):
    mon = PerformanceMonitor(window_size=100)
    _log(mon, 60, good=False)
    m = mon.calculate_metrics()
    assert isinstance(m, PerformanceMetrics)
    assert list(m.to_dict()) == METRIC_KEYS
    assert m.degraded and not m.passed and m["degraded"] is True
    assert list(m.reasons) == m["reasons"] and m.reasons[0].startswith("rolling Sharpe")
    with pytest.raises(GateFailedError) as exc:
        m.raise_if_failed()
    assert exc.value.exit_code == 1 and exc.value.message == "performance degraded"
    assert exc.value.reasons == list(m.reasons) and exc.value.result == jsonable(m.to_dict())
    # the recorded history is the result's JSON, which the guard reads back
    assert mon.metrics_history()[-1] == jsonable(m.to_dict())


def test_retrain_decision_is_the_trigger_verdict(qcli_home):
    trigger = RetrainingTrigger(schedule_days=30, min_samples=50, drift_threshold=2)
    due = trigger.evaluate({"drifted_features": ["a", "b"]}, None, now=T0)
    assert isinstance(due, RetrainDecision) and due.due and not due.passed
    assert trigger.should_retrain({"drifted_features": ["a", "b"]}, now=T0) == (
        True,
        list(due.reasons),
    )
    assert list(due.to_dict()) == [
        "monitor", "evaluated_at", "due", "reasons", "last_trained_at", "days_since_training",
        "n_drifted", "new_samples", "thresholds",
    ]  # fmt: skip
    with pytest.raises(GateFailedError, match="retraining is due"):
        due.raise_if_failed()
    trigger.mark_training_completed(T0)
    assert trigger.evaluate(None, None, now=T0 + timedelta(days=1)).raise_if_failed().passed


def test_check_retrain_reads_the_workspace_config(qcli_home, tmp_path):
    cfg = tmp_path / "retrain.toml"
    cfg.write_text("[retrain]\nschedule_days = 7\nmin_samples = 5\n")
    ws = Workspace.from_env(config=cfg)
    trained = datetime.now(UTC) - timedelta(days=1)
    RetrainingTrigger(workspace=ws).mark_training_completed(trained)
    PerformanceMonitor(workspace=ws).log_predictions(  # 6 new samples >= 5 of the config
        pl.DataFrame(
            {"ts": [trained + timedelta(hours=h) for h in range(1, 7)],
             "prediction": [1.0] * 6, "actual": [0.01, 0.02] * 3}
        )
    )  # fmt: skip
    decision = check_retrain(workspace=ws)
    assert decision.thresholds == {"schedule_days": 7, "min_samples": 5, "drift_threshold": 3}
    assert [r.split(":")[0] for r in decision.reasons] == ["samples"]


def test_significant_drift_fails_naming_the_features(feature_store, qcli_home):
    check = run_drift_check("2017-01-01:2017-12-31", "2018-01-01:", report=None)
    assert not check.passed
    assert sorted(r.split(":")[0] for r in check.reasons) == sorted(SHIFTED)
    out = check.to_dict()
    assert list(out)[-4:] == ["report", "profile", "run_id", "windows"]
    assert out["n_drifted"] == 2 and out["report"] is None
    assert latest_drift_run()["n_drifted"] == 2  # recorded under the run id it returned
    # the check feeds the retraining trigger as it is
    trigger = RetrainingTrigger(drift_threshold=2)
    assert any(r.startswith("drift: 2 features") for r in trigger.evaluate(check, None).reasons)
    with pytest.raises(GateFailedError, match=r"significant drift \(PSI >= 0.25\) in 2 feature"):
        check.raise_if_failed()


def test_guard_critical_fails_and_the_json_keys_are_the_commands(qcli_home):
    _bad_days(3)
    r = run_guard()  # no --model: nothing to roll back or halt
    assert isinstance(r, GuardResult) and not r.passed and r.severity == "CRITICAL"
    assert r.reasons == tuple(f.message for f in r.findings if f.severity == "CRITICAL")
    assert list(r.to_dict()) == [
        "event_id", "evaluated_at", "monitor", "model", "severity", "findings", "action",
        "rollback", "halt", "inputs", "thresholds", "alerts",
    ]  # fmt: skip
    assert r["findings"][0]["check"] == "sharpe" and r.action == "none"
    with pytest.raises(GateFailedError) as exc:
        r.raise_if_failed()
    assert exc.value.message == "CRITICAL guard finding(s)"
    assert exc.value.result == jsonable(r.to_dict())


def test_shadow_comparison_keeps_the_old_dict_access():
    ts = [T0 + timedelta(days=i) for i in range(4)]
    r = shadow_compare(ts, np.ones(4), -np.ones(4), np.full(4, 0.01), 0.05)
    assert isinstance(r, ShadowComparison) and not r.passed and r["passed"] is False
    assert json.loads(json.dumps(jsonable(r)))["production"]["cumulative_return"] < 0
    assert r.reasons[0].startswith("P&L divergence")


def test_a_workspace_routes_the_monitor_state(qcli_home, tmp_path):
    other = Workspace.at(tmp_path / "desk")
    other.home.mkdir()
    _log(PerformanceMonitor(workspace=other), 10, good=True)
    assert PerformanceMonitor(workspace=other).calculate_metrics(record=False).n_samples == 10
    assert PerformanceMonitor().calculate_metrics(record=False).n_samples == 0  # $QCLI_HOME
    # the deprecated store_path= still names the file
    old = PerformanceMonitor(store_path=other.offline_path)
    assert old.calculate_metrics(record=False).n_samples == 10
