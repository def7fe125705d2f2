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

The outlier score of a bar is ``z = (r - median(r)) / (k * MAD(r))`` where
``r = ln(close_t / close_{t-1})`` is the one-bar log return within the symbol (bars ordered by
``ts``) and ``MAD`` the median absolute deviation of that symbol's returns;
``k = 1 / Phi^-1(3/4) = 1.482602...`` makes ``k * MAD`` a consistent estimate of the standard
deviation for normal returns (``scipy.stats.median_abs_deviation(scale="normal")``), robust to
the outliers themselves. Symbols with fewer than :data:`MIN_RETURNS_FOR_OUTLIERS` returns, or a
MAD of 0, are not scored.

Locations: a CSV row is named by its **file line number** (the header is line 1, so the first
bar is line 2); a Parquet row or a frame row by its **0-based row index** ("row 0").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from statistics import NormalDist
from typing import Any

import numpy as np
import polars as pl

from quantcli.data.defaults import DEFAULT_OUTLIER_Z
from quantcli.data.spacing import find_gaps, infer_interval, parse_interval, sorted_bars
from quantcli.data.symbols import POLARS_SYMBOL_PATTERN, SYMBOL_RULE
from quantcli.data.window import TimestampWindow
from quantcli.errors import DataValidationError, InputError

REQUIRED_COLUMNS: tuple[str, ...] = ("symbol", "ts", "open", "high", "low", "close", "volume")
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
NUMERIC_COLUMNS: tuple[str, ...] = (*PRICE_COLUMNS, "volume")

#: A symbol needs this many one-bar returns before its median and MAD mean anything.
MIN_RETURNS_FOR_OUTLIERS: int = 20
#: Scale that turns a MAD into a standard deviation under normality: 1 / Phi^-1(0.75).
MAD_TO_SIGMA: float = 1.0 / NormalDist().inv_cdf(0.75)
#: How many example locations each issue keeps (the count is always exact).
MAX_EXAMPLES: int = 5

# Internal location columns carried through reading and validation; never stored.
SOURCE_COL = "__source"
LINE_COL = "__line"
NAIVE_COL = "__naive_ts"
ROW_COL = "__row"

_CHECK_TEXT = {
    "missing_column": "required column missing",
    "unparseable": "value cannot be parsed",
    "null": "null, NaN or empty value",
    "invalid_symbol": f"symbol is not {SYMBOL_RULE}",
    "implausible_ts": "timestamp outside the plausibility window",
    "leap_second": "leap second (23:59:60)",
    "non_finite": "infinite value",
    "non_positive_price": "price <= 0",
    "ohlc_inconsistent": "high/low inconsistent with open/close",
    "negative_volume": "volume < 0",
    "duplicate_key": "duplicate (symbol, ts)",
    "zero_volume": "volume == 0 (kept)",
    "unsorted": "ts goes backwards within a symbol (bars were sorted)",
    "naive_timestamp": "timestamp without time zone (assumed UTC)",
    "gap": "bars missing against the expected spacing (kept)",
    "outlier": "one-bar log return beyond the robust z-score threshold (kept)",
}


@dataclass(frozen=True)
class QualityIssue:
    """One data-quality finding, aggregated over all the rows it affects.

    Attributes
    ----------
    check
        The check name (``null``, ``zero_volume``, ... see the module docstring).
    severity
        ``"error"`` (the input is refused) or ``"warning"`` (reported and recorded).
    count
        Exact number of affected rows (values, for ``null``/``unparseable``).
    examples
        Up to :data:`MAX_EXAMPLES` locations, each a dict with ``source``, ``location``
        (``"line 7"`` or ``"row 5"``), ``column`` and ``detail``.
    """

    check: str
    severity: str
    count: int
    examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def description(self) -> str:
        return _CHECK_TEXT.get(self.check, self.check)

    def first_location(self) -> str:
        """``"<source> line 7, column 'high': <detail>"`` for the first example."""
        if not self.examples:
            return self.description
        ex = self.examples[0]
        where = f"{ex['source']} {ex['location']}" if ex.get("location") else ex["source"]
        col = f", column '{ex['column']}'" if ex.get("column") else ""
        return f"{where}{col}: {ex['detail']}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "severity": self.severity,
            "count": self.count,
            "description": self.description,
            "examples": list(self.examples),
        }


@dataclass
class QualityReport:
    """The outcome of :func:`validate_bars`: row counts and the warnings (errors raise).

    Attributes
    ----------
    source
        What was validated (file names joined by ``", "``, or ``"<frame>"``).
    rows, symbols
        Number of bars and of distinct symbols.
    warnings
        The :class:`QualityIssue` of severity ``warning``, in check order.
    outlier_z
        The robust z-score threshold used by the ``outlier`` check.
    """

    source: str
    rows: int
    symbols: int
    outlier_z: float
    warnings: list[QualityIssue] = field(default_factory=list)

    @property
    def warning_count(self) -> int:
        return sum(w.count for w in self.warnings)

    def get(self, check: str) -> QualityIssue | None:
        """The warning of ``check``, or ``None`` if that check found nothing."""
        return next((w for w in self.warnings if w.check == check), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "rows": self.rows,
            "symbols": self.symbols,
            "outlier_z": self.outlier_z,
            "warnings": [w.to_dict() for w in self.warnings],
        }


