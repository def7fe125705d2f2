"""build_features against a real DuckDB store: incremental == full rebuild, atomicity, records."""

from __future__ import annotations

import json
import time

import polars as pl
import pytest

from quantcli.data.ingest import ingest_frame
from quantcli.data.synthetic import synthetic_universe
from quantcli.errors import InputError, NotFoundError
from quantcli.features import FeatureGenerator, compute_features, load_feature_set
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


def test_a_non_finite_feature_is_refused_naming_where_and_nothing_is_written(qcli_home, universe):
    """A volume of 1e200 passes validation (finite, >= 0) but its z-score squares overflow:
    the build names the first symbol, bar and feature, and leaves the first build's rows."""
    ingest_frame(universe)
    build_features()
    before = _table()
    day = _days(universe)[500]
    huge = universe.with_columns(
        pl.when((pl.col("symbol") == "SYM0002") & (pl.col("ts") == day))
        .then(1e200)
        .otherwise(pl.col("volume"))
        .alias("volume")
    ).filter(pl.col("ts") == day)
    ingest_frame(huge)
    with pytest.raises(InputError) as exc:
        build_features()
    assert str(exc.value).endswith(
        f"(first: SYM0002 at {day.isoformat()}, feature volume_z_20); nothing written"
    )
    assert _table().equals(before)


def test_quality_of_finite_values_whose_squares_overflow():
    from quantcli.features.shard import feature_quality, feature_stats

    frame = pl.DataFrame({"x": [1e200, 3e200], "y": [1.0, 3.0]})
    quality = feature_quality(feature_stats(frame, ["x", "y"]), ["x", "y"])
    assert quality["features"]["x"] == {"count": 2, "mean": 2e200, "std": None, "min": 1e200,
                                        "max": 3e200, "zeros": 0}  # fmt: skip
    assert quality["features"]["y"]["std"] == 1.0 and quality["non_finite"] == 0
    json.dumps(quality, allow_nan=False)


def test_no_bars_table_says_to_ingest(qcli_home):
    with pytest.raises(NotFoundError, match="the bars table is empty") as exc:
        build_features()
    assert "qcli data ingest" in exc.value.hint


def test_compute_shard_is_pure_and_picklable(universe):
    import pickle

    from quantcli.features.shard import ShardTask

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


# --- the writer overlaps the next wave's compute --------------------------------------------

# feature_builds columns that legitimately differ between two builds of the same input
_PER_RUN = ("build_id", "built_at", "timings")


def _store_bytes() -> dict[str, pl.DataFrame]:
    """Every table of the store, rows in storage order (no ORDER BY), per-run columns dropped."""
    with OfflineStore(read_only=True) as store:
        tables = [t for (t,) in store.con.execute("SHOW TABLES").fetchall()]
        return {
            t: store.con.sql(f"SELECT * FROM {t}").pl().drop(_PER_RUN, strict=False)
            for t in sorted(tables)
        }


def test_overlapped_build_writes_the_same_bytes_as_the_serial_writer(qcli_home, universe):
    """Same store, table and feature_builds rows (timings and ids aside), in storage order."""
    ingest_frame(universe)
    days = _days(universe)
    base = qcli_home / "base.duckdb"
    (qcli_home / "offline.duckdb").rename(base)
    stores = {}
    for overlap in (False, True):
        (qcli_home / "offline.duckdb").write_bytes(base.read_bytes())
        first = build_features(shard_rows=600, overlap=overlap)  # 6 shards, 3 waves
        since = build_features(since=days[500].date().isoformat(), overlap=overlap)
        scoped = build_features(symbols=["SYM0005", "SYM0002"], full=True, overlap=overlap)
        stores[overlap] = _store_bytes()
        assert first.timings_s["write"] > 0 and "write_wait" in first.timings_s
        counts = [(r.rows_written, r.rows_deleted, r.input_sha256) for r in (first, since, scoped)]
        stores[overlap]["counts"] = counts
        (qcli_home / "offline.duckdb").unlink()
    serial, overlapped = stores[False], stores[True]
    assert serial["counts"] == overlapped["counts"]
    assert set(serial) == set(overlapped)
    for t in serial:
        if t != "counts":
            assert overlapped[t].equals(serial[t]), t
    assert serial[TABLE].height == 6 * (600 - 199)
    assert serial["feature_builds"].height == 3


class _ReversedExecutor:
    """Runs the tasks last to first (as a cluster may finish them) and returns them in order."""

    name = "local"
    workers = 3  # waves of 6 shards

    def map(self, fn, tasks, *, on_done=None):
        out = {}
        for i in reversed(range(len(tasks))):
            out[i] = fn(tasks[i])
            if on_done is not None:
                on_done(i)
        return [out[i] for i in range(len(tasks))]


def test_rows_are_written_in_shard_order_whatever_order_shards_finish(qcli_home, universe):
    ingest_frame(universe)
    build_features(executor=_ReversedExecutor(), shard_rows=300)  # 1 symbol a shard
    with OfflineStore(read_only=True) as store:  # storage order, no ORDER BY
        stored = store.con.sql(f"SELECT * FROM {TABLE}").pl()
    assert stored.equals(compute_features(universe))


def _writer_threads() -> list[str]:
    import threading

    return [t.name for t in threading.enumerate() if t.name.startswith("qcli-feature-writer")]


