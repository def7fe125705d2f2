"""Read OHLCV bars from CSV or Parquet into quantcli's normal form, keeping each row's location.

Normal form: columns ``symbol`` (String), ``ts`` (``Datetime("us", "UTC")``), ``open``,
``high``, ``low``, ``close``, ``volume`` (Float64).

* Column names are case-insensitive and stripped; the time column may be called ``ts``,
  ``date``, ``timestamp`` or ``datetime``; the symbol column ``symbol`` or ``ticker``. Extra
  columns (e.g. ``Adj Close``) are ignored.
* A file without a symbol column needs ``symbol=`` (``--symbol``).
* Timestamps: ``YYYY-MM-DD`` dates and naive ``YYYY-MM-DD[ T]HH:MM:SS[.f]`` datetimes are read
  as UTC (and reported as ``naive_timestamp`` warnings); values with an offset
  (``+02:00``, ``Z``) are converted to UTC. Parquet ``Date``/``Datetime`` columns likewise.
* CSV values are read as text, then parsed; a value that does not parse is an ``unparseable``
  error naming the file, the line (header = line 1) and the column. Parquet rows are named by
  their 0-based row index.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from quantcli.data.normal_form import coerce_columns
from quantcli.data.quality import (
    LINE_COL,
    NAIVE_COL,
    NUMERIC_COLUMNS,
    SOURCE_COL,
    QualityIssue,
    issue_from_rows,
    printable,
    raise_for,
)
from quantcli.data.symbols import SYMBOL_RULE, is_valid_symbol, shown
from quantcli.errors import DataValidationError, InputError

TS_ALIASES: tuple[str, ...] = ("ts", "date", "timestamp", "datetime")
SYMBOL_ALIASES: tuple[str, ...] = ("symbol", "ticker")

_CSV_SUFFIXES = (".csv", ".csv.gz", ".txt")
_PARQUET_SUFFIXES = (".parquet", ".pq")

# Accepted textual timestamp layouts. "%.f" also matches no fraction at all.
_NAIVE_FORMATS = ("%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f")
_AWARE_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%:z")
# A leap second (second 60): the parser would roll it into the next minute, silently.
_LEAP_SECOND = r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:60(\.\d*)?([zZ]|[+-]\d{2}:?\d{2})?$"
# How polars names a value it cannot read, e.g. an opening quote never closed.
_POLARS_UNPARSED = re.compile(
    r"could not parse `(?P<text>[^`]+)` as dtype .*?at column '(?P<column>[^']*)'", re.DOTALL
)
# How polars renames a repeated header name: "open", "open_duplicated_0", ...
_POLARS_DUPLICATE = re.compile(r"^(?P<name>.*)_duplicated_\d+$", re.DOTALL)


@dataclass
class RawBars:
    """Bars read from one source, still carrying their locations.

    Attributes
    ----------
    frame
        Normal-form columns plus the internal ``__source``, ``__line`` and ``__naive_ts``.
    source
        The file name as given (or a label).
    location_kind
        ``"line"`` (CSV: file line numbers, header = 1) or ``"row"`` (Parquet: 0-based index).
    ignored_columns
        Input columns that were not used.
    """

    frame: pl.DataFrame
    source: str
    location_kind: str
    ignored_columns: list[str]


def _file_kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(_CSV_SUFFIXES):
        return "csv"
    if name.endswith(_PARQUET_SUFFIXES):
        return "parquet"
    raise InputError(
        f"{path}: unsupported file type",
        hint=f"use one of {', '.join(_CSV_SUFFIXES + _PARQUET_SUFFIXES)}",
    )


def _check_duplicate_columns(columns: list[str], source: str) -> None:
    """A header naming one column twice is refused: which of the two is meant is a guess."""
    for i, col in enumerate(columns):
        m = _POLARS_DUPLICATE.match(col)
        if m and m["name"] in columns[:i]:
            first = columns.index(m["name"])
            raise InputError(
                f"{source} line 1, column {i + 1}: duplicated column name {shown(m['name'])} "
                f"(also column {first + 1})",
                hint="rename or drop one of the two columns",
            )


def _rename(df: pl.DataFrame, source: str, header: str) -> tuple[pl.DataFrame, list[str]]:
    """Map case-insensitive aliases onto the normal column names."""
    lowered: dict[str, str] = {}
    for col in df.columns:
        key = col.strip().lstrip("\ufeff").strip().lower()  # a UTF-8 BOM may lead the header
        if key in lowered:
            raise InputError(
                f"{source}{header}: columns {shown(lowered[key])} and {shown(col)} "
                "differ only by case",
                hint="keep one of them",
            )
        lowered[key] = col
    mapping: dict[str, str] = {}
    for target, aliases in (("ts", TS_ALIASES), ("symbol", SYMBOL_ALIASES)):
        found = [a for a in aliases if a in lowered]
        if len(found) > 1:
            names = ", ".join(shown(lowered[a]) for a in found)
            raise InputError(
                f"{source}{header}: ambiguous {target} column: {names}",
                hint=f"keep exactly one of {', '.join(aliases)}",
            )
        if found:
            mapping[lowered[found[0]]] = target
    for name in NUMERIC_COLUMNS:
        if name in lowered:
            mapping[lowered[name]] = name
    ignored = [c for c in df.columns if c not in mapping]
    return df.select([pl.col(src).alias(dst) for src, dst in mapping.items()]), ignored


def _csv_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when they start with the gzip magic number."""
    with path.open("rb") as fh:
        data = fh.read()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def _locate_csv_problem(data: bytes, polars_message: str) -> str | None:
    """``"line N[, field K]: what"`` for the first undecodable byte, unparseable quoted value,
    unbalanced quote or ragged row, else None.

    Runs only after the fast reader refused a file, to name the line its message does not.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        line = data.count(b"\n", 0, exc.start) + 1
        field = data.count(b",", line_start, exc.start) + 1
        return f"line {line}, field {field}: invalid UTF-8 byte 0x{data[exc.start]:02x}"
    m = _POLARS_UNPARSED.search(polars_message)
    if m:  # polars quotes the raw text it could not read: find it after the header
        body = text.find("\n") + 1
        at = text.find(m["text"], body) if body else -1
        if at >= 0:
            line = text.count("\n", 0, at) + 1
            return f"line {line}, column {shown(m['column'])}: bad quoting"
    for number, row in enumerate(text.split("\n"), start=1):
        if row.count('"') % 2:  # bar files have no multi-line quoted fields
            return f"line {number}: unbalanced quote"
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            return None
        for row in reader:
            if len(row) > len(header):
                return f"line {reader.line_num}: {len(row)} fields, the header has {len(header)}"
    except csv.Error as exc:
        return f"line {reader.line_num}: {exc}"
    return None


def _csv_head(path: Path, n: int = 4) -> bytes:
    """The first ``n`` bytes of the text, gunzipped when the file is gzip."""
    with path.open("rb") as fh:
        head = fh.read(2)
        fh.seek(0)
        if head == b"\x1f\x8b":
            with gzip.open(fh) as gz:
                try:
                    return gz.read(n)
                except (OSError, EOFError):
                    return b""  # a corrupt gzip: the reader names it below
        return fh.read(n)


#: Byte-order marks of the encodings a spreadsheet may save CSV in, longest first.
_WIDE_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)


def _check_encoding(path: Path, source: str) -> None:
    """Refuse UTF-16/32 text by name: read as UTF-8 it is a header of NUL-padded bytes, and
    the error would be about a missing column instead of the encoding."""
    head = _csv_head(path)
    name = next((enc for bom, enc in _WIDE_BOMS if head.startswith(bom)), None)
    if name is None and b"\x00" in head:
        name = "UTF-16 or UTF-32 (NUL bytes in the header)"
    if name is not None:
        raise InputError(
            f"{source} line 1: the file is {name} encoded; quantcli reads UTF-8",
            hint=f"convert it, e.g. `iconv -f {name.split()[0]} -t UTF-8 FILE > FILE.utf8.csv`",
        )


def _read_csv(path: Path, source: str) -> pl.DataFrame:
    _check_encoding(path, source)
    try:
        # an open file, not the path: polars would expand a name like "m[2].csv" as a glob
        with path.open("rb") as fh:
            return pl.read_csv(fh, infer_schema=False, truncate_ragged_lines=False)
    except pl.exceptions.NoDataError:
        raise InputError(f"{source} line 1: empty file, no header") from None
    except (Exception, pl.exceptions.PanicException) as exc:  # polars panics on some bytes
        if isinstance(exc, OSError):
            raise InputError(f"{source}: cannot read: {exc.strerror or exc}") from None
        first, message = _first_line(exc), str(exc)
    try:
        where = _locate_csv_problem(_csv_bytes(path), message)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise InputError(f"{source}: not a readable gzip file: {_first_line(exc)}") from None
    if where is None:
        where = "line unknown"
    raise InputError(f"{source} {where} (cannot read as CSV: {first})")


def _without_blank_lines(df: pl.DataFrame, path: Path) -> pl.DataFrame:
    """``df`` without the rows polars made of blank lines (a trailing newline too many): it
    reads them as rows of nulls, which validation would refuse. A row of empty fields
    (``,,,``) is not a blank line and stays, to be refused by name."""
    values = [c for c in df.columns if c not in (SOURCE_COL, LINE_COL)]
    empty = df.filter(pl.all_horizontal(pl.col(values).is_null()))
    if empty.height == 0:
        return df
    lines = _csv_bytes(path).splitlines()
    blank = [n for n in empty[LINE_COL].to_list() if n <= len(lines) and not lines[n - 1].strip()]
    return df.filter(~pl.col(LINE_COL).is_in(blank)) if blank else df


def _read_parquet(path: Path, source: str) -> pl.DataFrame:
    """Through DuckDB, which reports a corrupt file as an error. polars' own decoder may panic
    (a Rust backtrace on stderr) and pyarrow's may abort() the process at exit on the same
    bytes; DuckDB also refuses strings that are not UTF-8."""
    with tempfile.TemporaryDirectory(prefix="qcli-parquet-") as tmp:
        # a plain name: DuckDB would expand "m[2].parquet" as a glob pattern
        link = Path(tmp) / "input.parquet"
        link.symlink_to(path.resolve())
        con = duckdb.connect()
        try:
            con.execute("SET enable_progress_bar = false")
            con.execute("SET TimeZone = 'UTC'")
            query = con.sql("SELECT * FROM read_parquet(?)", params=[str(link)])
            table = query.to_arrow_table()
            # DuckDB renames a repeated column ("open", "open_1"): refuse it as the CSV reader does
            names = _top_level_names(
                con.sql(
                    "SELECT name, num_children FROM parquet_schema(?)", params=[str(link)]
                ).fetchall()
            )
        except Exception as exc:  # duckdb.Error, or the binding's RuntimeError on a bad name
            message = _first_line(exc).replace(str(link), "the file")
            raise InputError(f"{source}: cannot read as PARQUET: {message}") from None
        finally:
            con.close()
    for i, name in enumerate(names):
        if name in names[:i]:
            raise InputError(
                f"{source}: column {i + 1}: duplicated column name {shown(name)} "
                f"(also column {names.index(name) + 1})",
                hint="rename or drop one of the two columns",
            )
    try:
        return pl.from_arrow(table)
    except (Exception, pl.exceptions.PanicException) as exc:
        raise InputError(f"{source}: cannot read as PARQUET: {_first_line(exc)}") from None


def _top_level_names(schema: list[tuple[str, int | None]]) -> list[str]:
    """The top-level column names of a flattened Parquet schema (root first, depth-first)."""
    names: list[str] = []
    pending = [schema[0][1] or 0]  # children left to visit per open group, the root first
    for name, children in schema[1:]:
        if len(pending) == 1:
            names.append(name)
        pending[-1] -= 1
        if children:
            pending.append(children)
        while len(pending) > 1 and pending[-1] == 0:
            pending.pop()
    return names


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _parse_text_ts(text: pl.Series) -> tuple[pl.Series, pl.Series]:
    """(UTC datetime, is-naive) parsed from stripped text; null where no layout matches.

    Staged for speed: the common date-only layout is tried on the whole column, the slower
    datetime layouts only on the values it left unparsed.
    """
    wall = text.str.to_date("%Y-%m-%d", strict=False).cast(pl.Datetime("us"))
    naive = wall.is_not_null()
    todo = (wall.is_null() & text.is_not_null()).arg_true()
    if len(todo):
        rest = text.gather(todo)
        zulu = rest.str.replace(r"[zZ]$", "+00:00")
        frame = pl.DataFrame({"t": rest, "z": zulu})
        aware = pl.coalesce(
            [
                pl.col("z").str.to_datetime(f, strict=False, time_unit="us", time_zone="UTC")
                for f in _AWARE_FORMATS
            ]
        ).dt.replace_time_zone(None)  # UTC wall time
        plain = pl.coalesce(
            [pl.col("t").str.to_datetime(f, strict=False, time_unit="us") for f in _NAIVE_FORMATS]
        )
        parsed = frame.select(aware.alias("aware"), plain.alias("plain"))
        wall = wall.scatter(todo, parsed["aware"].fill_null(parsed["plain"]))
        naive = naive.scatter(todo, parsed["aware"].is_null() & parsed["plain"].is_not_null())
    return wall.dt.replace_time_zone("UTC"), naive


def _parse_text_columns(df: pl.DataFrame, source: str, kinds: dict[str, str]) -> pl.DataFrame:
    """Parse the text columns of a CSV (or of a Parquet file that stores text)."""
    text_cols = [n for n in ("ts", *NUMERIC_COLUMNS) if df.schema[n] == pl.String]
    stripped = {name: df[name].str.strip_chars() for name in text_cols}
    parsed: dict[str, pl.Series] = {}
    for name in text_cols:
        if name == "ts":
            parsed["ts"], parsed[NAIVE_COL] = _parse_text_ts(stripped["ts"])
        else:
            parsed[name] = stripped[name].cast(pl.Float64, strict=False)
    issues: list[QualityIssue] = []
    if "ts" in stripped:
        # a literal scan first: the regex then runs only on the rare values holding ":60"
        leap = stripped["ts"].str.contains(":60", literal=True).fill_null(False)
        if leap.any():
            leap = leap & stripped["ts"].str.contains(_LEAP_SECOND).fill_null(False)
        issue = issue_from_rows(
            "leap_second",
            "error",
            df.filter(leap),
            column="ts",
            detail=pl.format("{}: second 60 (a leap second) is not a valid UTC bar time", "ts"),
            kinds=kinds,
        )
        if issue is not None:
            issues.append(issue)
    for name in text_cols:
        text = stripped[name]
        bad_mask = text.is_not_null() & (text != "") & parsed[name].is_null()
        if name == "ts":
            bad_mask = bad_mask & ~leap  # reported as leap seconds above
        if not bad_mask.any():
            continue
        what = "date/time" if name == "ts" else "number"
        issue = issue_from_rows(
            "unparseable",
            "error",
            df.filter(bad_mask),
            column=name,
            detail=pl.format("cannot parse '{}' as a {}", printable(pl.col(name)), pl.lit(what)),
            kinds=kinds,
        )
        if issue is not None:
            issues.append(issue)
    raise_for(issues, source)
    if df.schema.get("symbol") == pl.String:
        parsed["symbol"] = df["symbol"].str.strip_chars()
    return df.with_columns([series.alias(name) for name, series in parsed.items()])


def check_bar_file(path: str | os.PathLike[str], label: str | None = None) -> str:
    """``"csv"`` or ``"parquet"`` for a bars file that exists, else :class:`InputError` naming
    it (a directory, a missing file, an unsupported type): callers check before any work."""
    p = Path(path)
    source = label or str(path)
    if p.is_dir():
        raise InputError(
            f"{source}: is a directory", hint=f"pass the files, e.g. {source.rstrip('/')}/*.csv"
        )
    if not p.is_file():
        raise InputError(f"{source}: no such file")
    return _file_kind(p)


def read_bars(
    path: str | os.PathLike[str], *, symbol: str | None = None, label: str | None = None
) -> RawBars:
    """Read one CSV (optionally gzipped) or Parquet file of bars.

    Parameters
    ----------
    path
        ``.csv``, ``.csv.gz``, ``.txt`` or ``.parquet``/``.pq``.
    symbol
        The symbol of every row, for files without a symbol column. If the file has one, every
        value must equal ``symbol``.
    label
        How messages name the file (default: ``path`` as given).

    Raises
    ------
    InputError
        Missing or unreadable file, unsupported type, ambiguous columns, missing symbol.
    DataValidationError
        A value that does not parse (file, line and column named).
    """
    p = Path(path)
    source = label or str(path)
    kind = check_bar_file(p, source)
    if kind == "csv":
        raw = _read_csv(p, source)
        _check_duplicate_columns(raw.columns, source)
    else:
        raw = _read_parquet(p, source)
    header = " line 1" if kind == "csv" else ""
    if raw.height == 0:
        raise InputError(f"{source}{' line 2' if kind == 'csv' else ''}: no rows after the header")
    df, ignored = _rename(raw, source, header)
    loc_kind = "line" if kind == "csv" else "row"
    offset = 2 if kind == "csv" else 0  # CSV: the header is line 1
    df = df.with_columns(
        pl.lit(source).alias(SOURCE_COL),
        (pl.int_range(0, pl.len(), dtype=pl.Int64) + offset).alias(LINE_COL),
    )
    if kind == "csv":
        df = _without_blank_lines(df, p)
        if df.height == 0:
            raise InputError(f"{source} line 2: no rows after the header")
    if symbol is not None:
        if not is_valid_symbol(symbol):  # not stripped: "SPX\n" is refused, not repaired
            raise InputError(f"--symbol {shown(symbol)}: a symbol is {SYMBOL_RULE}")
        if "symbol" in df.columns:
            other = df.filter(pl.col("symbol").cast(pl.String).str.strip_chars() != symbol)
            if other.height:
                line = other[LINE_COL][0]
                raise InputError(
                    f"{source} {'line' if loc_kind == 'line' else 'row'} {line}: symbol "
                    f"{shown(other['symbol'][0])} contradicts --symbol {symbol}",
                    hint="drop --symbol: the file has its own symbol column",
                )
        df = df.with_columns(pl.lit(symbol).alias("symbol"))
    elif "symbol" not in df.columns:
        raise InputError(
            f"{source}{header}: no symbol column (symbol or ticker)",
            hint="pass --symbol SYMBOL (symbol=...) for single-symbol files",
        )
    kinds = {source: loc_kind}
    missing = [c for c in ("ts", *NUMERIC_COLUMNS) if c not in df.columns]
    if missing:
        have = ", ".join(shown(c, 30) for c in raw.columns[:20])
        raise DataValidationError(
            f"{source}{header}: missing required column(s) {', '.join(missing)} (have: {have})",
            hint="columns are case-insensitive; the time column may be named "
            + ", ".join(TS_ALIASES),
        )
    df = _parse_text_columns(df, source, kinds)
    df = coerce_columns(df, source)
    df = df.select("symbol", "ts", *NUMERIC_COLUMNS, SOURCE_COL, LINE_COL, NAIVE_COL)
    return RawBars(frame=df, source=source, location_kind=loc_kind, ignored_columns=ignored)


__all__ = ["SYMBOL_ALIASES", "TS_ALIASES", "RawBars", "read_bars"]