def location_label(source_kind: str, line: int) -> str:
    """``"line 7"`` for CSV sources, ``"row 5"`` for Parquet files and frames."""
    return f"line {line}" if source_kind == "line" else f"row {line}"


def issue_from_rows(
    check: str,
    severity: str,
    rows: pl.DataFrame,
    *,
    column: str | None,
    detail: pl.Expr,
    kinds: dict[str, str],
) -> QualityIssue | None:
    """Aggregate the offending ``rows`` (which carry the location columns) into one issue."""
    if rows.height == 0:
        return None
    head = rows.head(MAX_EXAMPLES).select(
        pl.col(SOURCE_COL), pl.col(LINE_COL), detail.cast(pl.String).alias("__detail")
    )
    examples = [
        {
            "source": src,
            "location": location_label(kinds.get(src, "row"), line),
            "column": column,
            "detail": det,
        }
        for src, line, det in head.iter_rows()
    ]
    return QualityIssue(check, severity, rows.height, examples)


def printable(expr: pl.Expr, limit: int = 40) -> pl.Expr:
    """A user string for a one-line message: control characters as ``?``, cut to ``limit``."""
    return expr.cast(pl.String).str.replace_all(r"[\x00-\x1f\x7f]", "?").str.slice(0, limit)


def _ts_text() -> pl.Expr:
    """``ts`` as ``YYYY-MM-DD HH:MM:SS`` (UTC) for messages."""
    return pl.col("ts").dt.strftime("%Y-%m-%d %H:%M:%S")


def _fmt(col: str) -> pl.Expr:
    return pl.format("{}={}", pl.lit(col), pl.col(col))


def with_locations(
    df: pl.DataFrame, source: str, line_numbers: Sequence[int] | None, kind: str
) -> pl.DataFrame:
    """Attach the internal ``__source``/``__line`` columns (row index if no line numbers)."""
    if LINE_COL in df.columns:
        return df
    if line_numbers is None:
        lines = pl.int_range(0, pl.len(), dtype=pl.Int64)
    else:
        if len(line_numbers) != df.height:
            raise ValueError(
                f"`line_numbers` must have one entry per row ({df.height}), "
                f"got {len(line_numbers)}."
            )
        lines = pl.Series(LINE_COL, list(line_numbers), dtype=pl.Int64)
    return df.with_columns(pl.lit(source).alias(SOURCE_COL), lines.alias(LINE_COL))


def coerce_ts(df: pl.DataFrame, source: str) -> pl.DataFrame:
    """Make ``ts`` a ``Datetime("us", "UTC")``; mark date-only / naive values in ``__naive_ts``."""
    dtype = df.schema["ts"]
    if isinstance(dtype, pl.Datetime) and dtype.time_zone is not None:
        ts = pl.col("ts").dt.convert_time_zone("UTC").dt.cast_time_unit("us")
        naive = pl.lit(False)
    elif isinstance(dtype, pl.Datetime):
        ts = pl.col("ts").dt.cast_time_unit("us").dt.replace_time_zone("UTC")
        naive = pl.col("ts").is_not_null()
    elif dtype == pl.Date:
        ts = pl.col("ts").cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
        naive = pl.col("ts").is_not_null()
    else:
        raise DataValidationError(
            f"{source}: column 'ts' has type {dtype}; expected a date or datetime",
            hint="read files with quantcli.data.read_bars, which parses ISO date strings",
        )
    if NAIVE_COL in df.columns:
        naive = pl.col(NAIVE_COL) | naive
    return df.with_columns(ts.alias("ts"), naive.alias(NAIVE_COL))


