"""Data-quality checks on OHLCV bars, each with a severity.

Errors refuse the whole input (:class:`~quantcli.errors.DataValidationError`, exit code 2, the
message naming the source, the line and the column); warnings are returned in a
:class:`QualityReport` and recorded with the ingest.

=====================  ========  ==============================================================
check                  severity  condition
=====================  ========  ==============================================================
``missing_column``     error     one of ``symbol, ts, open, high, low, close, volume`` is absent
``unparseable``        error     a date or a number that cannot be parsed (reader)
``null``               error     a null or NaN value in any column, or an empty symbol
``invalid_symbol``     error     a symbol that breaks the one symbol rule
                                 (:mod:`quantcli.data.symbols`: 1-32 letters, digits, ``.-_^=/``)
``implausible_ts``     error     ``ts`` outside the plausibility window (default 1900-01-01 to
                                 one day after now, :mod:`quantcli.data.window`)
``leap_second``        error     a ``23:59:60`` time (reader; it would roll into the next minute)
``non_finite``         error     a price or volume of +/-inf
``non_positive_price`` error     ``open``, ``high``, ``low`` or ``close`` <= 0
``ohlc_inconsistent``  error     ``high < max(open, close, low)`` or
                                 ``low > min(open, close, high)``
``negative_volume``    error     ``volume < 0``
``duplicate_key``      error     the key ``(symbol, ts)`` occurs more than once
``zero_volume``        warning   ``volume == 0`` (e.g. index data on a half-day)
``unsorted``           warning   ``ts`` goes backwards within a symbol (input order, files in
                                 the order given); the bars are sorted
``naive_timestamp``    warning   a date-only or time-zone-naive timestamp, assumed UTC
``gap``                warning   bars missing against the expected spacing (``interval``, by
                                 default the median spacing; :mod:`quantcli.data.spacing`)
``outlier``            warning   a one-bar log return of ``close`` whose robust z-score exceeds
                                 ``outlier_z`` (see below)
=====================  ========  ==============================================================

The outlier score (a robust z-score of the one-bar log return) is defined in
:mod:`quantcli.data.outliers`; the findings and reports are :mod:`quantcli.data.quality`'s.

Locations: a CSV row is named by its **file line number** (the header is line 1, so the first
bar is line 2); a Parquet row or a frame row by its **0-based row index** ("row 0").
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import polars as pl

from quantcli._interop import to_polars
from quantcli.data.defaults import DEFAULT_OUTLIER_Z
from quantcli.data.normal_form import coerce_columns, with_locations
from quantcli.data.outliers import MIN_RETURNS_FOR_OUTLIERS, outlier_issue, outlier_scores
from quantcli.data.quality import (
    LINE_COL,
    MAX_EXAMPLES,
    NAIVE_COL,
    NUMERIC_COLUMNS,
    PRICE_COLUMNS,
    REQUIRED_COLUMNS,
    ROW_COL,
    SOURCE_COL,
    QualityIssue,
    QualityReport,
    issue_from_rows,
    location_label,
    merge_issues,
    printable,
    raise_for,
)
from quantcli.data.spacing import find_gaps, infer_interval, parse_interval, sorted_bars
from quantcli.data.symbols import POLARS_SYMBOL_PATTERN, SYMBOL_RULE
from quantcli.data.window import TimestampWindow
from quantcli.errors import InputError


def _ts_text() -> pl.Expr:
    """``ts`` as ``YYYY-MM-DD HH:MM:SS`` (UTC) for messages."""
    return pl.col("ts").dt.strftime("%Y-%m-%d %H:%M:%S")


def _fmt(col: str) -> pl.Expr:
    return pl.format("{}={}", pl.lit(col), pl.col(col))


def _error_checks(
    df: pl.DataFrame, kinds: dict[str, str], window: TimestampWindow
) -> list[QualityIssue]:
    """Every error finding of ``df`` but duplicates, in the order of the module docstring."""
    issues = _key_errors(df, kinds, window) + _value_errors(df, kinds)
    return [i for i in issues if i is not None]


def _key_errors(
    df: pl.DataFrame, kinds: dict[str, str], window: TimestampWindow
) -> list[QualityIssue | None]:
    """Nulls, symbols that break the rule, timestamps outside the window."""
    issues: list[QualityIssue | None] = []
    for col in REQUIRED_COLUMNS:
        bad = pl.col(col).is_null()
        if col in NUMERIC_COLUMNS:
            bad = bad | pl.col(col).is_nan()
        if col == "symbol":
            bad = bad | (pl.col(col).str.strip_chars() == "")
        rows = df.filter(bad)
        detail = pl.lit("null") if col != "symbol" else pl.lit("null or empty")
        issues.append(
            issue_from_rows("null", "error", rows, column=col, detail=detail, kinds=kinds)
        )
    sym = pl.col("symbol")
    # the rule is checked once per distinct symbol, not once per bar
    names = df.select(sym.unique()).filter(sym.is_not_null() & (sym.str.strip_chars() != ""))
    bad = names.filter(~sym.str.contains(POLARS_SYMBOL_PATTERN))["symbol"]
    rows = df.filter(sym.is_in(bad.implode())) if bad.len() else df.clear()
    issues.append(
        issue_from_rows(
            "invalid_symbol",
            "error",
            rows,
            column="symbol",
            detail=pl.format("symbol '{}' is not {}", printable(sym), pl.lit(SYMBOL_RULE)),
            kinds=kinds,
        )
    )
    outside = (pl.col("ts") < window.earliest) | (pl.col("ts") > window.latest)
    issues.append(
        issue_from_rows(
            "implausible_ts",
            "error",
            df.filter(outside.fill_null(False)),
            column="ts",
            detail=pl.format("ts={} is outside {}", _ts_text(), pl.lit(window.describe())),
            kinds=kinds,
        )
    )
    return issues


def _value_errors(df: pl.DataFrame, kinds: dict[str, str]) -> list[QualityIssue | None]:
    """Infinite values, prices <= 0, inconsistent OHLC, negative volume."""
    issues: list[QualityIssue | None] = []
    for col in NUMERIC_COLUMNS:
        rows = df.filter(pl.col(col).is_infinite())
        issues.append(
            issue_from_rows("non_finite", "error", rows, column=col, detail=_fmt(col), kinds=kinds)
        )
    for col in PRICE_COLUMNS:
        rows = df.filter(pl.col(col) <= 0)
        issues.append(
            issue_from_rows(
                "non_positive_price", "error", rows, column=col, detail=_fmt(col), kinds=kinds
            )
        )
    hi_floor = pl.max_horizontal("open", "close", "low")
    rows = df.filter(pl.col("high") < hi_floor)
    issues.append(
        issue_from_rows(
            "ohlc_inconsistent",
            "error",
            rows,
            column="high",
            detail=pl.format("high={} is below max(open, close, low)={}", pl.col("high"), hi_floor),
            kinds=kinds,
        )
    )
    lo_cap = pl.min_horizontal("open", "close", "high")
    rows = df.filter(pl.col("low") > lo_cap)
    issues.append(
        issue_from_rows(
            "ohlc_inconsistent",
            "error",
            rows,
            column="low",
            detail=pl.format("low={} is above min(open, close, high)={}", pl.col("low"), lo_cap),
            kinds=kinds,
        )
    )
    rows = df.filter(pl.col("volume") < 0)
    issues.append(
        issue_from_rows(
            "negative_volume", "error", rows, column="volume", detail=_fmt("volume"), kinds=kinds
        )
    )
    return [i for i in issues if i is not None]


def _duplicates(srt: pl.DataFrame, kinds: dict[str, str]) -> QualityIssue | None:
    """Rows whose key (symbol, ts) equals a neighbour's in the frame sorted by the key.

    Adjacency in the sorted frame finds every duplicate in O(n) after the one sort the ingest
    needs anyway; a hash-based ``is_duplicated`` on the struct key is far slower.
    """
    same_prev = (pl.col("symbol") == pl.col("symbol").shift(1)) & (
        pl.col("ts") == pl.col("ts").shift(1)
    )
    same_next = (pl.col("symbol") == pl.col("symbol").shift(-1)) & (
        pl.col("ts") == pl.col("ts").shift(-1)
    )
    rows = srt.filter(same_prev.fill_null(False) | same_next.fill_null(False)).sort(
        SOURCE_COL, LINE_COL
    )
    return issue_from_rows(
        "duplicate_key",
        "error",
        rows,
        column="ts",
        detail=pl.format("(symbol, ts) = ({}, {}) occurs more than once", "symbol", _ts_text()),
        kinds=kinds,
    )


def _warning_checks(
    df: pl.DataFrame,
    srt: pl.DataFrame,
    kinds: dict[str, str],
    outlier_z: float,
    interval: str | timedelta | None,
) -> list[QualityIssue]:
    """Warnings; ``srt`` is ``df`` stably sorted by ``(symbol, ts)`` (input order on ties)."""
    issues: list[QualityIssue | None] = []
    rows = df.filter(pl.col("volume") == 0)
    issues.append(
        issue_from_rows(
            "zero_volume",
            "warning",
            rows,
            column="volume",
            detail=pl.format("{} {}: volume=0", "symbol", pl.col("ts").dt.date()),
            kinds=kinds,
        )
    )
    # In input order a bar whose ts is below the previous bar's of the same symbol is out of
    # order. Equivalently, in key order: a bar that appeared in the input after the next bar.
    same_next = pl.col("symbol") == pl.col("symbol").shift(-1)
    rows = srt.filter((same_next & (pl.col(ROW_COL) > pl.col(ROW_COL).shift(-1))).fill_null(False))
    issues.append(
        issue_from_rows(
            "unsorted",
            "warning",
            rows.sort(ROW_COL),
            column="ts",
            detail=pl.format("{} {} comes after a later bar", "symbol", _ts_text()),
            kinds=kinds,
        )
    )
    if NAIVE_COL in df.columns:
        rows = df.filter(pl.col(NAIVE_COL))
        issues.append(
            issue_from_rows(
                "naive_timestamp",
                "warning",
                rows,
                column="ts",
                detail=pl.format(
                    "{} {}: no time zone, read as UTC",
                    "symbol",
                    pl.col("ts").dt.strftime("%Y-%m-%d %H:%M:%S"),
                ),
                kinds=kinds,
            )
        )
    issues.append(outlier_issue(srt, kinds, outlier_z))
    issues.append(_gap_issue(srt, interval, kinds))
    return [i for i in issues if i is not None]


def check_spacing(
    bars: pl.DataFrame,
    interval: str | timedelta | None = None,
    *,
    kinds: dict[str, str] | None = None,
) -> QualityIssue | None:
    """The ``gap`` warning of ``bars`` against the expected bar spacing ``interval``.

    Parameters
    ----------
    bars
        Columns ``symbol`` and ``ts`` (a Datetime; any order, sorted here). The reader's
        location columns, if present, name the line of the first bar after each gap.
    interval
        The expected spacing: ``"1d"``, ``"1h"``, ``"5m"``, ``"30s"``, ``"1w"`` or a
        ``timedelta``; ``None`` infers it as the median spacing within symbols. What counts as
        a gap (weekends and single holidays do not) is in :mod:`quantcli.data.spacing`.
    kinds
        Location kind per source (``"line"`` or ``"row"``); default ``"row"``.

    Returns
    -------
    QualityIssue or None
        ``check="gap"``, ``severity="warning"``, ``count`` = number of gaps; ``None`` if none.

    Examples
    --------
    >>> from quantcli.data import load_sample
    >>> issue = check_spacing(load_sample(), "1d")
    >>> issue.count
    6
    >>> issue.examples[0]["detail"]
    'IXIC: 4 weekday(s) without a bar between 2001-09-10 00:00 and 2001-09-17 00:00 (interval 1d)'
    """
    step = parse_interval(interval) if isinstance(interval, str) else interval
    return _gap_issue(sorted_bars(bars), step, kinds or {})


def _gap_issue(
    srt: pl.DataFrame, step: timedelta | None, kinds: dict[str, str]
) -> QualityIssue | None:
    """The ``gap`` warning of bars already sorted by ``(symbol, ts)``, without null keys."""
    if step is None:
        step = infer_interval(srt, presorted=True)
        if step is None:
            return None
    idx, details = find_gaps(srt, step, MAX_EXAMPLES)
    if idx.size == 0:
        return None
    located = SOURCE_COL in srt.columns and LINE_COL in srt.columns
    examples = []
    for i, detail in zip(idx[:MAX_EXAMPLES].tolist(), details, strict=True):
        source = srt[SOURCE_COL][i] if located else "<frame>"
        line = int(srt[LINE_COL][i]) if located else i
        examples.append(
            {
                "source": source,
                "location": location_label(kinds.get(source, "row"), line),
                "column": "ts",
                "detail": detail,
            }
        )
    return QualityIssue("gap", "warning", int(idx.size), examples)


def _is_key_sorted(df: pl.DataFrame) -> bool:
    """Already sorted by ``(symbol, ts)``? (a linear scan; skips the sort for most inputs)."""
    sym, prev_sym = pl.col("symbol"), pl.col("symbol").shift(1)
    ordered = (sym > prev_sym) | ((sym == prev_sym) & (pl.col("ts") >= pl.col("ts").shift(1)))
    return bool(df.select(ordered.fill_null(False).slice(1).all()).item()) and not (
        df.height and (df["symbol"][0] is None or df["ts"][0] is None)
    )


def check_bars(
    frame: pl.DataFrame,
    *,
    source: str,
    kinds: dict[str, str],
    outlier_z: float,
    window: TimestampWindow | None = None,
    interval: str | timedelta | None = None,
) -> tuple[pl.DataFrame, QualityReport]:
    """Validate a frame that already carries the location columns; the library's workhorse.

    Returns the normalised bars (the seven columns, sorted by ``(symbol, ts)``, location columns
    dropped) and the report. Raises :class:`DataValidationError` on any error-severity finding.
    ``window`` defaults to :meth:`TimestampWindow.build` (1900-01-01 to one day after now);
    ``interval`` is the expected bar spacing of the ``gap`` warning (``None``: inferred).
    """
    if window is None:
        window = TimestampWindow.build()
    if isinstance(interval, str):
        interval = parse_interval(interval)
    if not outlier_z > 0:
        raise InputError(
            f"`outlier_z` (--outlier-z) must be > 0, got `outlier_z={outlier_z}`.",
            hint="typical values: 8 to 20 (robust z-score of a one-bar log return)",
        )
    df = coerce_columns(frame, source).with_row_index(ROW_COL)
    # one stable sort by the key serves the duplicate, order and outlier checks and the output
    srt = df if _is_key_sorted(df) else df.sort("symbol", "ts", ROW_COL)
    errors = _error_checks(df, kinds, window)
    dups = _duplicates(srt, kinds)
    raise_for(merge_issues(errors + ([dups] if dups is not None else [])), source)
    warnings = _warning_checks(df, srt, kinds, outlier_z, interval)
    bars = srt.select(REQUIRED_COLUMNS)
    report = QualityReport(
        source=source,
        rows=bars.height,
        symbols=bars["symbol"].n_unique(),
        outlier_z=float(outlier_z),
        warnings=warnings,
    )
    return bars, report


def validate_bars(
    df: pl.DataFrame,
    *,
    source: str = "<frame>",
    outlier_z: float = DEFAULT_OUTLIER_Z,
    line_numbers: Sequence[int] | None = None,
    window: TimestampWindow | None = None,
    interval: str | timedelta | None = None,
) -> QualityReport:
    """Check OHLCV bars; raise on errors, return the warnings.

    Parameters
    ----------
    df
        Columns ``symbol, ts, open, high, low, close, volume`` (extra columns are ignored).
        ``ts`` may be a ``Date``, a naive ``Datetime`` (both assumed UTC, reported as
        ``naive_timestamp``) or a time-zone-aware ``Datetime`` (converted to UTC).
    source
        How errors name the input, e.g. a file name.
    outlier_z
        Robust z-score threshold of the ``outlier`` warning (must be > 0).
    line_numbers
        The location of each row as reported in messages (e.g. CSV line numbers); by default
        the 0-based row index, reported as ``"row N"``.
    window
        The plausibility window of ``ts`` (default: 1900-01-01 to one day after now).
    interval
        The expected bar spacing of the ``gap`` warning (``"1d"``, ``"5m"``; default: the
        median spacing).

    Returns
    -------
    QualityReport
        ``.warnings`` lists zero volume, unsorted input, naive timestamps, outliers and gaps.

    Raises
    ------
    DataValidationError
        Exit code 2; the message names the source, the line (or row) and the column of the
        first error and counts every error by check; ``.issues`` has them all.

    Examples
    --------
    >>> from quantcli.data import load_sample
    >>> report = validate_bars(load_sample(), source="sample")
    >>> [(w.check, w.count) for w in report.warnings]
    [('zero_volume', 2), ('gap', 6)]
    """
    df = to_polars(df, "df")  # pandas and pyarrow bars are accepted wherever polars is
    kind = "line" if line_numbers is not None else "row"
    frame = with_locations(df, source, line_numbers, kind)
    return check_bars(
        frame,
        source=source,
        kinds={source: kind},
        outlier_z=outlier_z,
        window=window,
        interval=interval,
    )[1]


__all__ = [
    "DEFAULT_OUTLIER_Z",
    "MIN_RETURNS_FOR_OUTLIERS",
    "REQUIRED_COLUMNS",
    "QualityIssue",
    "QualityReport",
    "check_bars",
    "check_spacing",
    "outlier_scores",
    "validate_bars",
]
