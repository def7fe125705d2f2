"""Feast's Ray batch engine: config from the Ray address, same online values as the local engine,
and a loud refusal where Feast's engine would silently write nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from quantcli.data.ingest import ingest_frame
from quantcli.data.synthetic import synthetic_universe
from quantcli.errors import InputError
from quantcli.features.build import build_features
from quantcli.online.ray_engine import (
    check_ray_materialization_window,
    prepare_ray_materialization,
    ray_batch_engine,
)
from quantcli.store.offline import OfflineStore

SYMBOLS = [f"SYM{i:04d}" for i in range(4)]


def test_engine_config_follows_the_ray_address(monkeypatch):
    monkeypatch.delenv("QCLI_RAY_ADDRESS", raising=False)
    assert ray_batch_engine() == {"type": "ray.engine"}
    assert ray_batch_engine("ray://head-svc:10001", max_workers=4) == {
        "type": "ray.engine",
        "max_workers": 4,
        "ray_address": "ray://head-svc:10001",
    }
    monkeypatch.setenv("QCLI_RAY_ADDRESS", "auto")
    assert ray_batch_engine()["ray_address"] == "auto"
    with pytest.raises(InputError, match=r"^--ray-address 'http://x:1' is not a Ray address$"):
        ray_batch_engine("http://x:1")


def test_engine_config_is_accepted_by_feast():
    from feast.infra.compute_engines.ray.config import RayComputeEngineConfig

    cfg = RayComputeEngineConfig(**ray_batch_engine("ray://head-svc:10001"))
    assert cfg.ray_address == "ray://head-svc:10001"


def test_window_check_names_the_dates():
    now = datetime(2026, 11, 29, 12, tzinfo=UTC)
    check_ray_materialization_window(now - timedelta(days=4), timedelta(days=5), now=now)
    with pytest.raises(InputError) as info:
        check_ray_materialization_window(
            datetime(2001, 2, 23, tzinfo=UTC), timedelta(days=5), now=now
        )
    assert str(info.value) == (
        "--executor ray: the newest feature row (2001-02-23T00:00:00+00:00) is older than now - "
        "TTL (2026-11-24T12:00:00+00:00, TTL 5 days, 0:00:00); Feast's Ray engine would drop "
        "every row and write nothing to the online store"
    )


def _recent_bars() -> pl.DataFrame:
    """Synthetic bars shifted so the last bar is yesterday (UTC midnight): inside any TTL."""
    bars = synthetic_universe(n_symbols=len(SYMBOLS), n_days=260, seed=21)
    yesterday = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    shift = yesterday - timedelta(days=1) - bars["ts"].max()
    return bars.with_columns(pl.col("ts") + pl.duration(days=shift.days))


def _materialized(home, monkeypatch, engine: str) -> tuple[np.ndarray, list, list]:
    from quantcli.online import get_feature_store, materialize

    monkeypatch.setenv("QCLI_HOME", str(home))
    with OfflineStore() as store:
        ingest_frame(_recent_bars(), store=store, source="synthetic")
        build_features(store)
    if engine == "ray":
        assert prepare_ray_materialization().workers == 2  # joins the session cluster
    result = materialize(engine=engine, full=True)
    assert result["engine"] == engine
    online = get_feature_store().get_online_features(SYMBOLS)
    return online.values, online.feature_ts, online.fallback


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # ibis calls duckdb's deprecated API
def test_ray_engine_writes_the_local_engines_online_values(ray_cluster, tmp_path, monkeypatch):
    local = _materialized(tmp_path / "local", monkeypatch, "local")
    on_ray = _materialized(tmp_path / "ray", monkeypatch, "ray")
    assert local[2] == on_ray[2] == [None] * len(SYMBOLS)  # every symbol served online
    assert local[1] == on_ray[1]
    assert local[0].tobytes() == on_ray[0].tobytes()


def test_old_history_on_the_ray_engine_is_refused_before_feast_runs(
    ray_cluster, qcli_home, small_universe
):
    with OfflineStore() as store:
        ingest_frame(small_universe, store=store, source="synthetic")
        build_features(store)
        newest = store.con.execute("SELECT max(ts) FROM technical_features_v1").fetchall()[0][0]
    with pytest.raises(InputError) as info:
        prepare_ray_materialization()
    assert str(info.value).startswith(
        f"--executor ray: the newest feature row ({newest.astimezone(UTC).isoformat()}) is older "
        "than now - TTL ("
    )
    assert not (qcli_home / "feast").exists()  # nothing exported, applied or materialized
