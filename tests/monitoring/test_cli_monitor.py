"""`qcli monitor ...` end to end on a real offline store (in-process `main`, real exit codes)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from quantcli.cli import main
from quantcli.monitoring.performance import PerformanceMonitor
from tests.monitoring.conftest import SHIFTED


def run(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_drift_periods_significant_exit_1_json_report_and_record(feature_store, qcli_home, capsys):
    code, out, err = run(
        capsys,
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


def test_drift_no_drift_exit_0_and_profile_reuse(feature_store, tmp_path, capsys):
    prof = tmp_path / "base.npz"
    code, out, err = run(
        capsys,
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
    code, out, _ = run(
        capsys, "monitor", "drift", "--baseline", str(prof), "--current", str(cur),
        "--no-report", "--json",
    )  # fmt: skip
    assert code == 0
    via_profile = json.loads(out)
    assert [f["psi"] for f in via_profile["features"]] == [f["psi"] for f in direct["features"]]
    assert [f["ks_pvalue"] for f in via_profile["features"]] == [
        f["ks_pvalue"] for f in direct["features"]
    ]


def test_drift_human_table(feature_store, capsys):
    code, out, _ = run(
        capsys, "monitor", "drift", "--baseline", "2017-01-01:2017-12-31",
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
def test_drift_bad_input_exit_2_one_line(feature_store, capsys, args, message):
    code, out, err = run(capsys, "monitor", "drift", *args, "--no-report")
    assert code == 2
    assert message in err.splitlines()[0]
    assert out == ""


def test_drift_without_feature_table_exit_2(qcli_home, capsys):
    code, _, err = run(
        capsys, "monitor", "drift", "--baseline", "2017-01-01:", "--current", "2018-01-01:"
    )
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


def test_performance_and_retrain_check_exit_codes(qcli_home, tmp_path, capsys):
    path = tmp_path / "preds.csv"
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    pl.DataFrame(
        {"ts": [t0 + timedelta(days=i) for i in range(30)], "prediction": [1.0] * 30,
         "actual": [0.01, -0.005] * 15}
    ).write_csv(path)  # fmt: skip
    code, out, err = run(capsys, "monitor", "performance", "--log", str(path), "--json")
    assert code == 0, err
    m = json.loads(out)
    assert m["n_samples"] == 30 and m["win_rate"] == 0.5 and m["degraded"] is False
    _log(100, good=False)
    code, out, _ = run(capsys, "monitor", "performance", "--json")
    assert code == 1 and json.loads(out)["degraded"] is True

    code, out, err = run(capsys, "monitor", "retrain-check", "--json")
    assert code == 1
    d = json.loads(out)
    assert d["reasons"][0] == "schedule: no completed training on record"
    assert any(r.startswith("performance:") for r in d["reasons"])
    code, out, _ = run(capsys, "monitor", "retrain-check", "--mark-trained", "--json")
    assert code == 0 and "marked_trained_at" in json.loads(out)


def test_retrain_check_not_due_exit_0(qcli_home, capsys):
    _log(60, good=True)
    assert run(capsys, "monitor", "retrain-check", "--mark-trained")[0] == 0
    code, out, err = run(capsys, "monitor", "retrain-check", "--json")
    assert code == 0, err
    assert json.loads(out)["due"] is False
