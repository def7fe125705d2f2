"""A stand-in feature table for the online tests: the declared 29 columns, deterministic values.

The online layer only needs the table's *shape* (symbol, ts, the declared Float64 columns, with
warm-up NULLs); computing the real indicators is the feature engine's job and its own tests'.
"""

from __future__ import annotations

import duckdb
import numpy as np
import polars as pl

from quantcli.config import offline_store_path
from quantcli.data.synthetic import synthetic_universe
from quantcli.online import load_declaration


def feature_frame(n_symbols: int = 6, n_days: int = 80, seed: int = 3) -> pl.DataFrame:
    """``symbol, ts`` + the declared features: feature j = log(close) * (j + 1) / 29 + rolling
    mean of returns over j + 2 bars (NULL during its warm-up)."""
    bars = synthetic_universe(n_symbols=n_symbols, n_days=n_days, seed=seed)
    names = load_declaration().feature_names
    ret = (pl.col("close") / pl.col("close").shift(1) - 1.0).over("symbol")
    exprs = [
        (pl.col("close").log() * (j + 1) / 29.0 + ret.rolling_mean(j + 2).over("symbol")).alias(n)
        for j, n in enumerate(names)
    ]
    return bars.sort("symbol", "ts").select("symbol", "ts", *exprs)


def write_feature_table(frame: pl.DataFrame, *, replace: bool = True) -> None:
    """Write ``frame`` as ``technical_features_v1`` into ``$QCLI_HOME/offline.duckdb``."""
    table = load_declaration().table
    path = offline_store_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    try:
        con.register("frame_in", frame.to_arrow())
        cols = ", ".join(f'"{c}" DOUBLE' for c in frame.columns[2:])
        if replace:
            con.execute(f"DROP TABLE IF EXISTS {table}")
        con.execute(
            f"CREATE TABLE IF NOT EXISTS {table} (symbol VARCHAR NOT NULL, "
            f"ts TIMESTAMP WITH TIME ZONE NOT NULL, {cols}, PRIMARY KEY (symbol, ts))"
        )
        con.execute(f"INSERT INTO {table} SELECT * FROM frame_in")
    finally:
        con.close()


def latest_rows(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort("symbol", "ts").group_by("symbol", maintain_order=True).last()


__all__ = ["feature_frame", "latest_rows", "np", "write_feature_table"]
