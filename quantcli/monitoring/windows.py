"""Where a drift window comes from: a PERIOD of the stored features, or a FILE.

Syntax of ``--baseline`` / ``--current``:

* ``START:END`` -- a PERIOD: rows of the stored feature table (``technical_features_v1`` for
  ``--feature-set technical_v1``) with ``START <= ts < END + 1 day``; dates are ISO
  ``YYYY-MM-DD`` in UTC and both ends are inclusive days. Either end may be empty:
  ``2024-01-01:`` (from that day on), ``:2017-12-31`` (up to that day).
* ``PATH.parquet`` / ``PATH.csv`` -- a FILE of features (one numeric column per feature;
  ``symbol`` and ``ts`` columns, if present, are keys and are not tested).
* ``PATH.npz`` -- a saved baseline profile (``--save-profile``); baseline only.

Relative windows (``--last`` / ``--baseline-last DURATION``), resolved against the **latest
bar of the stored feature table** (its largest ``ts``), never the wall clock, so a re-run on the
same store reads the same rows:

* ``DURATION`` is ``N`` followed by a unit: ``d`` calendar days, ``w`` weeks (7 calendar days),
  ``m`` calendar months, ``y`` years (12 months). Calendar, not trading, days: ``63d`` is nine
  weeks; a quarter of about 63 trading days is ``3m`` or ``13w``.
* ``--last D`` is the PERIOD of UTC days ``(E - D) .. latest``, where ``latest`` is the day of
  the latest bar and ``E = latest + 1 day`` the exclusive end: ``--last 63d`` holds exactly 63
  calendar days ending on the latest bar's day; ``--last 3m`` with the latest bar on 2018-12-31
  is 2018-10-01:2018-12-31. Months step back to the same day of the month, clipped to the
  month's last day (2024-05-31 minus 3 months is 2024-02-29).
* ``--baseline-last D`` is the PERIOD of length ``D`` immediately before the current window:
  it ends the day before the current window starts, so the two never overlap. It needs a
  current window with a start day (``--last``, or a ``--current START:...`` PERIOD).
"""

from __future__ import annotations

import calendar
import os
import re
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl

from quantcli.errors import InputError
from quantcli.features.definitions import load_feature_set
from quantcli.monitoring.profile import BaselineProfile
from quantcli.store.offline import OfflineStore

_DURATION = re.compile(r"^(?P<n>[1-9]\d{0,4})(?P<unit>[dwmy])$")
_UNIT_NAMES = {"d": "calendar days", "w": "weeks", "m": "calendar months", "y": "years"}
_PERIOD = re.compile(r"^(?P<start>\d{4}-\d{2}-\d{2})?:(?P<end>\d{4}-\d{2}-\d{2})?$")
_FRAME_SUFFIXES = (".parquet", ".csv")
_PROFILE_SUFFIXES = (".npz",)


@dataclass(frozen=True)
class Period:
    """An inclusive range of UTC days; ``None`` leaves an end open."""

    start: date | None
    end: date | None

    @property
    def start_ts(self) -> datetime | None:
        return datetime.combine(self.start, datetime.min.time(), UTC) if self.start else None

    @property
    def end_ts_exclusive(self) -> datetime | None:
        if self.end is None:
            return None
        return datetime.combine(self.end + timedelta(days=1), datetime.min.time(), UTC)

    def __str__(self) -> str:
        return f"{self.start or ''}:{self.end or ''}"


def parse_period(text: str, option: str = "--baseline") -> Period:
    """Parse ``START:END`` (ISO dates, either end may be empty); InputError names the option."""
    m = _PERIOD.match(text.strip())
    if not m or (m["start"] is None and m["end"] is None):
        raise InputError(
            f"{option} {text!r}: neither an existing file nor a period START:END",
            hint="a period looks like 2017-01-01:2017-12-31 (either end may be empty); "
            "a file ends in .parquet, .csv or (baseline only) .npz",
        )
    try:
        start = date.fromisoformat(m["start"]) if m["start"] else None
        end = date.fromisoformat(m["end"]) if m["end"] else None
    except ValueError as exc:
        raise InputError(f"{option} {text!r}: {exc}") from None
    if start and end and end < start:
        raise InputError(f"{option} {text!r}: the period ends before it starts")
    return Period(start, end)


