"""Data out: the stored bars and feature tables as Parquet or CSV files.

``qcli data export`` and ``qcli features export`` call :func:`export_table`. Rows come out sorted
by ``(symbol, ts)`` with ``ts`` in UTC, so the same store and options give the same bytes. The
file is written under a temporary name and renamed, so a failed export never leaves half a file
under the requested name.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import polars as pl

from quantcli.errors import InputError
from quantcli.results import Result
from quantcli.store.offline import OfflineStore

FORMATS = ("parquet", "csv")


@dataclass(frozen=True, kw_only=True)
class TableExport(Result):
    """``rows`` rows of ``table`` written to ``path`` as ``format``: the symbols (sorted), the
    columns, and the first and last ``ts`` (ISO UTC, ``None`` for no rows)."""

    table: str
    path: str
    format: str
    rows: int
    symbols: list[str]
    columns: list[str]
    start: str | None
    end: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "path": self.path,
            "format": self.format,
            "rows": self.rows,
            "symbols": self.symbols,
            "columns": self.columns,
            "start": self.start,
            "end": self.end,
        }


def to_utc(value: str | date | datetime | None, option: str = "--since") -> datetime | None:
    """``value`` (ISO text, a date or a datetime) as an aware UTC datetime; naive means UTC."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        raise InputError(
            f"{option}: cannot parse '{value}' as a date", hint="use YYYY-MM-DD"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def export_table(
    table: str,
    output: str | os.PathLike[str],
    *,
    fmt: str | None = None,
    symbols: Sequence[str] | None = None,
    since: str | date | datetime | None = None,
    until: str | date | datetime | None = None,
    store_path: str | os.PathLike[str] | None = None,
) -> TableExport:
    """Write the rows of the offline-store ``table`` to ``output``.

    Parameters
    ----------
    table
        ``bars`` or a feature table such as ``technical_features_v1``.
    output
        The file to write (its directory must exist); an existing file is replaced.
    fmt
        ``"parquet"`` or ``"csv"``; default from the suffix of ``output`` (``.csv`` is CSV,
        anything else Parquet).
    symbols
        Keep only these symbols (default: all); an unknown symbol is an error.
    since, until
        Keep rows with ``since <= ts <= until`` (dates are UTC midnight).

    Returns
    -------
    TableExport
        JSON keys ``table``, ``path``, ``format``, ``rows``, ``symbols`` (sorted), ``columns``,
        ``start`` and ``end`` (ISO UTC, ``None`` for no rows).
    """
    out = Path(output)
    fmt = _check_output(out, fmt)
    lo, hi = to_utc(since, "--since"), to_utc(until, "--until")
    if lo is not None and hi is not None and lo > hi:
        raise InputError(f"--since {lo.date()} is after --until {hi.date()}")
    wanted = None
    if symbols is not None:
        wanted = sorted(set(symbols))
        if not wanted:
            raise InputError("--symbols is empty: name at least one symbol")
    with OfflineStore(store_path, read_only=True) as store:
        frame = _select(store, table, wanted, lo, hi)
    # DuckDB may name the zone Etc/UTC; one spelling keeps the bytes the same on every machine
    frame = frame.with_columns(
        pl.col(name).dt.convert_time_zone("UTC")
        for name, dtype in frame.schema.items()
        if isinstance(dtype, pl.Datetime) and dtype.time_zone is not None
    )
    _write(frame, out, fmt)
    ts = frame.get_column("ts") if "ts" in frame.columns else None
    return TableExport(
        passed=True,
        table=table,
        path=str(out),
        format=fmt,
        rows=frame.height,
        symbols=sorted(frame.get_column("symbol").unique().to_list()),
        columns=frame.columns,
        start=ts.min().isoformat() if ts is not None and frame.height else None,
        end=ts.max().isoformat() if ts is not None and frame.height else None,
    )


def _check_output(out: Path, fmt: str | None) -> str:
    """The format to write ``out`` in (default from its suffix); the file must be writable."""
    if fmt is None:
        fmt = "csv" if out.suffix.lower() == ".csv" else "parquet"
    if fmt not in FORMATS:
        raise InputError(f"--format must be parquet or csv, got {fmt!r}")
    if out.is_dir():
        raise InputError(f"--output {out} is a directory; give a file name")
    if not out.parent.is_dir():
        raise InputError(f"--output: the directory {out.parent} does not exist")
    return fmt


def _select(
    store: OfflineStore,
    table: str,
    wanted: list[str] | None,
    lo: datetime | None,
    hi: datetime | None,
) -> pl.DataFrame:
    """The rows of ``table`` of the ``wanted`` symbols (all: ``None``) with ``lo <= ts <= hi``,
    ordered by symbol and ``ts``; a wanted symbol without rows is an :class:`InputError`."""
    step = "data ingest" if table == "bars" else "features build"
    store.require_table(table, hint=f"run `qcli {step}` first")
    con = store.con.cursor()
    where: list[str] = []
    params: list[Any] = []
    if wanted is not None:
        known = {
            r[0]
            for r in con.execute(
                f'SELECT DISTINCT symbol FROM "{table}" WHERE symbol IN '
                f"(SELECT unnest(?::VARCHAR[]))",
                [wanted],
            ).fetchall()
        }
        missing = [s for s in wanted if s not in known]
        if missing:
            raise InputError(
                f"--symbols: no rows of {', '.join(missing)} in table {table}",
                hint="`qcli data summary` lists the stored symbols",
            )
        where.append("symbol IN (SELECT unnest(?::VARCHAR[]))")
        params.append(wanted)
    if lo is not None:
        where.append("ts >= ?")
        params.append(lo)
    if hi is not None:
        where.append("ts <= ?")
        params.append(hi)
    sql = f'SELECT * FROM "{table}"'
    if where:
        sql += " WHERE " + " AND ".join(where)
    return con.sql(sql + " ORDER BY symbol, ts", params=params).pl()


def _write(frame: pl.DataFrame, out: Path, fmt: str) -> None:
    """Write ``frame`` to a temporary name beside ``out``, then rename it over ``out``."""
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        if fmt == "csv":
            frame.write_csv(tmp, datetime_format="%Y-%m-%dT%H:%M:%S%.f%:z")
        else:
            frame.write_parquet(tmp, statistics=False)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
