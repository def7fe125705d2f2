"""`qcli monitor ...` end to end on a real offline store (in-process `main`, real exit codes)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from quantcli.monitoring.drift import DriftResult
from quantcli.monitoring.drift_check import latest_drift_run, record_drift_run
from quantcli.monitoring.performance import PerformanceMonitor
from tests.monitoring.conftest import SHIFTED


def test_drift_periods_significant_exit_1_json_report_and_record(feature_store, qcli_home, qcli):
    code, out, err = qcli(
        "monitor", "drift", "--baseline", "2017-01-01:2017-12-31",
        "--current", "2018-01-01:", "--json", "--max-plots", "3",
    )  # fmt: skip
    assert code == 1, err
    res = json.loads(out)
    assert sorted(res["significant_features"]) == sorted(SHIFTED)
    assert sorted(res["drifted_features"]) == sorted(SHIFTED)
    assert res["n_features"] == 29
    assert res["features"][0]["feature"] in SHIFTED  # worst first
    assert res["baseline_source"] == "period 2017-01-01:2017-12-31 of the stored features"
    assert res["features"][0]["baseline"]["n_rows"] == 3 * 260
    report = res["report"]
    html = Path(report).read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") == 3
    assert "natural log" in html and "Jensen-Shannon divergence" in html
    assert "significant drift (PSI >= 0.25) in 2 feature(s)" in err
    # the run was recorded for retrain-check and guard
    from quantcli.monitoring.drift_check import latest_drift_run

    assert latest_drift_run()["n_drifted"] == 2


def test_drift_no_drift_exit_0_and_profile_reuse(feature_store, tmp_path, qcli):
    prof = tmp_path / "base.npz"
    code, out, err = qcli(
        "monitor", "drift", "--baseline", "2017-01-01:2017-06-30",
        "--current", "2017-07-01:2017-12-31", "--save-profile", str(prof), "--no-report",
        "--json",
    )  # fmt: skip
    assert code == 0, err
    direct = json.loads(out)
    assert direct["drifted_features"] == [] and direct["report"] is None
    cur = tmp_path / "cur.parquet"
    feature_store.filter(
        (pl.col("ts") >= datetime(2017, 7, 1, tzinfo=UTC))
        & (pl.col("ts") < datetime(2018, 1, 1, tzinfo=UTC))
    ).write_parquet(cur)
    code, out, _ = qcli(
        "monitor", "drift", "--baseline", str(prof), "--current", str(cur),
        "--no-report", "--json",
    )  # fmt: skip
    assert code == 0
    via_profile = json.loads(out)
    assert [f["psi"] for f in via_profile["features"]] == [f["psi"] for f in direct["features"]]
    assert [f["ks_pvalue"] for f in via_profile["features"]] == [
        f["ks_pvalue"] for f in direct["features"]
    ]


def test_drift_human_table(feature_store, qcli):
    code, out, _ = qcli(
        "monitor", "drift", "--baseline", "2017-01-01:2017-12-31",
        "--current", "2018-01-01:2018-12-31", "--no-report", "--features", "nma_9,bb_pct",
    )  # fmt: skip
    assert code == 1
    assert "Feature drift: 1 of 2 drifted" in out
    assert re.search(r"nma_9\s.*significant", out)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--baseline", "2017-13-01:", "--current", "2018-01-01:"], "--baseline '2017-13-01:'"),
        (["--baseline", "last year", "--current", "2018-01-01:"], "neither an existing file"),
        (["--baseline", "2017-01-01:", "--current", "nope.parquet"], "nope.parquet: file not"),
        (["--baseline", "2030-01-01:", "--current", "2018-01-01:"], "no rows of"),
        (["--baseline", "2017-12-31:2017-01-01", "--current", "2018-01-01:"], "ends before"),
        (["--baseline", "2017-01-01:", "--current", "x.npz"], "only be the baseline"),
    ],
)
def test_drift_bad_input_exit_2_one_line(feature_store, qcli, args, message):
    code, out, err = qcli("monitor", "drift", *args, "--no-report")
    assert code == 2
    assert message in err.splitlines()[0]
    assert out == ""


def _drift_runs() -> int:
    from quantcli.monitoring.state import monitoring_store

    with monitoring_store() as store:
        return store.con.execute("SELECT count(*) FROM monitor_drift_runs").fetchone()[0]


def test_drift_last_is_anchored_on_the_latest_stored_bar(feature_store, qcli):
    base = ("monitor", "drift", "--baseline", "2017-01-01:2017-12-31", "--no-report", "--json")
    code, out, err = qcli(*base, "--last", "63d")
    assert code == 1, err  # the SHIFTED features drift in 2018
    rel = json.loads(out)
    assert rel["windows"] == {
        "baseline": "2017-01-01:2017-12-31",
        "current": "2018-10-30:2018-12-31",  # 63 calendar days ending on the last stored bar
        "baseline_option": "--baseline",
        "current_option": "--last 63d",
        "latest_bar": "2018-12-31T00:00:00+00:00",
    }
    assert rel["current_source"] == (
        "period 2018-10-30:2018-12-31 of the stored features (--last 63d)"
    )
    assert rel["features"][0]["current"]["n_rows"] == 3 * 45  # 45 weekdays, 3 symbols
    code, out, _ = qcli(*base, "--current", "2018-10-30:2018-12-31")
    explicit = json.loads(out)
    assert code == 1
    for key in ("psi", "ks_pvalue", "js_divergence", "drifted"):
        assert [f[key] for f in rel["features"]] == [f[key] for f in explicit["features"]]


def test_drift_baseline_last_precedes_the_current_window(feature_store, qcli):
    code, out, err = qcli(
        "monitor", "drift", "--baseline-last", "1y", "--last", "3m", "--no-report",
    )  # fmt: skip
    # the baseline already holds 9 shifted months: moderate drift only, exit 0
    assert code == 0, err
    assert "Feature drift: 2 of 29 drifted" in out
    assert "baseline period 2017-10-01:2018-09-30 of the stored features" in out
    assert "baseline: --baseline-last 1y = 2017-10-01:2018-09-30" in err
    assert "current: --last 3m = 2018-10-01:2018-12-31" in err
    assert "latest stored bar: 2018-12-31T00:00:00+00:00" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--baseline", "2017-01-01:", "--current", "2018-01-01:", "--last", "63d"],
         "Error: --current and --last are mutually exclusive: give one"),
        (["--baseline", "2017-01-01:", "--baseline-last", "1y", "--last", "63d"],
         "Error: --baseline and --baseline-last are mutually exclusive: give one"),
        (["--baseline", "2017-01-01:"],
         "Error: missing window: give --current START:END|FILE or --last DURATION"),
        (["--baseline", "2017-01-01:", "--last", "63"], "Error: --last '63': not a duration"),
    ],
)  # fmt: skip
def test_drift_window_options_exit_2_one_line(feature_store, qcli, args, message):
    code, out, err = qcli("monitor", "drift", *args, "--no-report")
    assert code == 2
    assert err.splitlines()[0] == message
    assert out == ""
    assert _drift_runs() == 0  # nothing recorded


def test_drift_without_feature_table_exit_2(qcli_home, qcli):
    code, _, err = qcli("monitor", "drift", "--baseline", "2017-01-01:", "--current", "2018-01-01:")
    assert code == 2 and "no offline store" in err


def _log(n_days: int, good: bool) -> None:
    rng = np.random.default_rng(3)
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    act = rng.normal(0.001, 0.01, n_days)
    pred = act if good else -act
    PerformanceMonitor().log_predictions(
        pl.DataFrame(
            {"ts": [t0 + timedelta(days=i) for i in range(n_days)], "prediction": pred,
             "actual": act}
        )
    )  # fmt: skip


def test_performance_and_retrain_check_exit_codes(qcli_home, tmp_path, qcli):
    path = tmp_path / "preds.csv"
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    pl.DataFrame(
        {"ts": [t0 + timedelta(days=i) for i in range(30)], "prediction": [1.0] * 30,
         "actual": [0.01, -0.005] * 15}
    ).write_csv(path)  # fmt: skip
    code, out, err = qcli("monitor", "performance", "--log", str(path), "--json")
    assert code == 0, err
    m = json.loads(out)
    assert m["n_samples"] == 30 and m["win_rate"] == 0.5 and m["degraded"] is False
    _log(100, good=False)
    code, out, _ = qcli("monitor", "performance", "--json")
    assert code == 1 and json.loads(out)["degraded"] is True

    code, out, err = qcli("monitor", "retrain-check", "--json")
    assert code == 1
    d = json.loads(out)
    assert d["reasons"][0] == "schedule: no completed training on record"
    assert any(r.startswith("performance:") for r in d["reasons"])
    code, out, _ = qcli("monitor", "retrain-check", "--mark-trained", "--json")
    assert code == 0 and "marked_trained_at" in json.loads(out)


def test_retrain_check_not_due_exit_0(qcli_home, qcli):
    _log(60, good=True)
    assert qcli("monitor", "retrain-check", "--mark-trained").code == 0
    code, out, err = qcli("monitor", "retrain-check", "--json")
    assert code == 0, err
    assert json.loads(out)["due"] is False


@pytest.mark.parametrize(
    ("option", "target", "message"),
    [
        ("--report", "DIR", "--report {DIR}: is a directory"),
        ("--save-profile", "DIR", "--save-profile {DIR}: is a directory"),
        ("--report", "/proc/nope/r.html", "--report /proc/nope/r.html: cannot create"),
        ("--save-profile", "/proc/nope/b.npz", "--save-profile /proc/nope/b.npz: cannot create"),
    ],
)
def test_drift_unwritable_output_is_exit_2_before_any_work(
    feature_store, qcli, tmp_path, option, target, message
):
    target = str(tmp_path) if target == "DIR" else target
    code, out, err = qcli(
        "monitor", "drift", "--baseline", "2017-01-01:2017-12-31", "--current", "2018-01-01:",
        option, target,
    )  # fmt: skip
    assert code == 2, err
    assert err.startswith(f"Error: {message.format(DIR=tmp_path)}"), err
    assert "Traceback" not in err and out == ""
    assert _drift_runs() == 0  # refused before the check ran and recorded


def test_performance_window_zero_is_refused_not_the_default(qcli_home, qcli, tmp_path):
    code, _, err = qcli("monitor", "performance", "--window", "0")
    assert code == 2 and err.startswith("Error: --window must be a whole number in [2, 2**63)")
    code, out, err = qcli("monitor", "performance", "--window", "7", "--json")
    assert json.loads(out)["window_size"] == 7, err


def test_the_latest_drift_run_is_the_last_recorded_within_one_second(qcli_home):
    """Drift timestamps have whole seconds; ties must not fall to the random run id."""
    for i in range(8):
        result = DriftResult(
            features=[], thresholds={}, timestamp="2026-12-07T10:00:00+00:00",
            baseline_source=f"run {i}", current_source="c",
        )  # fmt: skip
        record_drift_run(result)
        assert latest_drift_run()["baseline_source"] == f"run {i}"
