"""`qcli features build` warns (stderr and the JSON `warnings`) when the stored bars' spacing
contradicts the feature set's declared frequency; the build itself still runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl

from quantcli.data import ingest_frame, ingest_sample
from quantcli.data.synthetic import synthetic_universe
from quantcli.features.build import build_features

HOURLY_SET = """[feature_set]
name = "desk"
version = 1
table = "desk_features_v1"
frequency = "1h"

[[features]]
name = "ema_5"
kind = "ema"
params = { window = 5 }
"""


def _hourly_bars(symbol: str = "HRLY", n: int = 240) -> pl.DataFrame:
    start = datetime(2021, 3, 1, tzinfo=UTC)
    return synthetic_universe(1, n, seed=5).with_columns(
        pl.lit(symbol).alias("symbol"),
        pl.datetime_range(start, start + timedelta(hours=n - 1), "1h", eager=True).alias("ts"),
    )


def _flat(text: str) -> str:
    return " ".join(text.split())  # rich wraps long stderr lines


def test_hourly_bars_under_a_daily_set_warn(qcli_home, qcli):
    ingest_frame(_hourly_bars())
    run = qcli("features", "build")
    assert run.code == 0, run.err
    expected = (
        "bars of 1 symbol(s) are not spaced 1d as the feature set technical_v1 declares "
        "(median spacing): HRLY (1:00:00)"
    )
    assert f"Warning: {expected}" in _flat(run.err)
    run = qcli("features", "build", "--full", "--json")
    assert run.code == 0 and run.json["warnings"] == [expected]
    assert run.json["rows_written"] == 240 - 199  # the build ran all the same


def test_daily_bars_under_an_hourly_set_warn(qcli_home, qcli):
    (qcli_home / "feature_defs").mkdir()
    (qcli_home / "feature_defs" / "desk_v1.toml").write_text(HOURLY_SET)
    ingest_sample()
    run = qcli("features", "build", "--feature-set", "desk_v1", "--json")
    assert run.code == 0, run.err
    assert run.json["warnings"] == [
        "bars of 2 symbol(s) are not spaced 1h as the feature set desk_v1 declares (median "
        "spacing): IXIC (1 day, 0:00:00), SPX (1 day, 0:00:00)"
    ]


def test_bars_spaced_as_declared_warn_nothing(qcli_home, qcli):
    ingest_frame(synthetic_universe(2, 230, seed=3))  # business days: median spacing 1 day
    run = qcli("features", "build")
    assert run.code == 0 and "Warning" not in run.err
    result = build_features(full=True)
    assert result.warnings == [] and result.spacing.mismatched == {}


def test_a_streamed_symbol_is_not_judged_on_its_few_new_bars(qcli_home):
    bars = synthetic_universe(1, 260, seed=8)
    ingest_frame(bars.head(250))
    first = build_features()
    assert first.paths == {"rewrite": ["SYM0000"]} and first.warnings == []
    ingest_frame(bars.tail(10))
    again = build_features()
    assert again.paths == {"stream": ["SYM0000"]}
    assert again.spacing.mismatched == {} and again.warnings == []
