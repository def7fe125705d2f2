"""Fixtures of the monitoring tests: a real offline store holding a feature table."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest

from quantcli.features.definitions import load_feature_set
from quantcli.store.offline import OfflineStore

#: Features shifted by one standard deviation from 2018 on (significant drift).
SHIFTED = ("nma_9", "rsi_14")


def synthetic_features(seed: int = 5) -> pl.DataFrame:
    """3 symbols x business days of 2017-2018, the 29 technical_v1 columns, N(0, 1) each;
    the SHIFTED features move by +1 from 2018-01-01."""
    names = load_feature_set("technical_v1").feature_names
    days = pl.datetime_range(
        datetime(2017, 1, 2, tzinfo=UTC), datetime(2018, 12, 31, tzinfo=UTC), "1d", eager=True
    )
    days = days.filter(days.dt.weekday() <= 5)
    rng = np.random.default_rng(seed)
    frames = []
    for sym in ("AAA", "BBB", "CCC"):
        data = {n: rng.standard_normal(days.len()) for n in names}
        frames.append(pl.DataFrame({"symbol": sym, "ts": days, **data}))
    df = pl.concat(frames)
    in_2018 = pl.col("ts") >= datetime(2018, 1, 1, tzinfo=UTC)
    return df.with_columns(
        [pl.when(in_2018).then(pl.col(n) + 1.0).otherwise(pl.col(n)).alias(n) for n in SHIFTED]
    )


@pytest.fixture
def feature_store(qcli_home):
    """$QCLI_HOME/offline.duckdb with technical_features_v1 (real DDL) filled synthetically."""
    df = synthetic_features()
    with OfflineStore() as store:
        store.con.execute(load_feature_set("technical_v1").table_ddl())
        store.con.register("_f", df.to_arrow())
        store.con.execute("INSERT INTO technical_features_v1 SELECT * FROM _f")
        store.con.unregister("_f")
    return df


@pytest.fixture(scope="session")
def mlflow_template(mlflow_template_db):
    """The session's migrated, empty MLflow SQLite store (the root conftest's template)."""
    return mlflow_template_db
