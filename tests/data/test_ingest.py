"""Ingest into a real DuckDB store: round trip, idempotence, all-or-nothing, kill -9, busy store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import duckdb
import polars as pl
import pytest

from quantcli.data import ingest_frame, ingest_sample, load_sample, synthetic_universe
from quantcli.data.ingest import TEST_HOOK_ENV, TEST_HOOK_MARKER, bars_sha256
from quantcli.errors import DataValidationError
from tests.data.conftest import snapshot, stored_bars

BAD_CSV = """date,symbol,open,high,low,close,volume
2020-01-02,AAA,10,11,9,10.5,1000
2020-01-03,AAA,10.5,10.2,10,11,1200
2020-01-06,AAA,11,11.5,10.5,11.2,900
"""


def test_sample_round_trips_and_records_the_ingest(qcli_home):
    result = ingest_sample()
    assert (result.rows_in, result.rows_inserted, result.rows_updated) == (10062, 10062, 0)
    assert stored_bars(qcli_home).equals(load_sample())
    assert result.input_sha256 == bars_sha256(load_sample())
    con = duckdb.connect(str(qcli_home / "offline.duckdb"), read_only=True)
    sources, quality, ins = con.execute(
        "SELECT sources, quality, rows_inserted FROM ingests"
    ).fetchone()
    con.close()
    assert json.loads(sources) == ["sample:ndx_daily.csv.gz", "sample:spx_daily.csv.gz"]
    warnings = {w["check"]: w["count"] for w in json.loads(quality)["warnings"]}
    assert warnings == {"zero_volume": 2, "naive_timestamp": 10062, "gap": 6}
    assert ins == 10062


def test_reingest_is_idempotent_and_changes_are_upserted(qcli_home):
    bars = synthetic_universe(4, 50, seed=11)
    ingest_frame(bars)
    before = snapshot(qcli_home)["bars"]
    again = ingest_frame(bars)
    assert (again.rows_inserted, again.rows_updated, again.rows_unchanged) == (0, 0, 200)
    assert snapshot(qcli_home)["bars"] == before
    # change 3 bars (still valid) and add 1 new symbol of 50 bars
    changed = bars.with_columns(
        pl.when(pl.int_range(0, pl.len()).is_in([0, 60, 199]))
        .then(pl.col("volume") + 1)
        .otherwise(pl.col("volume"))
        .alias("volume")
    )
    extra = synthetic_universe(5, 50, seed=11).filter(pl.col("symbol") == "SYM0004")
    res = ingest_frame(pl.concat([changed, extra]))
    assert (res.rows_inserted, res.rows_updated, res.rows_unchanged) == (50, 3, 197)
    stored = stored_bars(qcli_home)
    assert stored.height == 250
    assert stored.equals(pl.concat([changed, extra]).sort("symbol", "ts"))


def test_refused_frame_leaves_store_as_it_was(qcli_home):
    ingest_frame(synthetic_universe(2, 30, seed=1))
    before = snapshot(qcli_home)
    bad = synthetic_universe(2, 30, seed=2).with_columns(
        pl.when(pl.int_range(0, pl.len()) == 45)
        .then(-1.0)
        .otherwise(pl.col("close"))
        .alias("close")
    )
    with pytest.raises(DataValidationError, match="row 45, column 'close'"):
        ingest_frame(bad)
    assert snapshot(qcli_home) == before


def test_exception_inside_the_transaction_rolls_back(qcli_home, monkeypatch):
    ingest_frame(synthetic_universe(2, 30, seed=1))
    before = snapshot(qcli_home)

    def boom() -> None:
        raise RuntimeError("injected failure after the insert")

    monkeypatch.setattr("quantcli.data.ingest._test_hook", boom)
    with pytest.raises(RuntimeError, match="injected"):
        ingest_frame(synthetic_universe(3, 40, seed=5))
    assert snapshot(qcli_home) == before


def test_cli_bad_row_exit_2_names_line_and_column_store_unchanged(qcli_home, write_csv, qcli):
    ingest_sample()
    before = snapshot(qcli_home)
    path = write_csv("bad.csv", BAD_CSV)
    out = qcli.subprocess("data", "ingest", str(path), timeout=120)
    assert out.code == 2, out.err
    first = out.err.strip().splitlines()[0]
    assert first.startswith(f"Error: {path} line 3, column 'high': high=10.2 is below")
    assert "(ohlc_inconsistent); 1 error(s)" in first
    assert snapshot(qcli_home) == before


def test_cli_refused_input_creates_no_store(qcli_home, write_csv, qcli):
    # in-process (the test above checks exit 2 from a real process)
    code, _, _ = qcli("data", "ingest", str(write_csv("bad.csv", BAD_CSV)))
    assert code == 2
    assert snapshot(qcli_home) is None


def test_cli_twice_same_file_json(qcli_home, write_csv, qcli):
    good = BAD_CSV.replace("10.5,10.2,10,11", "10.5,12,10,11")
    path = write_csv("good.csv", good)
    first = qcli("data", "ingest", str(path), "--json").json
    second = qcli("data", "ingest", str(path), "--json").json
    assert (first["rows_inserted"], second["rows_inserted"], second["rows_unchanged"]) == (3, 0, 3)
    assert first["input_sha256"] == second["input_sha256"]
    assert len(snapshot(qcli_home)["bars"]) == 3
    code, out, _ = qcli("data", "summary", "--json")
    assert code == 0
    summary = json.loads(out)
    assert summary["by_symbol"] == [
        {
            "symbol": "AAA",
            "rows": 3,
            "first_ts": "2020-01-02T00:00:00+00:00",
            "last_ts": "2020-01-06T00:00:00+00:00",
        }
    ]
    assert [i["rows_inserted"] for i in summary["ingests"]] == [0, 3]


def test_cli_usage_errors_exit_2(qcli_home, write_csv, qcli):
    assert qcli("data", "ingest").code == 2
    code, _, err = qcli("data", "ingest", "--sample", str(write_csv("x.csv", BAD_CSV)))
    assert code == 2 and "not both" in err
    code, _, err = qcli("data", "summary")
    assert code == 2 and "qcli data ingest" in err
    code, _, err = qcli("data", "ingest", "--sample", "--outlier-z", "-1")
    assert code == 2 and "--outlier-z" in err
    assert snapshot(qcli_home) is None


def test_cli_validate_writes_nothing(qcli_home, write_csv, qcli):
    code, out, err = qcli(
        "data", "validate", str(write_csv("s.csv", BAD_CSV.replace("10.2", "12"))), "--json"
    )
    assert code == 0, err
    assert json.loads(out)["quality"]["warnings"][0]["check"] == "naive_timestamp"
    code, out, err = qcli("data", "validate", str(write_csv("b.csv", BAD_CSV)))
    assert code == 2 and "b.csv line 3, column 'high'" in err
    assert snapshot(qcli_home) is None


@pytest.mark.timeout(180)
def test_kill_9_inside_the_transaction_leaves_store_intact(qcli_home, tmp_path):
    ingest_sample()
    before = snapshot(qcli_home)
    big = tmp_path / "big.parquet"
    synthetic_universe(200, 1000, seed=9).write_parquet(big)  # 200 k bars
    proc = subprocess.Popen(
        [sys.executable, "-m", "quantcli", "data", "ingest", str(big)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, TEST_HOOK_ENV: "60"},
    )
    try:
        for line in proc.stderr:  # the hook prints its marker after the inserts, before COMMIT
            if TEST_HOOK_MARKER in line:
                break
        else:
            pytest.fail(f"ingest ended without reaching the hook (rc={proc.wait()})")
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert snapshot(qcli_home) == before
    # and the store is usable afterwards
    assert ingest_frame(synthetic_universe(1, 10, seed=1)).rows_inserted == 10


@pytest.mark.timeout(120)
def test_second_process_gets_store_busy_exit_2(qcli_home, store_holder, qcli):
    for args in (("data", "ingest", "--sample"), ("data", "summary")):
        out = qcli.subprocess(*args, env={"QCLI_BUSY_TIMEOUT": "0.5"}, timeout=120)
        assert out.code == 2, out.err
        assert out.err.startswith("Error: store is busy"), out.err
    store_holder.kill()
    store_holder.wait()
    assert ingest_sample().rows_inserted == 10062  # the lock went with the holder


def test_csv_and_parquet_of_the_same_bars_hash_and_store_the_same(qcli_home, tmp_path):
    from quantcli.data import ingest_files

    bars = synthetic_universe(3, 40, seed=21)
    pq = tmp_path / "bars.parquet"
    bars.write_parquet(pq)
    csv_path = tmp_path / "bars.csv"
    # ISO timestamps with an explicit offset; float text round-trips exactly
    bars.reverse().write_csv(csv_path)
    from_pq = ingest_files([pq])
    assert stored_bars(qcli_home).equals(bars)
    from_csv = ingest_files([csv_path])
    assert from_csv.input_sha256 == from_pq.input_sha256 == bars_sha256(bars)
    assert (from_csv.rows_inserted, from_csv.rows_unchanged) == (0, 120)
    assert from_csv.quality.get("unsorted").count == 117  # reversed: all but each symbol's last


def test_cli_shows_user_text_with_brackets_literally(qcli_home, tmp_path, qcli):
    # a cell "[/b]" in a file named "m[2].csv": not rich markup, not a glob
    path = tmp_path / "m[2].csv"
    path.write_text(BAD_CSV.replace("10.5,1000", "[/b],1000"))
    code, _, err = qcli("data", "ingest", str(path))
    assert code == 2, err
    assert f"Error: {path} line 2, column 'close': cannot parse '[/b]' as a number" in err
    assert snapshot(qcli_home) is None
