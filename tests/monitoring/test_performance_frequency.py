"""Performance monitoring annualizes with the feature set's periods per year, not 252."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from quantcli.errors import InputError
from quantcli.monitoring.performance import PerformanceMonitor

HOURLY = """[feature_set]
name = "fx"
version = 1
table = "fx_features_v1"
frequency = "1h"
periods_per_year = 6240

[[features]]
name = "ema_5"
kind = "ema"
params = { window = 5 }
"""


def test_sharpe_is_annualized_with_the_feature_sets_periods(qcli_home):
    (qcli_home / "feature_defs").mkdir()
    (qcli_home / "feature_defs" / "fx_v1.toml").write_text(HOURLY)
    rng = np.random.default_rng(4)
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    ts = [t0 + timedelta(hours=i) for i in range(200)]
    actual = rng.normal(0.0005, 0.01, 200)
    pred = np.where(rng.random(200) < 0.7, actual, -actual)
    frame = pl.DataFrame({"ts": ts, "prediction": pred, "actual": actual})
    mon = PerformanceMonitor(window_size=500, feature_set="fx_v1", name="fx")
    mon.log_predictions(frame)
    m = mon.calculate_metrics(record=False)
    r = np.sign(pred) * actual
    assert m["periods_per_year"] == 6240.0
    assert m["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(6240), rel=1e-12)
    daily = PerformanceMonitor(window_size=500, name="fx").calculate_metrics(record=False)
    assert daily["periods_per_year"] == 252.0
    assert daily["sharpe"] == pytest.approx(m["sharpe"] * math.sqrt(252 / 6240), rel=1e-12)
    with pytest.raises(InputError, match="periods_per_year"):
        PerformanceMonitor(periods_per_year=0)


def test_cli_performance_takes_the_feature_sets_periods(qcli_home, qcli, tmp_path):
    (qcli_home / "feature_defs").mkdir()
    (qcli_home / "feature_defs" / "fx_v1.toml").write_text(HOURLY)
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    log = tmp_path / "preds.parquet"
    pl.DataFrame(
        {
            "ts": [t0 + timedelta(hours=i) for i in range(50)],
            "prediction": [1.0] * 50,
            "actual": [0.001 * (i % 7 - 2) for i in range(50)],
        }
    ).write_parquet(log)
    code, out, err = qcli(
        "monitor", "performance", "--log", str(log), "--feature-set", "fx_v1", "--json"
    )
    assert code in (0, 1), err  # 1: degraded
    result = json.loads(out)
    assert result["periods_per_year"] == 6240.0
    assert "sqrt(6240)" in result["conventions"]["sharpe"]
