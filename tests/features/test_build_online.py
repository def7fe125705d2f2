"""`qcli features build --online`: the latest offline row of every symbol reaches the online
store (real Feast SQLite and Redis stores) bit for bit; a failed online write exits 1 after the
offline commit and a re-run repairs it."""

from __future__ import annotations

import json
import os

import polars as pl
from typer.testing import CliRunner

from quantcli.cli import app
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


def test_build_online_writes_the_latest_rows_bit_for_bit_and_a_rerun_repairs(qcli_home):
    bars = synthetic_universe(3, 260, seed=5)
    days = bars["ts"].unique().sort()
    ingest_frame(bars.filter(pl.col("ts") <= days[249]))
    runner = CliRunner()
    first = runner.invoke(app, ["features", "build", "--online", "--json"])
    assert first.exit_code == 0, first.output
    out = json.loads(first.output)
    assert out["online"]["symbols_written"] == 3
    symbols = ["SYM0000", "SYM0001", "SYM0002"]
    assert _online("sqlite", None, symbols).equals(_latest_offline())

    # the online write fails after the offline commit: exit 1, the offline rows are there
    ingest_frame(bars)
    bad = runner.invoke(
        app,
        ["features", "build", "--online", "--online-store", "redis",
         "--redis-url", "redis://127.0.0.1:1/0", "--json"],
    )  # fmt: skip
    from quantcli.online.write import OnlineWriteError

    assert isinstance(bad.exception, OnlineWriteError), bad.output
    assert bad.exception.exit_code == 1
    assert "committed offline; the online write failed: ConnectionError" in str(bad.exception)
    with OfflineStore(read_only=True) as store:
        assert store.con.execute(f"SELECT max(ts) FROM {TABLE}").fetchall()[0][0] == days[259]
    # the re-run computes nothing new and still brings the online store up to date
    url = os.environ.get("QCLI_TEST_REDIS_URL", "redis://127.0.0.1:6399/0")
    again = runner.invoke(
        app, ["features", "build", "--online", "--online-store", "redis", "--redis-url", url,
              "--json"],
    )  # fmt: skip
    assert again.exit_code == 0, again.output
    out = json.loads(again.output)
    assert out["rows_written"] == 0
    assert out["online"]["symbols_written"] == 3
    assert _online("redis", url, symbols).equals(_latest_offline())


def test_bad_online_options_fail_before_anything_is_written(qcli_home):
    ingest_frame(synthetic_universe(1, 210, seed=1))
    res = CliRunner().invoke(
        app, ["features", "build", "--online", "--online-store", "redis", "--redis-url", "http://x"]
    )
    from quantcli.errors import InputError

    assert isinstance(res.exception, InputError), res.output
    assert "redis" in str(res.exception).lower()
    with OfflineStore(read_only=True) as store:
        assert not store.table_exists(TABLE)
