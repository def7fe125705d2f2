"""Gaps in a symbol's bars against the expected bar spacing (the ``gap`` warning).

The expected spacing is an interval such as ``1d``, ``1h``, ``5m``, ``30s`` or ``1w``
(:func:`parse_interval`); when none is given it is inferred as the median spacing of
consecutive bars of the same symbol (:func:`infer_interval`; with fewer than ten spacings
nothing is inferred and nothing is reported). What counts as a gap between two
consecutive bars of one symbol:

* daily bars (``1d``), and intraday bars on different UTC dates: two or more **weekdays**
  without a bar in between. Weekends are not trading days and a single missing weekday is
  usually an exchange holiday; both would otherwise flood the report.
* intraday bars on the same UTC date, and bars longer than a day (``1w``): a spacing of at
  least 1.5 intervals, i.e. at least one bar missing.

Gaps are warnings, never errors: markets close (the bundled sample has SPX and IXIC closed
four weekdays after 2001-09-11). :func:`quantcli.data.validation.check_spacing` turns the
gaps into the ``gap`` warning.

A second finding, also a warning: a symbol whose **median** spacing differs from a declared
interval (``--interval``, or a feature set's ``frequency``) by more than a factor
:data:`SPACING_FACTOR` -- daily bars under an hourly declaration, or the reverse -- would be
mis-annualized and its labels mis-timed (:func:`mismatched_spacing`, :class:`SpacingReport`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
import polars as pl

from quantcli.errors import InputError
from quantcli.frequency import UNIT_SECONDS as _UNIT_SECONDS
from quantcli.frequency import parse_frequency

_DAY_US = 86_400_000_000
#: Weekdays in a row without a bar before daily (or overnight) spacing counts as a gap.
MISSING_WEEKDAYS_FOR_GAP: int = 2


def parse_interval(text: str, what: str = "--interval") -> timedelta:
    """``"1d"``, ``"4h"``, ``"5m"``, ``"30s"``, ``"1w"`` (any case) as a
    :class:`~datetime.timedelta`: the feature sets' ``frequency`` grammar
    (:func:`quantcli.frequency.parse_frequency`), with the option's name in the error."""
    try:
        return parse_frequency(text.lower() if isinstance(text, str) else text, what)
    except InputError:
        raise InputError(
            f"{what} must be a count and a unit such as 1d, 1h, 5m, 30s or 1w, got {text!r}"[:200]
        ) from None


def format_interval(step: timedelta) -> str:
    """``timedelta(days=1)`` -> ``"1d"``; a spacing no unit divides is shown in seconds."""
    seconds = int(step.total_seconds())
    for unit in ("w", "d", "h", "m"):
        if seconds and seconds % _UNIT_SECONDS[unit] == 0:
            return f"{seconds // _UNIT_SECONDS[unit]}{unit}"
    return f"{step.total_seconds():g}s"


def sorted_bars(bars: pl.DataFrame) -> pl.DataFrame:
    """``bars`` without null keys, stably sorted by ``(symbol, ts)``."""
    return bars.filter(pl.col("ts").is_not_null() & pl.col("symbol").is_not_null()).sort(
        "symbol", "ts", maintain_order=True
    )


