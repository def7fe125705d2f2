"""PERIOD syntax and FILE windows of `qcli monitor drift`."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from quantcli.errors import InputError
from quantcli.features import load_feature_set
from quantcli.monitoring.windows import (
    last_period,
    load_window,
    parse_duration,
    parse_period,
    period_before,
    read_period,
    resolve_windows,
)


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


# -- relative windows (--last / --baseline-last) -----------------------------------------------
@pytest.mark.parametrize(
    ("text", "latest", "expected"),
    [
        ("63d", date(2018, 12, 31), "2018-10-30:2018-12-31"),  # exactly 63 calendar days
        ("1d", date(2018, 12, 31), "2018-12-31:2018-12-31"),
        ("13w", date(2018, 12, 31), "2018-10-02:2018-12-31"),  # 91 days
        ("3m", date(2018, 12, 31), "2018-10-01:2018-12-31"),  # whole calendar months
        ("3m", date(2024, 5, 30), "2024-02-29:2024-05-30"),  # 2024-05-31 - 3m, clipped
        ("1m", date(2024, 3, 30), "2024-02-29:2024-03-30"),  # 03-31 - 1m = 02-31 -> 02-29
        ("1y", date(2024, 2, 28), "2023-02-28:2024-02-28"),  # 2024-02-29 - 1y -> 2023-02-28
        ("2Y", date(2018, 12, 31), "2017-01-01:2018-12-31"),  # units are case-insensitive
    ],
)
def test_last_period_calendar_convention(text, latest, expected):
    p = last_period(parse_duration(text), latest)
    assert str(p) == expected
    if text.endswith("d"):
        assert (p.end - p.start).days + 1 == int(text[:-1])


@given(
    latest=st.dates(min_value=date(1990, 1, 1), max_value=date(2100, 12, 31)),
    n=st.integers(1, 400),
    unit=st.sampled_from("dwmy"),
)
def test_durations_step_back_like_dateutil_relativedelta(latest, n, unit):
    """Differential: the window start is ``(latest + 1 day) - relativedelta(...)``."""
    from dateutil.relativedelta import relativedelta

    step = {"d": relativedelta(days=n), "w": relativedelta(weeks=n)}.get(unit)
    step = step or relativedelta(months=n * (12 if unit == "y" else 1))
    p = last_period(parse_duration(f"{n}{unit}"), latest)
    assert p.end == latest
    assert p.start == latest + timedelta(days=1) - step


def test_period_before_ends_the_day_before():
    assert str(period_before(parse_duration("1y"), date(2018, 10, 1))) == "2017-10-01:2018-09-30"
    assert str(period_before(parse_duration("63d"), date(2018, 10, 30))) == (
        "2018-08-28:2018-10-29"
    )


@pytest.mark.parametrize("text", ["", "63", "d", "0d", "-3d", "3 months", "1.5m", "3q", "63dd"])
def test_bad_durations_name_the_option(text):
    with pytest.raises(InputError, match=r"^--baseline-last .*not a duration"):
        parse_duration(text, "--baseline-last")


def test_relative_windows_anchor_on_the_latest_stored_bar(feature_store):
    w = resolve_windows(last="63d", baseline_last="1y")
    assert w.latest_ts == datetime(2018, 12, 31, tzinfo=UTC)  # not today: the store's last bar
    assert (str(w.current), str(w.baseline)) == ("2018-10-30:2018-12-31", "2017-10-30:2018-10-29")
    assert (w.current_option, w.baseline_option) == ("--last 63d", "--baseline-last 1y")
    frame, source = load_window(w.current, option=w.current_option)
    assert source == "period 2018-10-30:2018-12-31 of the stored features (--last 63d)"
    assert frame.height == 3 * 45  # three symbols x the 45 weekdays of the window
    # --baseline-last also follows an explicit --current period
    w = resolve_windows(current="2018-10-01:", baseline_last="1y")
    assert (str(w.baseline), w.current, w.latest_ts) == (
        "2017-10-01:2018-09-30",
        "2018-10-01:",
        None,
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"baseline": "a.npz", "current": "2018-01-01:", "last": "3m"},
         "--current and --last are mutually exclusive"),
        ({"baseline": "a.npz", "baseline_last": "1y", "last": "3m"},
         "--baseline and --baseline-last are mutually exclusive"),
        ({"baseline": "a.npz"}, "missing window: give --current START:END|FILE or --last"),
        ({"last": "3m"}, "missing window: give --baseline START:END|FILE or --baseline-last"),
        ({"current": "cur.parquet", "baseline_last": "1y"},
         "--baseline-last 1y: the current window has no start day"),
        ({"current": ":2018-06-30", "baseline_last": "1y"},
         "--baseline-last 1y: the current window has no start day"),
    ],
)  # fmt: skip
def test_window_options_are_checked_before_reading(kwargs, message):
    with pytest.raises(InputError, match=re.escape(message)):
        resolve_windows(**kwargs)


def test_last_on_an_empty_feature_table_is_an_input_error(qcli_home):
    from quantcli.store.offline import OfflineStore

    with OfflineStore() as store:
        store.con.execute(load_feature_set("technical_v1").table_ddl())
    with pytest.raises(InputError, match=r"--last 3m: the feature table of technical_v1 has no"):
        resolve_windows(baseline="2017-01-01:", last="3m")
