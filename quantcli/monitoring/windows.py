"""Where a drift window comes from: a PERIOD of the stored features, or a FILE.

Syntax of ``--baseline`` / ``--current``:

* ``START:END`` -- a PERIOD: rows of the stored feature table (``technical_features_v1`` for
  ``--feature-set technical_v1``) with ``START <= ts < END + 1 day``; dates are ISO
  ``YYYY-MM-DD`` in UTC and both ends are inclusive days. Either end may be empty:
  ``2024-01-01:`` (from that day on), ``:2017-12-31`` (up to that day).
* ``PATH.parquet`` / ``PATH.csv`` -- a FILE of features (one numeric column per feature;
  ``symbol`` and ``ts`` columns, if present, are keys and are not tested).
* ``PATH.npz`` -- a saved baseline profile (``--save-profile``); baseline only.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl

from quantcli.errors import InputError
from quantcli.monitoring.profile import BaselineProfile

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
    from quantcli.features.definitions import load_feature_set
    from quantcli.store.offline import OfflineStore

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
    spec: str,
    *,
    option: str = "--baseline",
    feature_set: str = "technical_v1",
    store_path: str | os.PathLike[str] | None = None,
    allow_profile: bool = True,
) -> tuple[pl.DataFrame | BaselineProfile, str]:
    """Resolve ``spec`` (PERIOD or FILE) into a frame or a profile, plus a source label."""
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