def _deltas(srt: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ts in us, previous bar's ts in us, True where the previous bar is the same symbol's)."""
    ts = srt["ts"].dt.epoch("us").to_numpy()
    sym = srt["symbol"]
    same = (sym == sym.shift(1)).fill_null(False).to_numpy()
    prev = np.empty_like(ts)
    if ts.size:
        prev[0] = ts[0]
        prev[1:] = ts[:-1]
    return ts, prev, same


#: Fewer spacings than this infer nothing (the median of three spacings is noise).
MIN_SPACINGS_TO_INFER: int = 10


def infer_interval(bars: pl.DataFrame, *, presorted: bool = False) -> timedelta | None:
    """The median spacing of consecutive bars of the same symbol; ``None`` with fewer than
    :data:`MIN_SPACINGS_TO_INFER` such pairs. ``presorted``: ``bars`` are already sorted by
    ``(symbol, ts)`` without null keys."""
    ts, prev, same = _deltas(bars if presorted else sorted_bars(bars))
    delta = (ts - prev)[same]
    delta = delta[delta > 0]
    if delta.size < MIN_SPACINGS_TO_INFER:
        return None
    return timedelta(microseconds=int(np.median(delta)))


def find_gaps(srt: pl.DataFrame, step: timedelta, max_details: int) -> tuple[np.ndarray, list[str]]:
    """Row indices of ``srt`` (sorted by ``(symbol, ts)``, no nulls) that follow a gap, and a
    description of the first ``max_details`` of them."""
    if step <= timedelta(0):
        raise InputError(f"`interval` must be positive, got {step}")
    ts, prev, same = _deltas(srt)
    step_us = step // timedelta(microseconds=1)
    day, prev_day = ts // _DAY_US, prev // _DAY_US
    # weekdays strictly between the two bars' UTC dates
    between = np.zeros(ts.shape, dtype=np.int64)
    later = same & (day > prev_day + 1)
    if later.any():
        between[later] = np.busday_count(
            (prev_day[later] + 1).astype("datetime64[D]"), day[later].astype("datetime64[D]")
        )
    by_weekdays = same & (between >= MISSING_WEEKDAYS_FOR_GAP)
    if step_us == _DAY_US:
        gap = by_weekdays
    elif step_us < _DAY_US:
        gap = by_weekdays | (same & (day == prev_day) & (2 * (ts - prev) >= 3 * step_us))
    else:
        gap = same & (2 * (ts - prev) >= 3 * step_us)
    idx = np.flatnonzero(gap)
    label = format_interval(step)
    details = []
    for i in idx[:max_details].tolist():
        before, after = srt["ts"][i - 1], srt["ts"][i]
        if step_us <= _DAY_US and day[i] != prev_day[i]:
            missing = f"{int(between[i])} weekday(s) without a bar"
        else:
            missing = f"{round((ts[i] - prev[i]) / step_us) - 1} bar(s) missing"
        details.append(
            f"{srt['symbol'][i]}: {missing} between {before:%Y-%m-%d %H:%M} and "
            f"{after:%Y-%m-%d %H:%M} (interval {label})"
        )
    return idx, details


#: How far a symbol's median bar spacing may stray from the declared interval.
SPACING_FACTOR = 1.5


@dataclass(frozen=True)
class SpacingReport:
    """Symbols whose bars contradict a declared interval, and the gaps against it (warnings).

    ``frequency`` is the declared interval as written (``"1d"``), ``declared_by`` who declared
    it (``"--interval"``, ``"the feature set technical_v1"``); ``mismatched`` maps a symbol to
    its median spacing (``str`` of a :class:`~datetime.timedelta`).
    """

    frequency: str
    mismatched: dict[str, str] = field(default_factory=dict)
    gaps: int = 0
    gap_examples: list[str] = field(default_factory=list)
    declared_by: str = "the feature set"

    @property
    def ok(self) -> bool:
        return not self.mismatched and not self.gaps

    def messages(self) -> list[str]:
        out = []
        if self.mismatched:
            shown = ", ".join(f"{s} ({d})" for s, d in list(self.mismatched.items())[:5])
            more = len(self.mismatched) - 5
            out.append(
                f"bars of {len(self.mismatched)} symbol(s) are not spaced {self.frequency} as "
                f"{self.declared_by} declares (median spacing): {shown}"
                + (f" and {more} more" if more > 0 else "")
            )
        if self.gaps:
            out.append(
                f"{self.gaps} gap(s) against the {self.frequency} interval, e.g. "
                + "; ".join(self.gap_examples[:2])
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"frequency": self.frequency, "mismatched": self.mismatched, "gaps": self.gaps,
                "messages": self.messages()}  # fmt: skip


def mismatched_spacing(bars: pl.DataFrame, interval: timedelta) -> dict[str, str]:
    """``symbol -> median spacing`` of the symbols of ``bars`` (columns ``symbol, ts``, any
    order) whose median spacing is more than :data:`SPACING_FACTOR` away from ``interval``."""
    medians = (
        bars.select("symbol", "ts")
        .sort("symbol", "ts")
        .with_columns(pl.col("ts").diff().over("symbol").alias("step"))
        .group_by("symbol", maintain_order=True)
        .agg(pl.col("step").drop_nulls().median())
        .drop_nulls("step")
    )
    mismatched = {}
    for symbol, step in medians.iter_rows():
        ratio = step / interval
        if ratio > SPACING_FACTOR or ratio < 1 / SPACING_FACTOR:
            mismatched[str(symbol)] = str(step)
    return mismatched


def stored_bar_times(store: Any, symbols: list[str] | None = None) -> pl.DataFrame:
    """``symbol, ts`` of the offline store's ``bars`` (only ``symbols`` if given)."""
    sql = "SELECT symbol, ts FROM bars"
    params: list[Any] = []
    if symbols:
        sql += " WHERE symbol IN (SELECT unnest(?))"
        params.append(list(symbols))
    return store.con.sql(sql, params=params).pl()


__all__ = [
    "MIN_SPACINGS_TO_INFER",
    "MISSING_WEEKDAYS_FOR_GAP",
    "SPACING_FACTOR",
    "SpacingReport",
    "find_gaps",
    "format_interval",
    "infer_interval",
    "mismatched_spacing",
    "parse_interval",
    "sorted_bars",
    "stored_bar_times",
]
