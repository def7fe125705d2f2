"""build_features against a real DuckDB store: incremental == full rebuild, atomicity, records."""

from __future__ import annotations

import json

import polars as pl
import pytest

from quantcli.data.ingest import ingest_frame
from quantcli.data.synthetic import synthetic_universe
from quantcli.errors import InputError, NotFoundError
from quantcli.features import FeatureGenerator, compute_features
from quantcli.features.build import build_features, compute_shard
from quantcli.store.offline import OfflineStore

TABLE = "technical_features_v1"


def _table(order: str = "symbol, ts") -> pl.DataFrame:
    with OfflineStore(read_only=True) as store:
        return store.con.sql(f"SELECT * FROM {TABLE} ORDER BY {order}").pl()


@pytest.fixture(scope="module")
def universe() -> pl.DataFrame:
    return synthetic_universe(6, 600, seed=21)


def _days(bars: pl.DataFrame) -> pl.Series:
    return bars["ts"].unique().sort()


def test_first_build_writes_compute_features_and_records_it(qcli_home, universe):
    ingest_frame(universe)
    result = build_features(shard_rows=1000)  # several shards and waves
    table = _table()
    expected = compute_features(universe)
    assert table.drop("symbol", "ts").equals(expected.drop("symbol", "ts"))
    assert table["symbol"].to_list() == expected["symbol"].to_list()
    assert (result.rows_written, result.rows_deleted) == (expected.height, 0)
    assert result.warmup_rows_dropped == 6 * 199
    assert result.bars_read == universe.height
    assert (
        result.input_sha256
        == FeatureGenerator().compute_technical(universe).metadata["input_sha256"]
    )
    with OfflineStore(read_only=True) as store:
        rec = store.con.execute(
            "SELECT feature_set, feature_version, mode, rows_written, warmup_rows_dropped, "
            "input_sha256, quality FROM feature_builds"
        ).fetchall()
    assert len(rec) == 1
    fs, version, mode, written, warm, sha, quality = rec[0]
    assert (fs, version, mode, written, warm, sha) == (
        "technical_v1", 1, "incremental", expected.height, 6 * 199, result.input_sha256,
    )  # fmt: skip
    q = json.loads(quality)
    assert q["non_finite"] == 0
    assert q["features"]["rsi_14"]["count"] == expected.height
    assert q["features"]["rsi_14"]["min"] == pytest.approx(expected["rsi_14"].min(), rel=1e-12)


def test_incremental_build_writes_only_new_rows_and_equals_full_rebuild(qcli_home, universe):
    days = _days(universe)
    ingest_frame(universe.filter(pl.col("ts") <= days[449]))
    first = build_features(shard_rows=1000)
    ingest_frame(universe)  # 150 new bars per symbol
    second = build_features(shard_rows=1000)
    assert second.rows_written == 6 * 150
    assert (second.rows_deleted, second.symbols_rewritten) == (0, [])
    assert first.rows_written + second.rows_written == 6 * (600 - 199)
    incremental = _table()
    full = build_features(full=True)
    assert full.rows_deleted == full.rows_written == incremental.height
    assert _table().equals(incremental)
    assert incremental.drop("symbol", "ts").equals(compute_features(universe).drop("symbol", "ts"))
    again = build_features()
    assert (again.rows_written, again.rows_deleted) == (0, 0)
    with OfflineStore(read_only=True) as store:  # the key is unique by construction
        n, keys = store.con.execute(
            f"SELECT count(*), count(DISTINCT (symbol, ts)) FROM {TABLE}"
        ).fetchall()[0]
    assert n == keys == 6 * (600 - 199)


def test_revised_history_rewrites_that_symbol_only(qcli_home, universe):
    ingest_frame(universe)
    build_features()
    day = _days(universe)[100]
    revised = universe.with_columns(
        pl.when((pl.col("symbol") == "SYM0002") & (pl.col("ts") == day))
        .then(pl.col("high") * 1.01)
        .otherwise(pl.col("high"))
        .alias("high")
    )
    ingest_frame(revised)
    result = build_features()
    assert result.symbols_rewritten == ["SYM0002"]
    assert result.rows_deleted == result.rows_written == 600 - 199
    expected = compute_features(revised)
    assert _table().drop("symbol", "ts").equals(expected.drop("symbol", "ts"))


