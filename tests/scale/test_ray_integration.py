"""Feature builds and CPCV backtests on the Ray executor give the local executor's exact results.

A real local Ray cluster (2 CPUs, the session fixture), real DuckDB stores, real LightGBM fits.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from quantcli.data.ingest import ingest_frame
from quantcli.data.synthetic import synthetic_universe
from quantcli.errors import InputError
from quantcli.features.build import build_features
from quantcli.store.offline import OfflineStore

TABLE = "technical_features_v1"
# Small shards (one symbol of 300 bars each) so a build is 10 tasks in 3 waves of 4: writes of
# earlier waves happen inside the transaction before a later wave fails.
SHARD_ROWS = 300
SMALL_LGBM = {"n_estimators": 20, "num_leaves": 7, "min_child_samples": 20}


def _bars() -> pl.DataFrame:
    return synthetic_universe(n_symbols=10, n_days=300, seed=11, ar1=0.2)


def _new_store(path: Path) -> OfflineStore:
    store = OfflineStore(path)
    ingest_frame(_bars(), store=store, source="synthetic")
    return store


def _table_sha256(store: OfflineStore, table: str, order: str, tmp: Path) -> str:
    """sha256 of the table exported to Parquet in a stable row order."""
    out = tmp / f"{table}-{hashlib.md5(str(store.path).encode()).hexdigest()}.parquet"
    store.con.execute(f"COPY (SELECT * FROM {table} ORDER BY {order}) TO '{out}' (FORMAT parquet)")
    return hashlib.sha256(out.read_bytes()).hexdigest()


def _store_snapshot(store: OfflineStore, tmp: Path) -> dict[str, str]:
    tables = [TABLE, "feature_builds", "feature_build_state", "bars"]
    return {t: _table_sha256(store, t, "ALL", tmp) for t in tables}


def test_ray_build_is_byte_identical_to_local(ray_cluster, tmp_path):
    with _new_store(tmp_path / "local.duckdb") as local, _new_store(tmp_path / "ray.duckdb") as rs:
        a = build_features(local, executor="local", shard_rows=SHARD_ROWS)
        progress: list[tuple[int, int]] = []
        b = build_features(
            rs, executor="ray", shard_rows=SHARD_ROWS, progress=lambda d, t: progress.append((d, t))
        )
        assert b.executor == "ray" and a.executor == "local"
        assert a.rows_written == b.rows_written > 0
        assert a.input_sha256 == b.input_sha256
        assert a.quality == b.quality
        assert progress == [(i, 10) for i in range(1, 11)]
        assert _table_sha256(local, TABLE, "symbol, ts", tmp_path) == _table_sha256(
            rs, TABLE, "symbol, ts", tmp_path
        )


def test_failing_shard_on_ray_fails_the_build_and_leaves_the_store_unchanged(ray_cluster, tmp_path):
    with _new_store(tmp_path / "store.duckdb") as store:
        build_features(store, executor="ray", shard_rows=SHARD_ROWS)
        before = _store_snapshot(store, tmp_path)
        # A symbol whose bars bypassed validation (a NaN close), sorting after 8 good symbols so
        # the failing task is in the last wave, after earlier waves were written.
        bad_ts = datetime(2001, 1, 2, tzinfo=UTC)
        with store.transaction() as con:
            con.execute(
                "INSERT INTO bars SELECT 'SYM0008B', ts, open, high, low, "
                "CASE WHEN ts = ? THEN 'NaN'::DOUBLE ELSE close END, volume "
                "FROM bars WHERE symbol = 'SYM0000'",
                [bad_ts],
            )
        with_bad = _store_snapshot(store, tmp_path)
        with pytest.raises(InputError) as info:
            build_features(store, executor="ray", shard_rows=SHARD_ROWS, full=True)
        assert str(info.value) == (
            "bars: column 'close' has a NaN or infinite value "
            "(symbol SYM0008B, ts 2001-01-02 00:00:00+00:00)"
        )
        # 11 one-symbol shards mapped in waves of 4: the bad one is task 1 of the third wave
        assert info.value.task_index == 1
        assert info.value.__notes__ == ["task 1 of 3 on the ray executor"]
        assert _store_snapshot(store, tmp_path) == with_bad
        assert {k: v for k, v in with_bad.items() if k != "bars"} == {
            k: v for k, v in before.items() if k != "bars"
        }


@pytest.fixture(scope="module")
def training_frame(tmp_path_factory):
    from quantcli.features.dataset import load_training_frame

    path = tmp_path_factory.mktemp("cpcv") / "store.duckdb"
    with _new_store(path) as store:
        build_features(store, executor="local", shard_rows=SHARD_ROWS)
        return load_training_frame(store)


def test_cpcv_backtest_on_ray_has_identical_metrics(ray_cluster, training_frame):
    from quantcli.backtest import CombinatorialPurgedCV
    from quantcli.backtest.engine import run_cpcv_backtest
    from quantcli.features.definitions import load_feature_set
    from quantcli.models.estimators import LightGBMFactory

    names = load_feature_set("technical_v1").feature_names
    kwargs = {
        "model_factory": LightGBMFactory(SMALL_LGBM, seed=5),
        "cv": CombinatorialPurgedCV(n_groups=6, n_test_groups=2, embargo_pct=0.01),
        "param_grid": [{"num_leaves": 7}, {"num_leaves": 15}],
    }
    local = run_cpcv_backtest(training_frame, names, executor="local", **kwargs)
    on_ray = run_cpcv_backtest(training_frame, names, executor="ray", **kwargs)
    assert len(local.fold_metrics) == 30  # C(6, 2) splits x 2 configurations
    assert on_ray.to_dict() == local.to_dict()
    assert on_ray.path_returns.tobytes() == local.path_returns.tobytes()
    assert on_ray.path_predictions.tobytes() == local.path_predictions.tobytes()