@pytest.mark.parametrize("failure", [RuntimeError("worker lost"), KeyboardInterrupt()])
def test_a_failure_while_the_previous_wave_is_written_leaves_the_store_as_it_was(
    qcli_home, universe, monkeypatch, failure
):
    """Wave 2's compute fails (or Ctrl-C) while wave 1 is being written in the background: the
    write is stopped, nothing is committed, and no writer thread survives the build."""
    import threading

    import quantcli.features.build_writer as build_mod

    ingest_frame(universe)
    build_features(symbols=["SYM0000"])
    before = _store_bytes()
    writing = threading.Event()
    real_insert = build_mod.insert_rows

    def slow_insert(*args):
        writing.set()
        real_insert(*args)
        time.sleep(0.2)  # still writing when wave 2 fails

    monkeypatch.setattr(build_mod, "insert_rows", slow_insert)

    class FailsOnSecondWave:
        name = "local"
        calls = 0

        def map(self, fn, tasks, *, on_done=None):
            self.calls += 1
            if self.calls == 2:
                assert writing.wait(5)  # the first wave's write is in flight
                raise failure
            return [fn(t) for t in tasks]

    with pytest.raises(type(failure)):
        build_features(executor=FailsOnSecondWave(), shard_rows=600, full=True)
    assert _writer_threads() == []
    after = _store_bytes()
    assert set(after) == set(before)
    assert all(after[t].equals(before[t]) for t in before)


def test_a_failed_background_write_fails_the_build_and_writes_nothing(
    qcli_home, universe, monkeypatch
):
    import quantcli.features.build_writer as build_mod

    ingest_frame(universe)
    calls = []
    real_insert = build_mod.insert_rows

    def disk_full(*args):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_insert(*args)

    monkeypatch.setattr(build_mod, "insert_rows", disk_full)
    with pytest.raises(OSError, match="No space left"):
        build_features(shard_rows=600)  # 6 shards, 3 waves
    assert len(calls) == 2  # the waves computed meanwhile were never written
    assert _writer_threads() == []
    with OfflineStore(read_only=True) as store:
        assert not store.table_exists(TABLE)
        assert not store.table_exists("feature_builds")


def test_abort_interrupts_a_write_in_flight_and_rolls_back(qcli_home, universe):
    """abort() on a wave still being written: the thread stops and ROLLBACK finds nothing."""
    import duckdb

    from quantcli import resources
    from quantcli.features.build_writer import WaveWriter, WriteCancelled
    from quantcli.features.shard import ShardTask

    big = synthetic_universe(40, 5000, seed=3)
    results = [compute_shard(ShardTask("technical_v1", big, "full", None, {}))]
    with OfflineStore() as store:
        with pytest.raises(KeyboardInterrupt), store.transaction() as con:
            con.execute(resources.sql("schema_features"))
            con.execute(load_feature_set("technical_v1").table_ddl())
            writer = WaveWriter(con, TABLE, "technical_v1", None, "full", False, str(qcli_home))
            writer.start(results, background=True)
            try:
                raise KeyboardInterrupt
            except BaseException:
                stopped = writer.abort()
                raise
            finally:
                writer.close()
        assert not store.table_exists(TABLE)
    # stopped mid-write (DuckDB's interrupt) or before it began (the flag), never run to the end
    assert isinstance(stopped, duckdb.InterruptException | WriteCancelled), repr(stopped)
    assert _writer_threads() == []


def test_wave_size_halves_when_two_waves_are_alive():
    from quantcli.features.build import wave_size

    assert wave_size(workers=64, shard_rows=250_000, n_features=29, waves_alive=2) == 14
    assert wave_size(workers=1, shard_rows=250_000, n_features=29, waves_alive=2) == 2
    with pytest.raises(InputError, match="`waves_alive` must be at least 1, got `waves_alive=0`"):
        wave_size(workers=1, shard_rows=1, n_features=1, waves_alive=0)


_KILLED_CHILD = """
import sys
from quantcli.features.build import build_features

def progress(done, total):
    if done == 6:  # waves 1-2 computed, wave 2 computing or wave 1 being written
        print("busy", flush=True)

build_features(full=True, shard_rows=2000, progress=progress)
print("finished", flush=True)
"""


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGINT"])
def test_a_killed_or_interrupted_build_leaves_the_store_as_it_was(qcli_home, sig):
    """kill -9 or Ctrl-C in the middle of an overlapped build: the store reopens unchanged
    (DuckDB never committed), and after Ctrl-C the process ends and its staging is removed."""
    import signal
    import subprocess
    import sys

    ingest_frame(synthetic_universe(60, 2000, seed=5))  # 60 shards of one symbol, 30 waves
    build_features(symbols=["SYM0001"])
    before = _store_bytes()
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_CHILD], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert child.stdout.readline().strip() == "busy"
        child.send_signal(getattr(signal, sig))
        out, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert "finished" not in out
    assert child.returncode != 0
    if sig == "SIGINT":
        # Python raises KeyboardInterrupt; when the signal lands inside a DuckDB query, DuckDB
        # raises its own "Query interrupted" instead (the CLI maps both to exit 130)
        assert "KeyboardInterrupt" in err or "Query interrupted" in err, err[-500:]
        assert not list(qcli_home.glob(".feature-build-*"))
    after = _store_bytes()
    assert set(after) == set(before)
    assert all(after[t].equals(before[t]) for t in before)
