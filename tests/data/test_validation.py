"""validate_bars: every check, its severity, count and location; the robust z oracle."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest
from scipy.stats import median_abs_deviation

from quantcli.data import synthetic_universe, validate_bars
from quantcli.data.validation import MIN_RETURNS_FOR_OUTLIERS, outlier_scores
from quantcli.errors import DataValidationError, InputError


@pytest.fixture(scope="module")
def bars() -> pl.DataFrame:
    return synthetic_universe(n_symbols=3, n_days=60, seed=3)


def _set(df: pl.DataFrame, row: int, col: str, value) -> pl.DataFrame:
    idx = pl.int_range(0, pl.len())
    return df.with_columns(
        pl.when(idx == row)
        .then(pl.lit(value, dtype=df.schema[col]))
        .otherwise(pl.col(col))
        .alias(col)
    )


def test_clean_synthetic_bars_have_no_findings(bars):
    report = validate_bars(bars)
    assert report.warnings == []
    assert (report.rows, report.symbols) == (180, 3)


@pytest.mark.parametrize(
    ("col", "value", "check"),
    [
        ("close", None, "null"),
        ("open", float("nan"), "null"),
        ("symbol", "", "null"),
        ("ts", None, "null"),
        ("volume", float("inf"), "non_finite"),
        ("low", -1.0, "non_positive_price"),
        ("open", 0.0, "non_positive_price"),
        ("volume", -5.0, "negative_volume"),
    ],
)
def test_each_error_names_row_and_column(bars, col, value, check):
    bad = _set(bars, 7, col, value)
    with pytest.raises(DataValidationError) as info:
        validate_bars(bad, source="prices")
    err = info.value
    assert err.exit_code == 2
    assert f"prices row 7, column '{col}'" in str(err)
    assert err.issues[0]["check"] == check
    assert err.issues[0]["examples"][0]["location"] == "row 7"


def test_ohlc_inconsistency_high_and_low(bars):
    row = bars.row(10, named=True)
    bad = _set(bars, 10, "high", max(row["open"], row["close"]) * (1 - 1e-7))
    r20 = bars.row(20, named=True)  # low above min(open, close) but still below high
    bad = _set(bad, 20, "low", (min(r20["open"], r20["close"]) + r20["high"]) / 2)
    with pytest.raises(DataValidationError) as info:
        validate_bars(bad)
    (issue,) = info.value.issues
    assert issue["check"] == "ohlc_inconsistent"
    assert issue["count"] == 2  # row 10 (high) and row 20 (low)
    assert [(e["location"], e["column"]) for e in issue["examples"]] == [
        ("row 10", "high"),
        ("row 20", "low"),
    ]


def test_duplicate_key_reports_both_rows_in_input_order(bars):
    dup = pl.concat([bars, bars[[5]]])
    with pytest.raises(DataValidationError) as info:
        validate_bars(dup)
    (issue,) = info.value.issues
    assert issue["check"] == "duplicate_key"
    assert [e["location"] for e in issue["examples"]] == ["row 5", "row 180"]


def test_all_errors_are_counted_and_the_first_is_named(bars):
    bad = _set(_set(_set(bars, 3, "close", None), 4, "close", None), 9, "volume", -1.0)
    with pytest.raises(DataValidationError) as info:
        validate_bars(bad, source="f.csv", line_numbers=list(range(2, 182)))
    msg = str(info.value)
    assert msg.startswith("f.csv line 5, column 'close': null (null); 3 error(s)")
    assert "null x2" in msg and "negative_volume x1" in msg


def test_missing_column_is_an_error(bars):
    with pytest.raises(DataValidationError, match=r"missing required column.*volume"):
        validate_bars(bars.drop("volume"))


def test_zero_volume_is_a_warning_with_location(bars):
    report = validate_bars(_set(bars, 42, "volume", 0.0))
    w = report.get("zero_volume")
    assert (w.severity, w.count, w.examples[0]["location"]) == ("warning", 1, "row 42")


def test_unsorted_input_is_reported_exactly(bars):
    # rows 0..59 are SYM0000; swap rows 10 and 11 -> exactly one bar comes after a later one
    order = list(range(bars.height))
    order[10], order[11] = 11, 10
    report = validate_bars(bars[order])
    w = report.get("unsorted")
    assert w.count == 1
    assert w.examples[0]["location"] == "row 11"


def test_naive_and_date_timestamps_are_assumed_utc(bars):
    naive = bars.with_columns(pl.col("ts").dt.replace_time_zone(None))
    assert validate_bars(naive).get("naive_timestamp").count == 180
    dates = bars.with_columns(pl.col("ts").dt.date())
    assert validate_bars(dates).get("naive_timestamp").count == 180
    ny = bars.with_columns(pl.col("ts").dt.convert_time_zone("America/New_York"))
    assert validate_bars(ny).get("naive_timestamp") is None


def test_outlier_flags_exactly_the_planted_bar(bars):
    row = 30  # SYM0000, mid-series
    spiked = _set(bars, row, "close", bars["close"][row] * 3.0)
    spiked = _set(spiked, row, "high", bars["close"][row] * 3.0)
    report = validate_bars(spiked, outlier_z=15)
    w = report.get("outlier")
    # the spike up (row 30) and the fall back (row 31) are both one-bar outliers
    assert [e["location"] for e in w.examples] == ["row 30", "row 31"]
    assert validate_bars(spiked, outlier_z=1e6).get("outlier") is None


def test_a_price_whose_return_underflows_is_the_outlier_not_a_reason_to_skip_the_symbol(bars):
    """5e-324 is positive and finite (it passes validation) but its ratio to a normal price
    underflows: that log return is -inf, flagged, and the symbol's other bars keep their
    scores (median and MAD of the finite returns)."""
    row = 30
    tiny = bars
    for col in ("open", "high", "low", "close"):
        tiny = _set(tiny, row, col, 5e-324)  # the smallest positive double
    report = validate_bars(tiny, outlier_z=15)
    assert [e["location"] for e in report.get("outlier").examples] == ["row 30", "row 31"]
    scored = outlier_scores(tiny).filter(pl.col("symbol") == "SYM0000")
    z = scored["robust_z"].to_numpy()
    assert z[30] == -np.inf and z[31] == np.inf
    assert np.isfinite(z[1:30]).all() and np.isfinite(z[32:]).all()


def test_robust_z_matches_scipy_oracle(bars):
    scored = outlier_scores(bars)
    for sym, grp in scored.group_by("symbol"):
        close = bars.filter(pl.col("symbol") == sym[0]).sort("ts")["close"].to_numpy()
        r = np.diff(np.log(close))
        expected = (r - np.median(r)) / median_abs_deviation(r, scale="normal")
        got = grp.sort("ts")["robust_z"].to_numpy()[1:]
        np.testing.assert_allclose(got, expected, rtol=1e-10)
        assert grp.sort("ts")["robust_z"][0] is None


def test_short_series_are_not_scored():
    short = synthetic_universe(1, MIN_RETURNS_FOR_OUTLIERS, seed=1)  # 19 returns
    assert outlier_scores(short)["robust_z"].null_count() == short.height


def test_outlier_z_must_be_positive(bars):
    with pytest.raises(InputError, match="outlier-z"):
        validate_bars(bars, outlier_z=0)


def test_line_numbers_must_match_rows(bars):
    with pytest.raises(ValueError, match="line_numbers"):
        validate_bars(bars, line_numbers=[1, 2])


def test_ts_of_wrong_type_is_refused(bars):
    with pytest.raises(DataValidationError, match="column 'ts' has type Int64"):
        validate_bars(bars.with_columns(pl.col("ts").dt.epoch("s")))


def test_report_to_dict_round_trips_counts(bars):
    report = validate_bars(_set(bars, 1, "volume", 0.0))
    d = report.to_dict()
    assert d["rows"] == 180 and d["warnings"][0]["check"] == "zero_volume"
    assert datetime(2000, 1, 3, tzinfo=UTC) == bars["ts"][0]
