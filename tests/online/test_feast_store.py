"""Feast generated from feature_defs: online == offline latest row, PIT join == DuckDB oracle,
incremental materialization, offline fallback and its counters, SQLite and a real Redis."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import numpy as np
import polars as pl
import pytest

from online._features import feature_frame, latest_rows, write_feature_table
from online.conftest import redis_server
from quantcli.errors import InputError, NotFoundError
from quantcli.online import (
    MaterializeResult,
    feast_objects,
    get_feature_store,
    load_declaration,
    materialize,
    pit_join_duckdb,
    redis_connection_string,
)
from quantcli.workspace import Workspace

NAMES = load_declaration().feature_names


def assert_online_equals_offline_latest(store, frame: pl.DataFrame) -> None:
    latest = latest_rows(frame)
    symbols = latest["symbol"].to_list()
    got = store.get_online_features(symbols=symbols, feature_refs=None)
    assert got.features == NAMES
    expected = latest.select(NAMES).to_numpy()
    # exact: float64 goes through Feast's protobuf double unchanged
    np.testing.assert_array_equal(got.values, expected)
    assert got.fallback == [None] * len(symbols)
    assert got.feature_ts == [t.isoformat() for t in latest["ts"].to_list()]


# -- the generated objects --------------------------------------------------------------------
def test_feature_view_is_generated_from_the_declaration(module_home):
    decl = load_declaration("technical_v1")
    entity, view = feast_objects(decl)
    assert entity.name == "symbol" and entity.join_key == "symbol"
    assert view.name == "technical_features_v1"
    # Feast keeps fields in a set-like order; the wrapper addresses them by name
    assert sorted(f.name for f in view.features) == sorted(NAMES)
    assert len(NAMES) == 29
    assert {str(f.dtype) for f in view.features} == {"Float64"}
    assert view.ttl == timedelta(days=5)
    assert view.batch_source.timestamp_field == "ts"


def test_redis_url_becomes_feast_connection_string():
    assert redis_connection_string("redis://127.0.0.1:6399/2") == "127.0.0.1:6399,db=2"
    assert redis_connection_string("redis://:s3cret@h:7000") == "h:7000,password=s3cret"
    with pytest.raises(InputError, match="redis://"):
        redis_connection_string("http://localhost:6379")


# -- SQLite: the guarantees ---------------------------------------------------------------------
def test_materialize_then_online_equals_offline_latest_row(materialized, features):
    assert isinstance(materialized, MaterializeResult) and materialized.passed
    assert materialized.incremental is False
    assert materialized.symbols == 6 and materialized.rows_exported == features.height
    # the JSON keys are the documented ones (no verdict fields); dict access still works
    assert "passed" not in materialized.to_dict()
    assert materialized["symbols"] == 6
    assert_online_equals_offline_latest(get_feature_store(), features)


def test_online_subset_of_features_in_requested_order(materialized, features):
    store = get_feature_store()
    refs = ["rsi_14", "technical_features_v1:nma_9"]
    got = store.get_online_features(symbols=["SYM0002", "SYM0000", "SYM0002"], feature_refs=refs)
    assert got.features == ["rsi_14", "nma_9"]
    latest = latest_rows(features).sort("symbol")
    want = {r["symbol"]: [r["rsi_14"], r["nma_9"]] for r in latest.iter_rows(named=True)}
    np.testing.assert_array_equal(got.values, [want["SYM0002"], want["SYM0000"], want["SYM0002"]])
    with pytest.raises(NotFoundError, match="no_such"):
        store.get_online_features(symbols=["SYM0000"], feature_refs=["no_such"])
    with pytest.raises(InputError):
        store.get_online_features(symbols=[], feature_refs=None)


def _entity_df(frame: pl.DataFrame) -> pl.DataFrame:
    """Entity rows that exercise every PIT case: exactly on a bar, between bars (weekend), before
    the first bar, just inside and just outside the 5-day TTL after the last bar, unknown symbol."""
    ts = frame.filter(pl.col("symbol") == "SYM0001")["ts"]
    first, last = ts[0], ts[-1]
    rows = [
        ("SYM0001", ts[40]),
        ("SYM0001", ts[40] + timedelta(hours=1)),
        ("SYM0003", ts[10] + timedelta(days=1, hours=12)),
        ("SYM0002", first - timedelta(days=1)),
        ("SYM0004", last + timedelta(days=5)),  # ttl boundary: still inside
        ("SYM0004", last + timedelta(days=5, seconds=1)),  # just outside
        ("SYM0005", ts[79]),
        ("NOPE", ts[50]),
        ("SYM0000", ts[2]),  # inside the warm-up: NULL features
    ]
    return pl.DataFrame(
        {"symbol": [r[0] for r in rows], "ts": [r[1] for r in rows]},
        schema={"symbol": pl.String, "ts": pl.Datetime("us", "UTC")},
    )


def test_historical_features_equal_the_duckdb_point_in_time_join(materialized, features):
    entities = _entity_df(features)
    got = get_feature_store().get_historical_features(entity_df=entities, features=NAMES)
    oracle = pit_join_duckdb(entities, NAMES)
    assert got.columns == ["symbol", "ts", *NAMES]
    assert got.select("symbol", "ts").equals(entities)
    assert got.equals(oracle), (got, oracle)
    # and the oracle itself against the table: rows 0/1 are bar 40 of SYM0001, 3/5/7 are NULL
    bar40 = features.filter(pl.col("symbol") == "SYM0001").row(40, named=True)
    assert got.row(0, named=True)["rsi_14"] == bar40["rsi_14"]
    assert got.row(1, named=True)["rsi_14"] == bar40["rsi_14"]
    nulls = got.select(pl.all_horizontal(pl.col(NAMES).is_null()).alias("n"))["n"].to_list()
    assert nulls == [False, False, False, True, False, True, False, True, False]


def test_incremental_materialize_picks_up_new_bars(module_home, materialized, features):
    """Append two new bars for SYM0000 and SYM0001 (new values), re-materialize incrementally."""
    extra = []
    for sym in ("SYM0000", "SYM0001"):
        last = latest_rows(features).filter(pl.col("symbol") == sym)
        for k in (1, 2):
            extra.append(
                last.with_columns(
                    pl.col("ts") + pl.duration(days=k + 2),
                    *(
                        pl.lit(100.0 * k + j, dtype=pl.Float64).alias(n)
                        for j, n in enumerate(NAMES)
                    ),
                )
            )
    grown = pl.concat([features, *extra]).sort("symbol", "ts")
    write_feature_table(grown)
    result = materialize("technical_v1")
    assert result.incremental is True
    assert result.start == materialized.end
    assert_online_equals_offline_latest(get_feature_store(), grown)
    write_feature_table(features)  # restore for the other tests of this module
    assert materialize("technical_v1", full=True).incremental is False


def test_an_explicit_workspace_is_used_whatever_qcli_home_says(
    module_home, materialized, features, tmp_path, monkeypatch
):
    entities = _entity_df(features)
    oracle = pit_join_duckdb(entities, NAMES)
    monkeypatch.setenv("QCLI_HOME", str(tmp_path))  # an empty home: nothing materialized there
    with pytest.raises(NotFoundError, match="materialize"):
        get_feature_store()
    ws = Workspace.at(module_home)
    assert_online_equals_offline_latest(get_feature_store(workspace=ws), features)
    assert pit_join_duckdb(entities, NAMES, workspace=ws).equals(oracle)
    assert not (tmp_path / "feast").exists()


# -- fallback ---------------------------------------------------------------------------------
def test_missing_and_stale_symbols_fall_back_to_the_offline_store_and_are_counted(qcli_home):
    frame = feature_frame(n_symbols=3, n_days=60, seed=11)
    # SYM0002's feed stops 10 business days early: more than the 5-day TTL behind the universe
    frame = frame.filter(
        (pl.col("symbol") != "SYM0002") | (pl.col("ts") <= frame["ts"].max() - timedelta(days=14))
    )
    write_feature_table(frame)
    materialize("technical_v1")
    # a symbol that appears offline after the materialization: missing online
    newcomer = frame.filter(pl.col("symbol") == "SYM0000").with_columns(
        pl.lit("NEWCO").alias("symbol"), *(pl.col(n) * 2 for n in NAMES)
    )
    write_feature_table(pl.concat([frame, newcomer]))
    store = get_feature_store()
    got = store.get_online_features(symbols=["SYM0000", "NEWCO", "SYM0002", "SYM0001"])
    assert got.fallback == [None, "missing", "stale", None]
    latest = latest_rows(pl.concat([frame, newcomer]))
    want = {r[0]: list(r[2:]) for r in latest.select("symbol", "ts", *NAMES).iter_rows()}
    np.testing.assert_array_equal(got.values[1], want["NEWCO"])
    np.testing.assert_array_equal(got.values[2], want["SYM0002"])
    assert got.feature_ts[1] == latest.filter(pl.col("symbol") == "NEWCO")["ts"][0].isoformat()
    store.get_online_features(symbols=["SYM0001"])
    assert store.stats() | {} == store.stats()
    c = store.counters.as_dict()
    assert (c["hits"], c["fallback_missing"], c["fallback_stale"]) == (3, 1, 1)
    assert c["hit_rate"] == pytest.approx(3 / 5) and c["fallback_rate"] == pytest.approx(2 / 5)
    with pytest.raises(NotFoundError, match="unknown symbol 'ZZZ'"):
        store.get_online_features(symbols=["SYM0000", "ZZZ"])


# -- Redis ------------------------------------------------------------------------------------
@pytest.mark.integration
def test_redis_online_store_materializes_and_reads_back(qcli_home, redis_url, qcli):
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()  # the CI server is dedicated to tests; start from an empty database
    client.close()
    frame = feature_frame(n_symbols=4, n_days=50, seed=5)
    write_feature_table(frame)
    run = qcli(
        "features", "materialize", "--online-store", "redis", "--redis-url", redis_url, "--json"
    )
    assert run.code == 0, run.err
    result = run.json
    assert result["online_store"] == "redis" and result["symbols"] == 4
    store = get_feature_store()
    assert store.online_store == "redis"
    assert_online_equals_offline_latest(store, frame)


# -- the CLI ----------------------------------------------------------------------------------
def test_cli_materialize_json_then_incremental(qcli_home, qcli):
    write_feature_table(feature_frame(n_symbols=2, n_days=40, seed=2))
    first = qcli("features", "materialize", "--json")
    assert first.code == 0, first.err
    res = first.json  # stdout is exactly one JSON object (Feast's prints go to stderr)
    assert res["incremental"] is False and res["feature_view"] == "technical_features_v1"
    assert list(res) == [
        "feature_set", "feature_view", "online_store", "engine", "incremental", "start", "end",
        "rows_exported", "symbols", "features", "ttl_days", "parquet", "repo", "seconds",
    ]  # fmt: skip
    again = qcli("features", "materialize", "--json")
    assert again.code == 0 and again.json["incremental"] is True


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--online-store", "cassandra"], "--online-store"),
        (["--online-store", "redis"], "--redis-url"),
        (["--online-store", "redis", "--redis-url", "http://x"], "redis://"),
        (["--feature-set", "nope_v9"], "nope_v9"),
    ],
)
def test_cli_materialize_bad_input_exit_2(qcli_home, monkeypatch, qcli, args, needle):
    monkeypatch.delenv("QCLI_REDIS_URL", raising=False)
    write_feature_table(feature_frame(n_symbols=1, n_days=30, seed=2))
    code, out, err = qcli("features", "materialize", *args)
    assert code == 2, err
    assert needle in err and out == ""
    assert not (qcli_home / "feast" / "quantcli_state.json").exists()


def test_cli_materialize_without_feature_table_exit_2(qcli_home, qcli):
    code, _, err = qcli("features", "materialize")
    assert code == 2
    assert "ingest" in err or "technical_features_v1" in err


def test_wrapper_before_materialize_says_what_to_run(qcli_home):
    with pytest.raises(NotFoundError, match="materialize"):
        get_feature_store()


def test_entity_df_must_be_timezone_aware(materialized):
    naive = pl.DataFrame({"symbol": ["SYM0000"], "ts": [datetime(2000, 3, 1)]})
    with pytest.raises(InputError, match="timezone-aware"):
        get_feature_store().get_historical_features(entity_df=naive, features=["rsi_14"])
    aware = naive.with_columns(pl.col("ts").dt.replace_time_zone("UTC"))
    assert get_feature_store().get_historical_features(aware, ["rsi_14"]).height == 1
    assert datetime(2000, 3, 1, tzinfo=UTC) == aware["ts"][0]


@pytest.mark.integration
def test_a_redis_password_never_reaches_the_state_file(qcli_home, qcli, monkeypatch, tmp_path):
    """A password-protected redis-server: materialize with the password in the URL, then read
    back with it in QCLI_REDIS_PASSWORD; the state file and the repo hold no secret."""
    from quantcli.online.repo import REDIS_PASSWORD_ENV, url_with_password, url_without_password

    secret = "s3cret/with:odd@chars"
    with redis_server("--dir", str(tmp_path), password=secret) as port:
        bare = f"redis://127.0.0.1:{port}/0"
        url = f"redis://:{quote(secret, safe='')}@127.0.0.1:{port}/0"
        assert url_without_password(url) == bare
        frame = feature_frame(n_symbols=3, n_days=40, seed=4)
        write_feature_table(frame)
        run = qcli("features", "materialize", "--online-store", "redis", "--redis-url", url)
        assert run.code == 0, run.err
        repo = qcli_home / "feast"
        on_disk = "".join(p.read_text(errors="replace") for p in repo.glob("*.*") if p.is_file())
        assert secret not in on_disk and quote(secret, safe="") not in on_disk
        state = json.loads((repo / "quantcli_state.json").read_text())
        assert state["technical_v1"]["redis_url"] == bare
        # the reader finds the password where the secret lives: the environment
        monkeypatch.setenv(REDIS_PASSWORD_ENV, secret)
        assert url_with_password(bare) == url
        assert_online_equals_offline_latest(get_feature_store(), frame)
        monkeypatch.delenv(REDIS_PASSWORD_ENV)
        monkeypatch.setenv("QCLI_REDIS_URL", url)  # or the URL variable naming that server
        assert url_with_password(bare) == url
        assert url_with_password(f"redis://127.0.0.1:{port + 1}/0").count("@") == 0
