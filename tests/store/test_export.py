"""`qcli data export` and `qcli features export`: the stored rows out, filtered, byte-stable."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from quantcli.data.synthetic import synthetic_universe


@pytest.fixture
def built_home(qcli_home: Path) -> Path:
    """Three synthetic symbols ingested and their technical_v1 features built."""
    from quantcli import build_features, ingest_frame

    ingest_frame(synthetic_universe(3, 260, seed=11), source="synthetic")
    build_features()
    return qcli_home


def test_features_export_parquet_is_the_stored_table_filtered(built_home, tmp_path, qcli):
    from quantcli.store.offline import OfflineStore

    out = tmp_path / "f.parquet"
    code, stdout, _ = qcli(
        "features", "export", "-o", str(out), "--symbols", "SYM0002,SYM0000",
        "--since", "2000-06-01", "--json",
    )  # fmt: skip
    assert code == 0
    result = json.loads(stdout)
    got = pl.read_parquet(out)
    with OfflineStore(read_only=True) as store:
        want = store.con.sql(
            "SELECT * FROM technical_features_v1 WHERE symbol IN ('SYM0000', 'SYM0002') "
            "AND ts >= TIMESTAMPTZ '2000-06-01 00:00:00+00' ORDER BY symbol, ts"
        ).pl()
    assert got.equals(want)
    assert got.height > 0 and got["ts"].min() >= datetime(2000, 6, 1, tzinfo=UTC)
    assert result["rows"] == got.height and result["symbols"] == ["SYM0000", "SYM0002"]
    assert result["format"] == "parquet" and result["feature_set"] == "technical_v1"


def test_exports_are_byte_stable_and_csv_round_trips_through_ingest(built_home, tmp_path, qcli):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    assert qcli("data", "export", "-o", str(a), "--symbols", "SYM0001")[0] == 0
    assert qcli("data", "export", "-o", str(b), "--symbols", "SYM0001")[0] == 0
    assert a.read_bytes() == b.read_bytes()
    assert a.read_text().splitlines()[0] == "symbol,ts,open,high,low,close,volume"
    # the CSV is an ingestible bar file: reading it back gives the stored bars
    from quantcli.data.reader import read_bars
    from quantcli.store.offline import OfflineStore

    back = read_bars(a).frame
    with OfflineStore(read_only=True) as store:
        stored = store.con.sql(
            "SELECT symbol, ts, open, high, low, close, volume FROM bars "
            "WHERE symbol = 'SYM0001' ORDER BY ts"
        ).pl()
    assert back.select(stored.columns).equals(stored.with_columns(pl.col("ts")))


def test_pandas_reads_the_parquet_export(built_home, tmp_path, qcli):
    import pandas as pd

    out = tmp_path / "bars.parquet"
    assert qcli("data", "export", "--output", str(out), "--until", "2000-01-31")[0] == 0
    df = pd.read_parquet(out)
    assert sorted(df["symbol"].unique()) == ["SYM0000", "SYM0001", "SYM0002"]
    assert str(df["ts"].dt.tz) in ("UTC", "Etc/UTC")
    assert df["ts"].max() <= pd.Timestamp("2000-01-31", tz="UTC")
    n_days = len(pd.bdate_range("2000-01-03", "2000-01-31"))  # the universe starts on Jan 3
    assert df.groupby("symbol").size().tolist() == [n_days] * 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--symbols", "NOPE"], "no rows of NOPE"),
        (["--since", "2000-13-01"], "--since: cannot parse"),
        (["--since", "2001-01-01", "--until", "2000-01-01"], "is after --until"),
        (["--format", "xml"], "xml"),
    ],
)
def test_bad_options_exit_2_and_write_nothing(built_home, tmp_path, qcli, args, message):
    out = tmp_path / "x.parquet"
    code, _, err = qcli("data", "export", "-o", str(out), *args)
    assert code == 2
    assert message in err
    assert list(tmp_path.iterdir()) == [p for p in tmp_path.iterdir() if p.name != "x.parquet"]
    assert not out.exists()


def test_export_without_a_store_or_table_exits_2(qcli_home, tmp_path, qcli):
    code, _, err = qcli("features", "export", "-o", str(tmp_path / "f.parquet"))
    assert code == 2 and "no offline store" in err
    from quantcli import ingest_frame

    ingest_frame(synthetic_universe(1, 30, seed=1), source="synthetic")
    code, _, err = qcli("features", "export", "-o", str(tmp_path / "f.parquet"))
    assert code == 2 and "technical_features_v1" in err and "qcli features build" in err
