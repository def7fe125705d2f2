"""PERIOD syntax and FILE windows of `qcli monitor drift`."""

from __future__ import annotations

from datetime import UTC, date, datetime

import polars as pl
import pytest

from quantcli.errors import InputError
from quantcli.monitoring.windows import load_window, parse_period, read_period


def test_period_bounds_are_inclusive_days_utc():
    p = parse_period("2017-01-01:2017-12-31")
    assert (p.start, p.end) == (date(2017, 1, 1), date(2017, 12, 31))
    assert p.start_ts == datetime(2017, 1, 1, tzinfo=UTC)
    assert p.end_ts_exclusive == datetime(2018, 1, 1, tzinfo=UTC)
    assert str(parse_period("2018-01-01:")) == "2018-01-01:"
    assert parse_period(":2016-12-31").start_ts is None


@pytest.mark.parametrize("text", [":", "2017-01-01", "2017/01/01:2017/02/01", "2017-02-30:"])
def test_bad_periods_name_the_option(text):
    with pytest.raises(InputError, match=r"^--current "):
        parse_period(text, "--current")


def test_read_period_selects_exactly_the_days(feature_store):
    df = read_period(parse_period("2017-03-01:2017-03-03"))
    days = sorted({t.date() for t in df["ts"].to_list()})
    assert days == [date(2017, 3, 1), date(2017, 3, 2), date(2017, 3, 3)]
    assert df.height == 3 * 3  # three symbols


def test_file_windows_and_non_numeric_features(tmp_path):
    from quantcli.monitoring.drift import DriftDetector

    csv = tmp_path / "f.csv"
    pl.DataFrame({"x": [1.0, 2.0, 3.0], "name": ["a", "b", "c"]}).write_csv(csv)
    frame, source = load_window(str(csv), option="--current")
    assert source == str(csv) and frame.columns == ["x", "name"]
    with pytest.raises(InputError, match="feature 'name' has dtype String, not numeric"):
        DriftDetector().detect_feature_drift(frame, frame, features=["name"])
    txt = tmp_path / "f.txt"
    txt.write_text("x\n1\n")
    with pytest.raises(InputError, match=r"unsupported file type '\.txt'"):
        load_window(str(txt))
    empty = tmp_path / "e.csv"
    empty.write_text("x\n")
    with pytest.raises(InputError, match="the file has no rows"):
        load_window(str(empty))
