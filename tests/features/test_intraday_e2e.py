"""End to end on hourly bars with a user feature set of the new kinds, cross-sectional ones
included: ingest -> build (incremental, equal to the full rebuild) -> backtest -> train ->
export -> materialize -> predict, annualized with the declared periods."""

from __future__ import annotations

import json
import math
import shutil
import warnings
from datetime import UTC, datetime

import polars as pl
import pytest

pytestmark = pytest.mark.integration

PERIODS = 6240  # 24 hourly bars on 260 days: 24/5 FX, not the 6,048 the "1h" default gives

USER_SET = f"""[feature_set]
name = "fx_hourly"
version = 1
table = "fx_hourly_features_v1"
frequency = "1h"
periods_per_year = {PERIODS}

[[features]]
name = "ema_12"
kind = "ema"
params = {{ window = 12 }}

[[features]]
name = "kama_10"
kind = "kama"
params = {{ window = 10 }}

[[features]]
name = "cci_14"
kind = "cci"
params = {{ window = 14 }}

[[features]]
name = "willr_14"
kind = "willr"
params = {{ window = 14 }}

[[features]]
name = "natr_14"
kind = "natr"
params = {{ window = 14 }}

[[features]]
name = "sar"
kind = "sar"

[[features]]
name = "trend"
kind = "ratio"
params = {{ of = "ema_12", other = "kama_10" }}

[[features]]
name = "cci_z"
kind = "zscore"
params = {{ of = "cci_14", window = 24 }}

[[features]]
name = "trend_rank"
kind = "cs_rank"
params = {{ of = "trend" }}

[[features]]
name = "cci_cs_z"
kind = "cs_zscore"
params = {{ of = "cci_14" }}

[[labels]]
name = "fwd_return_4"
kind = "forward_return"
params = {{ horizon = 4 }}
"""


def _hourly_bars() -> pl.DataFrame:
    from quantcli.data.synthetic import synthetic_universe

    bars = synthetic_universe(4, 700, seed=7, ar1=0.2)
    hour = pl.duration(hours=pl.int_range(pl.len()).over("symbol"))
    return bars.with_columns((pl.lit(datetime(2024, 1, 1, tzinfo=UTC)) + hour).alias("ts"))


def _features() -> pl.DataFrame:
    from quantcli.store.offline import OfflineStore

    with OfflineStore(read_only=True) as store:
        return store.con.sql("SELECT * FROM fx_hourly_features_v1 ORDER BY symbol, ts").pl()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # MLflow/SQLAlchemy internals
@pytest.mark.filterwarnings("ignore:.*noload.*")  # MLflow's SQLAlchemy store (SADeprecationWarning)
def test_hourly_user_set_through_the_whole_flow(qcli_home, qcli, mlflow_template_db):
    from quantcli.data.ingest import ingest_frame

    defs = qcli_home / "feature_defs"
    defs.mkdir()
    (defs / "fx_hourly_v1.toml").write_text(USER_SET)
    shutil.copy(mlflow_template_db, qcli_home / "mlflow.db")
    small = qcli_home / "small.toml"  # a small CPCV and model: the flow is under test, not fit
    small.write_text("[cpcv]\nn_groups = 4\nn_test_groups = 1\n\n[lightgbm]\nn_estimators = 20\n")

    bars = _hourly_bars()
    hours = bars["ts"].unique().sort()
    early = pl.col("symbol").is_in(["SYM0000", "SYM0001"])
    # the last hours arrive for two symbols first: incremental builds with cross-sectional
    # features, then the full rebuild they must equal
    inserted = 0
    for keep in (pl.col("ts") < hours[690], (pl.col("ts") < hours[690]) | early, pl.lit(True)):
        result = ingest_frame(bars.filter(keep), interval="1h")
        inserted += result.rows_inserted
        assert not result.quality.warnings
        code, out, err = qcli("features", "build", "--feature-set", "fx_hourly_v1", "--json")
        assert code == 0, err
    assert inserted == 4 * 700
    assert json.loads(out)["paths"] == {"stream": ["SYM0000", "SYM0001", "SYM0002", "SYM0003"]}
    incremental = _features()
    code, out, err = qcli("features", "build", "--feature-set", "fx_hourly_v1", "--full", "--json")
    assert code == 0, err
    assert _features().equals(incremental)
    at_last = incremental.filter(pl.col("ts") == hours[699]).sort("trend")
    assert at_last["trend_rank"].to_list() == [0.0, 1 / 3, 2 / 3, 1.0]
    build = json.loads(out)
    assert build["table"] == "fx_hourly_features_v1"
    assert build["warmup_rows_dropped"] == 4 * (13 + 23)  # cci_z: CCI's 13 + the z-score's 23
    assert build["quality"]["non_finite"] == 0

    # exit 1 is a failed gate (random-walk bars); the numbers are what this test checks
    bt_args = ["--feature-set", "fx_hourly_v1", "--label", "fwd_return_4", "--grid", "none"]
    code, out, err = qcli("backtest", "cpcv", *bt_args, "--config", str(small), "--json")
    assert code in (0, 1), err
    bt = json.loads(out)
    # no 1-bar label: each period holds the 4-bar label, PERIODS / 4 periods a year
    assert bt["strategy"]["label_horizon_bars"] == 4
    assert bt["strategy"]["periods_per_year"] == PERIODS / 4
    m = bt["metrics"]
    assert m["sharpe"] == pytest.approx(m["sharpe_per_period"] * math.sqrt(PERIODS / 4), rel=1e-12)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train = ["--name", "fx", "--feature-set", "fx_hourly_v1", "--label", "fwd_return_4"]
        code, out, err = qcli("model", "train", *train, "--config", str(small), "--json")
    assert code in (0, 1), err  # 1: the trained model's backtest gate failed, still registered
    code, out, err = qcli("model", "export", "fx", "--sample-rows", "200", "--json")
    assert code == 0, err
    code, out, err = qcli("features", "materialize", "--feature-set", "fx_hourly_v1", "--json")
    assert code == 0, err
    mat = json.loads(out)
    assert (mat["feature_view"], mat["features"]) == ("fx_hourly_features_v1", 10)
    assert mat["symbols"] == 4

    code, out, err = qcli(
        "predict", "SYM0000", "SYM0003", "--model", "fx", "--alias", "staging", "--json"
    )
    assert code == 0, err
    preds = json.loads(out)["predictions"]
    assert [p["symbol"] for p in preds] == ["SYM0000", "SYM0003"]
    assert preds[0]["feature_version"] == "fx_hourly_v1@1"
    assert preds[0]["feature_ts"] == "2024-01-30T03:00:00+00:00"  # the last hourly bar
    assert all(math.isfinite(p["prediction"]) for p in preds)