@dataclass(frozen=True)
class Duration:
    """A calendar length such as ``63d``, ``13w``, ``3m`` or ``1y`` (see the module docstring)."""

    n: int
    unit: str  # "d", "w", "m" or "y"

    def __str__(self) -> str:
        return f"{self.n}{self.unit}"

    def start_before(self, end_exclusive: date) -> date:
        """The first day of the window of this length that ends just before ``end_exclusive``."""
        if self.unit in ("d", "w"):
            return end_exclusive - timedelta(days=self.n * (7 if self.unit == "w" else 1))
        months = self.n * (12 if self.unit == "y" else 1)
        y, m = divmod(end_exclusive.year * 12 + end_exclusive.month - 1 - months, 12)
        if y < 1:
            raise InputError(f"duration {self} reaches before the year 1")
        m += 1
        return date(y, m, min(end_exclusive.day, calendar.monthrange(y, m)[1]))


def parse_duration(text: str, option: str = "--last") -> Duration:
    """Parse ``N`` + ``d|w|m|y`` (``63d``, ``13w``, ``3m``, ``1y``); InputError names the option."""
    m = _DURATION.match(text.strip().lower())
    if not m:
        raise InputError(
            f"{option} {text!r}: not a duration",
            hint="a duration is a whole number and a unit: 63d (calendar days), 13w (weeks), "
            "3m (calendar months) or 1y (years)",
        )
    return Duration(int(m["n"]), m["unit"])


def last_period(duration: Duration, latest: date) -> Period:
    """The PERIOD of length ``duration`` ending on the day ``latest`` (inclusive)."""
    return Period(duration.start_before(latest + timedelta(days=1)), latest)


def period_before(duration: Duration, start: date) -> Period:
    """The PERIOD of length ``duration`` that ends the day before ``start``."""
    return Period(duration.start_before(start), start - timedelta(days=1))


def latest_feature_ts(
    *, feature_set: str = "technical_v1", store_path: str | os.PathLike[str] | None = None
) -> datetime | None:
    """The latest ``ts`` (UTC) of the stored feature table of ``feature_set``, or None if empty."""
    table = load_feature_set(feature_set).table
    with OfflineStore(store_path, read_only=True) as store:
        store.require_table(table, hint=f"run `qcli features build --feature-set {feature_set}`")
        # `table` comes from the feature-set declaration, never from user text
        row = store.con.cursor().execute(f'SELECT max(ts) FROM "{table}"').fetchone()
    return row[0].astimezone(UTC) if row and row[0] is not None else None


@dataclass(frozen=True)
class DriftWindows:
    """The two windows of a drift check once the options are resolved.

    ``baseline`` and ``current`` are a spec string (PERIOD or FILE, as given) or a
    :class:`Period` resolved from a relative option; ``*_option`` names the option each came
    from (``--last 63d``), for messages and source labels; ``latest_ts`` is the latest stored
    bar the relative windows were resolved against (None when none was asked for).
    """

    baseline: str | Period
    current: str | Period
    baseline_option: str = "--baseline"
    current_option: str = "--current"
    latest_ts: datetime | None = None

    def to_dict(self) -> dict[str, str | None]:
        """``{baseline, current, baseline_option, current_option, latest_bar}`` (JSON-ready)."""
        return {
            "baseline": str(self.baseline),
            "current": str(self.current),
            "baseline_option": self.baseline_option,
            "current_option": self.current_option,
            "latest_bar": self.latest_ts.isoformat() if self.latest_ts else None,
        }


def _one_of(explicit: str | None, relative: str | None, names: tuple[str, str]) -> None:
    if explicit is not None and relative is not None:
        raise InputError(
            f"{names[0]} and {names[1]} are mutually exclusive: give one",
            hint=f"{names[0]} START:END or FILE is an explicit window, {names[1]} DURATION "
            "(e.g. 63d, 13w, 3m) a window relative to the latest stored bar",
        )
    if explicit is None and relative is None:
        raise InputError(
            f"missing window: give {names[0]} START:END|FILE or {names[1]} DURATION",
            hint="e.g. --baseline 2016-01-01:2017-12-31 --last 63d",
        )


