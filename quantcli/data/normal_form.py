"""Bars in normal form: the seven columns in their dtypes, ``ts`` as UTC, each row located.

Every input (a CSV or Parquet file, a frame) is brought to this form before the checks of
:mod:`quantcli.data.validation` run: the internal ``__source``/``__line`` columns name the row
of each finding, ``__naive_ts`` marks the timestamps that were read as UTC.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from quantcli.data.quality import (
    LINE_COL,
    NAIVE_COL,
    NUMERIC_COLUMNS,
    REQUIRED_COLUMNS,
    SOURCE_COL,
    QualityIssue,
)
from quantcli.errors import DataValidationError


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


__all__ = ["coerce_columns", "coerce_ts", "with_locations"]