def test_since_rewrites_from_the_date_with_full_history(qcli_home, universe):
    ingest_frame(universe)
    build_features()
    before = _table()
    day = _days(universe)[500]
    result = build_features(since=day.date().isoformat())
    assert result.mode == "since"
    assert result.rows_deleted == result.rows_written == 6 * 100
    assert _table().equals(before)  # values computed over the full history, so unchanged


def test_symbols_scope_and_unknown_symbol(qcli_home, universe):
    ingest_frame(universe)
    result = build_features(symbols=["SYM0004", "SYM0001"])
    assert result.symbols == ["SYM0001", "SYM0004"]
    assert _table()["symbol"].unique().sort().to_list() == ["SYM0001", "SYM0004"]
    with pytest.raises(NotFoundError, match="--symbols: no bars for NOPE"):
        build_features(symbols=["NOPE"])


def test_a_failed_build_leaves_the_store_as_it_was(qcli_home, universe):
    """The executor dies on the second wave: nothing of the first wave stays, no table appears."""
    ingest_frame(universe)

    class DiesOnSecondWave:
        name = "local"
        calls = 0

        def map(self, fn, tasks, *, on_done=None):
            self.calls += 1
            if self.calls == 2:
                raise RuntimeError("worker lost")
            return [fn(t) for t in tasks]

    with pytest.raises(RuntimeError, match="worker lost"):
        build_features(executor=DiesOnSecondWave(), shard_rows=600)  # 6 shards, 2 waves
    with OfflineStore(read_only=True) as store:
        assert not store.table_exists(TABLE)
        assert not store.table_exists("feature_builds")


def test_bad_options_are_input_errors(qcli_home, universe):
    ingest_frame(universe)
    with pytest.raises(InputError, match="--full and --since exclude each other"):
        build_features(full=True, since="2001-01-01")
    with pytest.raises(InputError, match="--since: cannot parse 'yesterday'"):
        build_features(since="yesterday")
    with pytest.raises(InputError, match="`shard_rows` must be at least 1"):
        build_features(shard_rows=0)


def test_no_bars_table_says_to_ingest(qcli_home):
    with pytest.raises(NotFoundError, match="the bars table is empty") as exc:
        build_features()
    assert "qcli data ingest" in exc.value.hint


def test_compute_shard_is_pure_and_picklable(universe):
    import pickle

    from quantcli.features.build import ShardTask

    task = ShardTask("technical_v1", universe, "incremental", None, {})
    res = compute_shard(pickle.loads(pickle.dumps(task)))
    assert res.rows.equals(compute_features(universe))
    assert res.rewrite == sorted(universe["symbol"].unique().to_list())


def test_rows_deleted_by_hand_are_rewritten_not_skipped(qcli_home, universe):
    ingest_frame(universe)
    build_features()
    complete = _table()
    with OfflineStore() as store:
        store.con.execute(f"DELETE FROM {TABLE} WHERE symbol = 'SYM0003' AND ts < '2001-01-01'")
    result = build_features()
    assert result.symbols_rewritten == ["SYM0003"]
    assert _table().equals(complete)


def test_memory_limit_is_set_for_the_build_and_restored(qcli_home, universe, monkeypatch):
    ingest_frame(universe)
    with OfflineStore() as store:
        before = store.con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
        build_features(store)
        after = store.con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
    assert after == before
    monkeypatch.setenv("QCLI_BUILD_MEMORY_LIMIT", "lots")
    with pytest.raises(InputError, match="QCLI_BUILD_MEMORY_LIMIT: DuckDB refused memory_limit"):
        build_features(full=True)
    assert not list(qcli_home.glob(".feature-build-*"))  # the Parquet staging is cleaned up
