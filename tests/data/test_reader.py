"""read_bars: column aliases, symbols, timestamp parsing, locations of unparseable values."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import polars as pl
import pytest

from quantcli.data import read_bars
from quantcli.data.ingest import read_files
from quantcli.errors import DataValidationError, InputError

GOOD = """Date,Open,HIGH,low,Close,Volume,Adj Close
2020-01-02,10,11,9,10.5,1000,10.4
2020-01-03,10.5,12,10,11,1200,10.9
2020-01-06,11,11.5,10.5,11.2,900,11.1
"""


def test_case_insensitive_aliases_and_ignored_columns(write_csv):
    raw = read_bars(write_csv("a.csv", GOOD), symbol="AAA")
    df = raw.frame
    assert raw.location_kind == "line"
    assert raw.ignored_columns == ["Adj Close"]
    assert df["symbol"].to_list() == ["AAA"] * 3
    assert df["ts"].to_list()[0] == datetime(2020, 1, 2, tzinfo=UTC)
    assert df.schema["ts"] == pl.Datetime("us", "UTC")
    assert df["close"].to_list() == [10.5, 11.0, 11.2]
    assert df["__line"].to_list() == [2, 3, 4]  # header is line 1
    assert df["__naive_ts"].all()


def test_symbol_column_ticker_alias(write_csv):
    text = "timestamp,ticker,open,high,low,close,volume\n2020-01-02,XYZ,1,2,1,2,5\n"
    assert read_bars(write_csv("t.csv", text)).frame["symbol"].to_list() == ["XYZ"]


def test_missing_symbol_needs_the_option(write_csv):
    with pytest.raises(InputError, match=r"a\.csv line 1: no symbol column.*") as info:
        read_bars(write_csv("a.csv", GOOD))
    assert "--symbol" in info.value.hint


def test_symbol_option_must_agree_with_the_column(write_csv):
    text = (
        "ts,symbol,open,high,low,close,volume\n2020-01-02,AAA,1,2,1,2,5\n2020-01-03,BBB,1,2,1,2,5\n"
    )
    with pytest.raises(InputError, match=r"b\.csv line 3: symbol 'BBB' contradicts --symbol AAA"):
        read_bars(write_csv("b.csv", text), symbol="AAA")


def test_offsets_are_converted_to_utc_and_not_flagged_naive(write_csv):
    text = (
        "ts,symbol,open,high,low,close,volume\n"
        "2020-01-02T10:00:00+02:00,A,1,2,1,2,5\n"
        "2020-01-02T10:00:00Z,B,1,2,1,2,5\n"
        "2020-01-02 10:00:00.250,C,1,2,1,2,5\n"
    )
    df = read_bars(write_csv("z.csv", text)).frame
    assert df["ts"].to_list() == [
        datetime(2020, 1, 2, 8, tzinfo=UTC),
        datetime(2020, 1, 2, 10, tzinfo=UTC),
        datetime(2020, 1, 2, 10, 0, 0, 250000, tzinfo=UTC),
    ]
    assert df["__naive_ts"].to_list() == [False, False, True]


@pytest.mark.parametrize(
    ("cell", "column", "line"),
    [("2020-13-45", "ts", 3), ("12,5", "close", 4), ("n/a", "volume", 2)],
)
def test_unparseable_value_names_file_line_and_column(write_csv, cell, column, line):
    rows = GOOD.splitlines()
    cols = rows[0].lower().split(",")
    cols[0] = "ts"
    idx = cols.index(column)
    fields = rows[line - 1].split(",")
    fields[idx] = f'"{cell}"'
    rows[line - 1] = ",".join(fields)
    path = write_csv("bad.csv", "\n".join(rows) + "\n")
    with pytest.raises(DataValidationError) as info:
        read_bars(path, symbol="X")
    assert str(info.value).startswith(f"{path} line {line}, column '{column}': cannot parse")
    assert info.value.issues[0]["check"] == "unparseable"
    assert info.value.exit_code == 2


def test_missing_columns_are_listed(write_csv):
    with pytest.raises(DataValidationError, match=r"missing required column\(s\) low, volume"):
        read_bars(write_csv("m.csv", "ts,open,high,close\n2020-01-02,1,2,1\n"), symbol="X")


def test_ambiguous_time_columns_are_refused(write_csv):
    text = "date,timestamp,open,high,low,close,volume\n2020-01-02,2020-01-02,1,2,1,2,5\n"
    with pytest.raises(InputError, match="ambiguous ts column"):
        read_bars(write_csv("amb.csv", text), symbol="X")


def test_unsupported_and_missing_files(tmp_path):
    (tmp_path / "a.json").write_text("{}")
    with pytest.raises(InputError, match="unsupported file type"):
        read_bars(tmp_path / "a.json")
    with pytest.raises(InputError, match="no such file"):
        read_bars(tmp_path / "nope.csv")
    with pytest.raises(InputError, match="is a directory"):
        read_bars(tmp_path)


def test_parquet_rows_are_row_indices_and_zones_convert(tmp_path):
    df = pl.DataFrame(
        {
            "Symbol": ["A", "A"],
            "Timestamp": [datetime(2020, 1, 2, 9, 30), datetime(2020, 1, 3, 9, 30)],
            "open": [1, 2],  # integers are read as Float64
            "high": [2.0, 3.0],
            "low": [1.0, 1.5],
            "close": [2.0, 2.5],
            "volume": [10, 20],
        }
    ).with_columns(pl.col("Timestamp").dt.replace_time_zone("America/New_York"))
    path = tmp_path / "a.parquet"
    df.write_parquet(path)
    raw = read_bars(path)
    assert raw.location_kind == "row"
    assert raw.frame["__line"].to_list() == [0, 1]
    assert raw.frame["ts"][0] == datetime(2020, 1, 2, 14, 30, tzinfo=UTC)
    assert not raw.frame["__naive_ts"].any()
    assert raw.frame.schema["open"] == pl.Float64


def test_duplicates_across_files_name_both_files(write_csv):
    a = write_csv("a.csv", GOOD)
    b = write_csv("b.csv", GOOD.splitlines()[0] + "\n" + GOOD.splitlines()[2] + "\n")
    with pytest.raises(DataValidationError) as info:
        read_files([a, b], "X")
    examples = info.value.issues[0]["examples"]
    assert [(e["source"], e["location"]) for e in examples] == [
        (str(a), "line 3"),
        (str(b), "line 2"),
    ]


def test_utf8_bom_header_and_short_row(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(
        b"\xef\xbb\xbfdate,symbol,open,high,low,close,volume\n"
        b"2020-01-02,AAA,10,11,9,10.5,1000\n"
        b"2020-01-03,AAA,10.5,12,10,11\n"  # volume missing: read as null, refused by validation
    )
    raw = read_bars(path)
    assert raw.frame["volume"].to_list() == [1000.0, None]
    with pytest.raises(DataValidationError, match=r"bom\.csv line 3, column 'volume': null"):
        read_files([path])


@pytest.mark.parametrize(
    ("encoding", "named"),
    [("utf-16", "UTF-16"), ("utf-16-be", "UTF-16 or UTF-32 (NUL bytes"), ("utf-32", "UTF-32")],
)
@pytest.mark.parametrize("gz", [False, True])
def test_a_wide_encoding_is_named_not_read_as_a_missing_column(tmp_path, encoding, named, gz):
    import gzip

    text = "date,symbol,open,high,low,close,volume\n2020-01-02,AAA,10,11,9,10.5,1000\n"
    data = text.encode(encoding)  # utf-16/utf-32 write a BOM; utf-16-be writes none
    path = tmp_path / ("wide.csv.gz" if gz else "wide.csv")
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(
        InputError, match=r"wide\.csv(\.gz)? line 1: the file is " + re.escape(named)
    ):
        read_bars(path)


def test_blank_lines_are_skipped_and_later_lines_keep_their_numbers(tmp_path):
    path = tmp_path / "blank.csv"
    path.write_bytes(
        b"date,symbol,open,high,low,close,volume\n"
        b"2020-01-02,AAA,10,11,9,10.5,1000\n"
        b"\n"
        b"2020-01-03,AAA,10.5,12,10,11,x\n"  # line 4: the bad volume is named at its line
        b"\r\n"
    )
    with pytest.raises(DataValidationError, match=r"blank\.csv line 4, column 'volume'"):
        read_files([path])
    path.write_bytes(path.read_bytes().replace(b",x\n", b",900\n"))
    assert read_bars(path).frame["volume"].to_list() == [1000.0, 900.0]
    path.write_bytes(b"date,symbol,open,high,low,close,volume\n,,,,,,\n")  # not blank: refused
    with pytest.raises(DataValidationError, match=r"blank\.csv line 2, column 'symbol': null"):
        read_files([path])


def test_parquet_duplicate_check_looks_at_top_level_columns_only():
    from quantcli.data.reader import _top_level_names

    schema = [
        ("duckdb_schema", 3), ("a", None), ("l1", 1), ("list", 1), ("element", None),
        ("l2", 1), ("list", 1), ("element", None),
    ]  # fmt: skip
    assert _top_level_names(schema) == ["a", "l1", "l2"]  # "element" twice is no duplicate
