"""The bundled real sample: exact rows against the raw CSV, and its known quirks."""

from __future__ import annotations

import csv
import gzip
from datetime import UTC, datetime

import polars as pl

from quantcli.data import load_sample, validate_bars
from quantcli.data.sample import sample_paths


def _raw_rows() -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for path in sample_paths():
        with gzip.open(path, "rt", newline="") as fh:
            rows.extend(csv.DictReader(fh))
    return rows


def test_load_sample_schema_and_order():
    df = load_sample()
    assert df.columns == ["symbol", "ts", "open", "high", "low", "close", "volume"]
    assert df.schema["ts"] == pl.Datetime("us", "UTC")
    assert all(df.schema[c] == pl.Float64 for c in ("open", "high", "low", "close", "volume"))
    assert df.height == 10062
    assert df["symbol"].value_counts().sort("symbol").rows() == [("IXIC", 5031), ("SPX", 5031)]
    assert df.equals(df.sort("symbol", "ts"))


def test_load_sample_equals_the_raw_csv_row_for_row():
    """An independent oracle: Python's csv module on the shipped files."""
    raw = sorted(_raw_rows(), key=lambda r: (r["symbol"], r["date"]))
    df = load_sample()
    assert len(raw) == df.height
    for r, row in zip(raw, df.iter_rows(named=True), strict=True):
        assert row["symbol"] == r["symbol"]
        assert row["ts"] == datetime.fromisoformat(r["date"]).replace(tzinfo=UTC)
        for col in ("open", "high", "low", "close", "volume"):
            assert row[col] == float(r[col])


def test_sample_first_spx_bar_and_zero_volume_quirk():
    df = load_sample()
    first_spx = df.filter(pl.col("symbol") == "SPX").row(0, named=True)
    assert first_spx["ts"] == datetime(1999, 1, 4, tzinfo=UTC)
    assert (first_spx["open"], first_spx["close"]) == (1229.22998, 1228.099976)
    zero = df.filter(pl.col("volume") == 0)
    assert zero.select("symbol", pl.col("ts").dt.date().cast(pl.String)).rows() == [
        ("IXIC", "2015-05-12"),
        ("IXIC", "2018-01-09"),
    ]


def test_sample_validates_with_exactly_the_zero_volume_and_market_closure_warnings():
    report = validate_bars(load_sample(), source="sample")
    assert [(w.check, w.count) for w in report.warnings] == [("zero_volume", 2), ("gap", 6)]
    assert [e["location"] for e in report.get("zero_volume").examples] == ["row 4114", "row 4785"]


def test_load_sample_returns_an_independent_copy():
    a = load_sample()
    a = a.with_columns(pl.lit(0.0).alias("close"))
    assert load_sample()["close"].min() > 0
