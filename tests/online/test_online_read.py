"""The direct online read returns exactly what Feast's SDK returns, on SQLite and on a real
redis-server: same values (nulls included), same event timestamps, same fallbacks and counters
through the wrapper."""

from __future__ import annotations

import time
from datetime import timedelta

import numpy as np
import polars as pl
import pytest

from online._features import feature_frame, latest_rows, write_feature_table
from quantcli.online import get_feature_store, load_declaration, materialize

NAMES = load_declaration().feature_names
SUBSET = ["rsi_14", "nma_200", "return_20d", "nma_9"]  # not in declaration order


def frame_with_edge_cases(seed: int) -> pl.DataFrame:
    """Four symbols, plus SHORT (4 bars: its latest row has NULLs in the long-window features,
    which Feast stores as empty ValueProtos) and LAG (feed stopped 10 days early: stale)."""
    frame = feature_frame(n_symbols=4, n_days=40, seed=seed)
    short = (
        feature_frame(n_symbols=1, n_days=4, seed=seed + 1)
        .with_columns(pl.lit("SHORT").alias("symbol"))
        .with_columns(pl.col("ts") + (frame["ts"].max() - pl.col("ts").max()))
    )
    lag = frame.filter(
        (pl.col("symbol") == "SYM0003") & (pl.col("ts") <= frame["ts"].max() - timedelta(days=14))
    ).with_columns(pl.lit("LAG").alias("symbol"))
    return pl.concat([frame, short, lag]).sort("symbol", "ts")


def sdk_read(store, symbols: list[str], names: list[str]) -> tuple[np.ndarray, list[int]]:
    """The reference: ``feast.FeatureStore.get_online_features`` (values via ``to_dict()``)."""
    response = store.feast.get_online_features(
        features=store.feature_refs(names), entity_rows=[{"symbol": s} for s in symbols]
    )
    d = response.to_dict()
    values = np.array(
        [[np.nan if d[n][i] is None else d[n][i] for n in names] for i in range(len(symbols))],
        dtype=float,
    ).reshape(len(symbols), len(names))
    proto = response.proto  # results[k] is column k of metadata.feature_names (entity first)
    column = list(proto.metadata.feature_names.val).index(names[0])
    ts = [int(t.seconds) for t in proto.results[column].event_timestamps]
    return values, ts


def assert_direct_equals_sdk(symbols: list[str]) -> None:
    direct = get_feature_store(read_path="direct")
    assert direct.read_path == "direct"
    sdk = get_feature_store(read_path="feast")
    assert sdk.read_path == "feast"
    for names in (NAMES, SUBSET):
        want_values, want_ts = sdk_read(sdk, symbols, names)
        got_values, got_ts = direct._direct.read(symbols, names)
        # bit-exact, NaN where the SDK says null
        np.testing.assert_array_equal(got_values, want_values)
        assert got_ts == want_ts
    # the wrapper on top of either path: same values, timestamps, fallbacks and counters
    a = direct.get_online_features([s for s in symbols if s != "NOPE"])
    b = sdk.get_online_features([s for s in symbols if s != "NOPE"])
    np.testing.assert_array_equal(a.values, b.values)
    assert (a.feature_ts, a.fallback) == (b.feature_ts, b.fallback)
    assert direct.counters.as_dict() == sdk.counters.as_dict()


def _symbols(frame: pl.DataFrame) -> list[str]:
    syms = sorted(frame["symbol"].unique().to_list())
    return [*syms, "NOPE", syms[0], "SHORT"]  # unknown entity and duplicates included


def test_direct_sqlite_read_equals_the_feast_sdk(qcli_home):
    frame = frame_with_edge_cases(seed=21)
    write_feature_table(frame)
    materialize("technical_v1")
    symbols = _symbols(frame)
    assert_direct_equals_sdk(symbols)
    # the edge cases are really there: NULLs online for SHORT, LAG served as stale
    short = get_feature_store()._direct.read(["SHORT"], NAMES)[0][0]
    assert 0 < int(np.isnan(short).sum()) < len(NAMES)
    fb = get_feature_store().get_online_features(["SYM0000", "LAG"]).fallback
    assert fb == [None, "stale"]


def test_direct_read_follows_a_rematerialization_of_the_same_store(qcli_home):
    frame = feature_frame(n_symbols=2, n_days=30, seed=4)
    write_feature_table(frame)
    materialize("technical_v1")
    store = get_feature_store()
    before = store.get_online_features(["SYM0000"]).values.copy()
    bumped = frame.with_columns(*(pl.col(n) + 1.0 for n in NAMES))
    write_feature_table(bumped)
    materialize("technical_v1", full=True)
    time.sleep(1.1)  # the wrapper re-reads the materialization state at most once a second
    after = store.get_online_features(["SYM0000"])
    want = latest_rows(bumped).filter(pl.col("symbol") == "SYM0000").select(NAMES).to_numpy()
    np.testing.assert_array_equal(after.values, want)
    assert not np.array_equal(after.values, before)


@pytest.mark.integration
def test_direct_redis_read_equals_the_feast_sdk_including_an_expired_key(qcli_home, redis_url):
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()  # the test server is dedicated to tests
    frame = frame_with_edge_cases(seed=22)
    write_feature_table(frame)
    materialize("technical_v1", online_store="redis", redis_url=redis_url)
    store = get_feature_store()
    assert (store.online_store, store.read_path) == ("redis", "direct")
    assert_direct_equals_sdk(_symbols(frame))
    # a key expiring in Redis (what Feast's key_ttl_seconds does) is absent for both readers
    key = store._direct.entity_key("SYM0001") + b"quantcli"
    assert client.exists(key) == 1
    client.pexpire(key, 1)
    time.sleep(0.05)
    assert client.exists(key) == 0
    client.close()
    assert_direct_equals_sdk(["SYM0001", "SYM0000"])
    assert get_feature_store().get_online_features(["SYM0001"]).fallback == ["missing"]


def test_wrappers_in_one_process_share_one_feast_store(materialized):
    """Feast's global feature-resolution cache holds one registry snapshot: two FeatureStore
    objects reading in turn would invalidate it on every call."""
    a, b = get_feature_store(), get_feature_store(read_path="feast")
    assert a.feast is b.feast


def test_read_path_is_checked(materialized):
    from quantcli.errors import InputError

    with pytest.raises(InputError, match="read_path"):
        get_feature_store(read_path="fast")


def test_a_direct_read_that_disagrees_with_the_sdk_at_start_up_is_never_used(
    materialized, features, monkeypatch, caplog
):
    """The start-up self-check: a layout the direct reader misreads (simulated: every value off
    by one ulp) switches the wrapper to the SDK, which still serves the right numbers."""
    from quantcli.online.direct_read import DirectOnlineReader

    real_read = DirectOnlineReader.read

    def off_by_one_ulp(self, symbols, names):
        values, ts = real_read(self, symbols, names)
        return np.nextafter(values, np.inf), ts

    monkeypatch.setattr(DirectOnlineReader, "read", off_by_one_ulp)
    store = get_feature_store()
    assert store.read_path == "feast" and store.stats()["read_path"] == "feast"
    assert "disagrees" in caplog.text
    got = store.get_online_features(["SYM0001"])
    want = latest_rows(features).filter(pl.col("symbol") == "SYM0001").select(NAMES).to_numpy()
    np.testing.assert_array_equal(got.values, want)