def coerce_columns(df: pl.DataFrame, source: str) -> pl.DataFrame:
    """Keep the seven columns (and the internal ``__`` ones) in normal-form dtypes.

    Raises :class:`DataValidationError` for a missing column or a non-numeric price/volume.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        issue = QualityIssue(
            "missing_column",
            "error",
            len(missing),
            [{"source": source, "location": "", "column": c, "detail": "missing"} for c in missing],
        )
        raise DataValidationError(
            f"{source}: missing required column(s) {', '.join(missing)} "
            f"(have: {', '.join(c for c in df.columns if not c.startswith('__'))})",
            issues=[issue.to_dict()],
            hint="columns are case-insensitive; the time column may be named date, timestamp or ts",
        )
    bad = [c for c in NUMERIC_COLUMNS if not df.schema[c].is_numeric()]
    if bad:
        raise DataValidationError(
            f"{source}: column(s) {', '.join(bad)} are not numeric "
            f"({', '.join(str(df.schema[c]) for c in bad)})",
            hint="read files with quantcli.data.read_bars, which parses and locates bad numbers",
        )
    df = df.select([c for c in df.columns if c in REQUIRED_COLUMNS or c.startswith("__")])
    if df.schema["symbol"] != pl.String:
        df = df.with_columns(pl.col("symbol").cast(pl.String))
    return coerce_ts(df, source).with_columns([pl.col(c).cast(pl.Float64) for c in NUMERIC_COLUMNS])


def _error_checks(
    df: pl.DataFrame, kinds: dict[str, str], window: TimestampWindow
) -> list[QualityIssue]:
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


def _merge(issues: list[QualityIssue]) -> list[QualityIssue]:
    """One issue per check: counts add up, examples keep the first few."""
    merged: dict[str, QualityIssue] = {}
    for issue in issues:
        prev = merged.get(issue.check)
        if prev is None:
            merged[issue.check] = issue
        else:
            merged[issue.check] = QualityIssue(
                issue.check,
                issue.severity,
                prev.count + issue.count,
                (prev.examples + issue.examples)[:MAX_EXAMPLES],
            )
    return list(merged.values())


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
    issues.append(_outliers(srt, kinds, outlier_z))
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


def _score_sorted(srt: pl.DataFrame) -> pl.DataFrame:
    """Scores of bars already sorted by ``(symbol, ts)``: one NumPy pass per symbol run.

    Per-symbol medians with NumPy on contiguous runs are several times faster than Polars window
    expressions over a string key.
    """
    close = srt["close"].cast(pl.Float64).to_numpy()
    lengths = srt["symbol"].rle().struct.field("len").to_numpy()
    log_return = np.full(close.shape, np.nan)
    robust_z = np.full(close.shape, np.nan)
    start = 0
    for length in lengths:
        stop = start + int(length)
        if length >= 2:
            seg = close[start:stop]
            r = np.log(seg[1:] / seg[:-1])
            log_return[start + 1 : stop] = r
            if r.size >= MIN_RETURNS_FOR_OUTLIERS and np.isfinite(r).all():
                med = np.median(r)
                mad = np.median(np.abs(r - med))
                if mad > 0:
                    robust_z[start + 1 : stop] = (r - med) / (MAD_TO_SIGMA * mad)
        start = stop
    return srt.with_columns(
        pl.Series("log_return", log_return, nan_to_null=True),
        pl.Series("robust_z", robust_z, nan_to_null=True),
    )


def outlier_scores(bars: pl.DataFrame) -> pl.DataFrame:
    """The robust z-score of each bar's one-bar log return, per symbol.

    Parameters
    ----------
    bars
        Columns ``symbol``, ``ts``, ``close`` (any order; sorted here by ``(symbol, ts)``).

    Returns
    -------
    polars.DataFrame
        ``bars`` sorted by ``(symbol, ts)`` with ``log_return`` (natural log, per bar) and
        ``robust_z`` (null for a symbol's first bar, for symbols with fewer than
        :data:`MIN_RETURNS_FOR_OUTLIERS` returns, and where the MAD is 0).
    """
    return _score_sorted(bars.sort("symbol", "ts"))


def _outliers(srt: pl.DataFrame, kinds: dict[str, str], outlier_z: float) -> QualityIssue | None:
    scored = _score_sorted(srt)
    rows = scored.filter(pl.col("robust_z").abs() > outlier_z).sort(SOURCE_COL, LINE_COL)
    return issue_from_rows(
        "outlier",
        "warning",
        rows,
        column="close",
        detail=pl.format(
            "{} {}: log return {} (robust z {})",
            "symbol",
            pl.col("ts").dt.date(),
            pl.col("log_return").round(5),
            pl.col("robust_z").round(1),
        ),
        kinds=kinds,
    )


def raise_for(issues: list[QualityIssue], source: str) -> None:
    """Raise :class:`DataValidationError` for ``issues`` (no-op when empty)."""
    if not issues:
        return
    total = sum(i.count for i in issues)
    first = issues[0]
    others = ", ".join(f"{i.check} x{i.count}" for i in issues)
    raise DataValidationError(
        f"{first.first_location()} ({first.check}); {total} error(s) in {source}: {others}",
        issues=[i.to_dict() for i in issues],
        hint="fix the rows named above; nothing was written",
    )


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
    raise_for(_merge(errors + ([dups] if dups is not None else [])), source)
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
    from quantcli._interop import to_polars

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
    "REQUIRED_COLUMNS",
    "QualityIssue",
    "QualityReport",
    "check_bars",
    "check_spacing",
    "outlier_scores",
    "validate_bars",
]