def resolve_windows(
    baseline: str | None = None,
    current: str | None = None,
    *,
    last: str | None = None,
    baseline_last: str | None = None,
    feature_set: str = "technical_v1",
    store_path: str | os.PathLike[str] | None = None,
) -> DriftWindows:
    """Resolve ``--baseline``/``--baseline-last`` and ``--current``/``--last`` into windows.

    Exactly one option of each pair must be given (:class:`InputError` naming both otherwise).
    Relative windows are anchored on the latest stored bar of ``feature_set`` (see the module
    docstring), so the result depends on the store, never on today's date.
    """
    _one_of(current, last, ("--current", "--last"))
    _one_of(baseline, baseline_last, ("--baseline", "--baseline-last"))
    cur_len = parse_duration(last, "--last") if last is not None else None
    base_len = parse_duration(baseline_last, "--baseline-last") if baseline_last else None
    windows = DriftWindows(baseline or "", current or "")
    if cur_len is not None:
        latest_ts = latest_feature_ts(feature_set=feature_set, store_path=store_path)
        if latest_ts is None:
            raise InputError(
                f"--last {last}: the feature table of {feature_set} has no rows to anchor on",
                hint=f"run `qcli features build --feature-set {feature_set}`",
            )
        windows = replace(
            windows,
            current=last_period(cur_len, latest_ts.date()),
            current_option=f"--last {cur_len}",
            latest_ts=latest_ts,
        )
    if base_len is not None:
        cur = windows.current
        start = cur.start if isinstance(cur, Period) else _period_start(cur)
        if start is None:
            raise InputError(
                f"--baseline-last {baseline_last}: the current window has no start day",
                hint="--baseline-last is the window just before the current one: give --last "
                "DURATION or --current START:END (a period, not a file)",
            )
        windows = replace(
            windows,
            baseline=period_before(base_len, start),
            baseline_option=f"--baseline-last {base_len}",
        )
    return windows


def _period_start(spec: str) -> date | None:
    """The start day of ``spec`` if it is a PERIOD (not a file) with a start, else None."""
    if Path(spec).expanduser().suffix.lower() in (*_FRAME_SUFFIXES, *_PROFILE_SUFFIXES):
        return None
    if Path(spec).expanduser().is_file():
        return None
    return parse_period(spec, "--current").start


def read_feature_file(path: Path, option: str) -> pl.DataFrame:
    """Read a Parquet or CSV file of features; errors name the file and the option."""
    try:
        if path.suffix.lower() == ".parquet":
            df = pl.read_parquet(path)
        else:
            df = pl.read_csv(path, try_parse_dates=True, infer_schema_length=10_000)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise InputError(f"{option} {path}: cannot read the file ({exc})") from None
    if df.height == 0:
        raise InputError(f"{option} {path}: the file has no rows")
    return df


def read_period(
    period: Period,
    *,
    feature_set: str = "technical_v1",
    store_path: str | os.PathLike[str] | None = None,
    option: str = "--baseline",
) -> pl.DataFrame:
    """The rows of the stored feature table within ``period`` (sorted by symbol, ts)."""
    table = load_feature_set(feature_set).table
    where, params = [], []
    if period.start_ts is not None:
        where.append("ts >= ?")
        params.append(period.start_ts)
    if period.end_ts_exclusive is not None:
        where.append("ts < ?")
        params.append(period.end_ts_exclusive)
    with OfflineStore(store_path, read_only=True) as store:
        store.require_table(table, hint=f"run `qcli features build --feature-set {feature_set}`")
        # `table` comes from the feature-set declaration, never from user text
        # a fresh cursor: duckdb refuses a new relation while require_table's result is open
        df = (
            store.con.cursor()
            .sql(
                f'SELECT * FROM "{table}" WHERE {" AND ".join(where)} ORDER BY symbol, ts',
                params=params,
            )
            .pl()
        )
    if df.height == 0:
        raise InputError(
            f"{option} {period}: no rows of {table} in that period",
            hint="check the dates against `qcli features show`",
        )
    return df


def load_window(
    spec: str | Period,
    *,
    option: str = "--baseline",
    feature_set: str = "technical_v1",
    store_path: str | os.PathLike[str] | None = None,
    allow_profile: bool = True,
) -> tuple[pl.DataFrame | BaselineProfile, str]:
    """Resolve ``spec`` (PERIOD or FILE, or a resolved :class:`Period`) into a frame or a
    profile, plus a source label."""
    if isinstance(spec, Period):
        frame = read_period(spec, feature_set=feature_set, store_path=store_path, option=option)
        return frame, f"period {spec} of the stored features ({option})"
    path = Path(spec).expanduser()
    suffix = path.suffix.lower()
    if suffix in _PROFILE_SUFFIXES:
        if not allow_profile:
            raise InputError(f"{option} {spec}: a profile can only be the baseline")
        if not path.is_file():
            raise InputError(f"{option} {spec}: profile file not found")
        return BaselineProfile.load(path), str(path)
    if suffix in _FRAME_SUFFIXES:
        if not path.is_file():
            raise InputError(f"{option} {spec}: file not found")
        return read_feature_file(path, option), str(path)
    if path.is_file():
        raise InputError(
            f"{option} {spec}: unsupported file type '{path.suffix}'",
            hint="use .parquet or .csv (features) or .npz (a saved baseline profile)",
        )
    period = parse_period(spec, option)
    frame = read_period(period, feature_set=feature_set, store_path=store_path, option=option)
    return frame, f"period {period} of the stored features"
