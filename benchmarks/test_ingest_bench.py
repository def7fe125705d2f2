"""Ingest throughput: quantcli against a bare DuckDB insert and a bare Polars CSV read.

Peers, run in the same test on the same data:

* ``ingest_frame`` (validate, sort, hash, count existing keys, upsert, record the ingest -- one
  transaction) against the bare minimum that stores the same bars: ``INSERT INTO bars SELECT *
  FROM arrow_table`` into the same schema (with its primary key) in a fresh DuckDB file. The
  ratio is the price of the guarantees; budget: at most 2.5x.
* ``read_bars`` on a CSV (text read, per-value parse with located errors, alias mapping)
  against ``pl.read_csv(try_parse_dates=True)``, which locates nothing; budget: at most 4x.

500 symbols x 5000 days (2.5 M bars) is marked ``slow``; the unmarked 50 x 1000 case keeps the
CI smoke run short.
"""

from __future__ import annotations

import time
from pathlib import Path

import duckdb
import polars as pl
import pytest

from quantcli import resources
from quantcli.data import ingest_frame, read_bars
from quantcli.store.offline import OfflineStore


def _bare_insert(bars: pl.DataFrame, path: Path) -> float:
    t0 = time.perf_counter()
    con = duckdb.connect(str(path))
    con.execute("SET enable_progress_bar = false")
    con.execute(resources.sql("schema_core"))
    con.register("staged", bars.to_arrow())
    con.execute("BEGIN")
    con.execute("INSERT INTO bars SELECT * FROM staged")
    con.execute("COMMIT")
    con.close()
    return time.perf_counter() - t0


def _ours(bars: pl.DataFrame, path: Path) -> float:
    t0 = time.perf_counter()
    with OfflineStore(path) as store:
        result = ingest_frame(bars, store=store)
    elapsed = time.perf_counter() - t0
    assert result.rows_inserted == bars.height
    return elapsed


def _ingest_case(benchmark, bars: pl.DataFrame, tmp: Path, budget_s: float, max_ratio=2.5):
    t_peer = min(_bare_insert(bars, tmp / f"peer{i}.duckdb") for i in range(2))
    runs = iter(range(100))
    t_ours = benchmark.pedantic(
        lambda: _ours(bars, tmp / f"ours{next(runs)}.duckdb"), rounds=2, iterations=1
    )
    t_ours = min(t_ours, _ours(bars, tmp / "ours_last.duckdb"))
    ratio = t_ours / t_peer
    benchmark.extra_info.update({"ingest_frame_s": t_ours, "bare_insert_s": t_peer, "ratio": ratio})
    print(
        f"\ningest {bars.height} bars: ingest_frame {t_ours:.2f} s "
        f"({bars.height / t_ours / 1e6:.2f} M bars/s), bare DuckDB insert {t_peer:.2f} s, "
        f"ratio {ratio:.2f}x"
    )
    if not benchmark.disabled:  # budgets: `pytest benchmarks`; the smoke run checks it runs
        assert ratio <= max_ratio, f"ingest is {ratio:.2f}x the bare insert (budget {max_ratio}x)"
        assert t_ours <= budget_s, f"ingest took {t_ours:.2f} s (budget {budget_s} s)"


def test_ingest_50x1000_vs_bare_duckdb_insert(benchmark, universe_50x1000, tmp_path):
    # small frames are dominated by fixed costs (connect, schema, count query): looser ratio
    _ingest_case(benchmark, universe_50x1000, tmp_path, budget_s=5.0, max_ratio=4.0)


@pytest.mark.slow
def test_ingest_500x5000_vs_bare_duckdb_insert(benchmark, universe_500x5000, tmp_path):
    _ingest_case(benchmark, universe_500x5000, tmp_path, budget_s=60.0)


def test_reingest_is_cheaper_than_the_first_ingest(benchmark, universe_50x1000, tmp_path):
    path = tmp_path / "re.duckdb"
    t_first = min(_ours(universe_50x1000, tmp_path / "first.duckdb"), _ours(universe_50x1000, path))

    def again() -> float:
        t0 = time.perf_counter()
        with OfflineStore(path) as store:
            res = ingest_frame(universe_50x1000, store=store)
        assert res.rows_unchanged == universe_50x1000.height
        return time.perf_counter() - t0

    t_again = benchmark.pedantic(again, rounds=2, iterations=1)
    print(
        f"\nre-ingest {universe_50x1000.height} unchanged bars: {t_again:.2f} s "
        f"(first ingest {t_first:.2f} s)"
    )
    if not benchmark.disabled:  # budgets: `pytest benchmarks`; the smoke run checks it runs
        assert t_again <= 2.0 * t_first


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _csv_case(benchmark, bars: pl.DataFrame, tmp: Path, max_ratio: float = 4.0, repeat=1) -> None:
    path = tmp / "bars.csv"
    bars.with_columns(pl.col("ts").dt.date().alias("ts")).write_csv(path)
    # best of `repeat` runs each: small cases are otherwise dominated by scheduler noise
    peers = [_timed(lambda: pl.read_csv(path, try_parse_dates=True)) for _ in range(repeat)]
    t_peer, peer = min(peers, key=lambda x: x[0])
    t0 = time.perf_counter()
    raw = benchmark.pedantic(read_bars, args=(path,), rounds=1, iterations=1)
    t_ours = min(
        [time.perf_counter() - t0] + [_timed(lambda: read_bars(path))[0] for _ in range(repeat - 1)]
    )
    assert raw.frame.height == peer.height == bars.height
    assert raw.frame["close"].equals(peer["close"])
    ratio = t_ours / t_peer
    print(
        f"\nread {bars.height} CSV bars: read_bars {t_ours:.2f} s, pl.read_csv {t_peer:.2f} s, "
        f"ratio {ratio:.2f}x"
    )
    if not benchmark.disabled:  # budgets: `pytest benchmarks`; the smoke run checks it runs
        assert ratio <= max_ratio


def test_read_csv_50x1000_vs_polars(benchmark, universe_50x1000, tmp_path):
    _csv_case(benchmark, universe_50x1000, tmp_path, max_ratio=5.0, repeat=3)


@pytest.mark.slow
def test_read_csv_500x5000_vs_polars(benchmark, universe_500x5000, tmp_path):
    _csv_case(benchmark, universe_500x5000, tmp_path)
