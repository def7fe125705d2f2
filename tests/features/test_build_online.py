"""`qcli features build --online`: the latest offline row of every symbol reaches the online
store (real Feast SQLite and Redis stores) bit for bit; a failed online write exits 1 after the
offline commit and a re-run repairs it."""

from __future__ import annotations

import os

import polars as pl
import redis

from quantcli.data.ingest import ingest_frame
from quantcli.data.synthetic import synthetic_universe
from quantcli.features import feature_names
from quantcli.store.offline import OfflineStore

TABLE = "technical_features_v1"


def _online(online_store: str, redis_url: str | None, symbols: list[str]) -> pl.DataFrame:
    from quantcli.online import load_declaration, repo_config
    from quantcli.online._feast import import_feast

    decl = load_declaration("technical_v1")
    cfg = repo_config(online_store, redis_url, "local")
    store = import_feast().FeatureStore(config=cfg)
    refs = [f"{decl.view_name}:{n}" for n in feature_names()]
    got = store.get_online_features(
        features=refs, entity_rows=[{"symbol": s} for s in symbols]
    ).to_dict()
    return pl.DataFrame({"symbol": got["symbol"], **{n: got[n] for n in feature_names()}})


def _latest_offline() -> pl.DataFrame:
    with OfflineStore(read_only=True) as store:
        return store.con.sql(
            f"SELECT * EXCLUDE (ts) FROM {TABLE} QUALIFY row_number() OVER "
            "(PARTITION BY symbol ORDER BY ts DESC) = 1 ORDER BY symbol"
        ).pl()


def test_build_online_writes_the_latest_rows_bit_for_bit_and_a_rerun_repairs(qcli_home, qcli):
    bars = synthetic_universe(3, 260, seed=5)
    days = bars["ts"].unique().sort()
    ingest_frame(bars.filter(pl.col("ts") <= days[249]))
    first = qcli("features", "build", "--online", "--json")
    assert first.code == 0, first.err
    assert first.json["online"]["symbols_written"] == 3
    symbols = ["SYM0000", "SYM0001", "SYM0002"]
    assert _online("sqlite", None, symbols).equals(_latest_offline())

    # the online write fails after the offline commit: exit 1, the offline rows are there
    ingest_frame(bars)
    bad = qcli(
        "features", "build", "--online", "--online-store", "redis",
        "--redis-url", "redis://127.0.0.1:1/0", "--json",
    )  # fmt: skip
    assert bad.code == 1 and bad.out == "", bad.err  # OnlineWriteError: a runtime failure
    assert "committed offline; the online write failed: ConnectionError" in " ".join(
        bad.err.split()
    )
    with OfflineStore(read_only=True) as store:
        assert store.con.execute(f"SELECT max(ts) FROM {TABLE}").fetchall()[0][0] == days[259]
    # the re-run computes nothing new and still brings the online store up to date
    url = os.environ.get("QCLI_TEST_REDIS_URL", "redis://127.0.0.1:6399/0")
    # Feast's Redis store keeps a newer row over an older one: start from an empty database
    # (the server is the tests'), so rows other tests wrote cannot hide this write
    redis.Redis.from_url(url).flushdb()
    again = qcli(
        "features", "build", "--online", "--online-store", "redis", "--redis-url", url, "--json"
    )
    assert again.code == 0, again.err
    out = again.json
    assert out["rows_written"] == 0
    assert out["online"]["symbols_written"] == 3
    assert _online("redis", url, symbols).equals(_latest_offline())


def test_bad_online_options_fail_before_anything_is_written(qcli_home, qcli):
    ingest_frame(synthetic_universe(1, 210, seed=1))
    res = qcli(
        "features", "build", "--online", "--online-store", "redis", "--redis-url", "http://x"
    )
    assert res.code == 2, res.err  # InputError: bad usage
    assert "redis" in res.err.lower()
    with OfflineStore(read_only=True) as store:
        assert not store.table_exists(TABLE)
