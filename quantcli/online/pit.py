"""Point-in-time correct features for an entity frame (``symbol``, ``ts``).

The rule, for each entity row: the latest feature row of its symbol with feature
``ts <= `` the row's ``ts`` (no look-ahead), provided it is at most the view's TTL old
(inclusive, as Feast), else nulls. :func:`historical_features` asks Feast's offline store;
:func:`pit_join_duckdb` does the same join directly in DuckDB and is the oracle the Feast path is
tested against. Both return ``symbol, ts, <features>`` in the entity frame's row order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb
import polars as pl

from quantcli import resources
from quantcli._interop import is_pandas, to_polars
from quantcli.errors import InputError, NotFoundError
from quantcli.online._feast import quiet_feast
from quantcli.online.declaration import FeastDeclaration, feature_refs, load_declaration
from quantcli.workspace import Workspace


def entity_frame(entity_df: pl.DataFrame) -> tuple[pl.DataFrame, str]:
    """``__row, symbol, ts`` (UTC, microseconds) of ``entity_df`` and the name of its time
    column (``ts`` or ``event_timestamp``); :class:`InputError` for a malformed frame."""
    if not isinstance(entity_df, pl.DataFrame):
        raise InputError(f"`entity_df` must be a polars DataFrame, got {type(entity_df).__name__}")
    ts_col = "ts" if "ts" in entity_df.columns else "event_timestamp"
    for col in ("symbol", ts_col):
        if col not in entity_df.columns:
            raise InputError(f"`entity_df` lacks column '{col}' (needs symbol and ts)")
    ts = entity_df[ts_col]
    if not isinstance(ts.dtype, pl.Datetime) or ts.dtype.time_zone is None:
        raise InputError(f"`entity_df.{ts_col}` must be a timezone-aware Datetime, got {ts.dtype}")
    if ts.null_count() or entity_df["symbol"].null_count():
        raise InputError("`entity_df` has null symbol or ts values")
    frame = entity_df.select(
        pl.int_range(pl.len(), dtype=pl.Int64).alias("__row"),
        pl.col("symbol").cast(pl.String),
        pl.col(ts_col).dt.convert_time_zone("UTC").dt.cast_time_unit("us").alias("ts"),
    )
    return frame, ts_col


def historical_features(
    feast_store: Any,
    decl: FeastDeclaration,
    entity_df: Any,
    features: Sequence[str] | None = None,
) -> Any:
    """Point-in-time features of ``entity_df`` through ``feast_store``'s offline store.

    ``entity_df`` (polars, pandas or pyarrow) has ``symbol`` and ``ts`` (or
    ``event_timestamp``), timezone-aware; ``features`` as :func:`feature_refs` accepts. Returns a
    pandas DataFrame for a pandas ``entity_df``, else polars.
    """
    as_pandas = is_pandas(entity_df)
    entities, ts_col = entity_frame(to_polars(entity_df, "entity_df"))
    refs = feature_refs(decl, features)
    names = [r.rpartition(":")[2] for r in refs]
    pdf = entities.rename({"ts": "event_timestamp"}).to_pandas()
    with quiet_feast():
        out = feast_store.get_historical_features(entity_df=pdf, features=refs).to_df()
    frame = (
        pl.from_pandas(out[["__row", "symbol", "event_timestamp", *names]])
        .with_columns(
            pl.col("event_timestamp").dt.convert_time_zone("UTC").dt.cast_time_unit("us"),
            *(pl.col(n).cast(pl.Float64).fill_nan(None) for n in names),
        )
        .sort("__row")
    )
    frame = frame.drop("__row").rename({"event_timestamp": ts_col})
    return frame.to_pandas() if as_pandas else frame


def pit_join_duckdb(
    entity_df: pl.DataFrame,
    features: Sequence[str] | None = None,
    feature_set: str = "technical_v1",
    *,
    workspace: Workspace | None = None,
) -> pl.DataFrame:
    """The point-in-time join done directly in DuckDB (``sql/pit_join.sql``), on the offline table.

    The oracle :meth:`~quantcli.online.store.OnlineFeatureStore.get_historical_features` is
    tested against: same rule, same output.
    """
    decl = load_declaration(feature_set)
    entities, ts_col = entity_frame(entity_df)
    names = decl.feature_names if features is None else [f.rpartition(":")[2] for f in features]
    unknown = [n for n in names if n not in decl.feature_names]
    if unknown:
        raise NotFoundError(f"unknown feature '{unknown[0]}' in feature set '{feature_set}'")
    ttl = "(to_seconds(CAST($ttl_s AS BIGINT)))"
    sql = resources.sql("pit_join").format(
        table=decl.table,
        columns=", ".join(f'f."{n}"' for n in names),
        select_columns=", ".join(
            f'CASE WHEN feature_ts >= event_timestamp - {ttl} THEN "{n}" END AS "{n}"'
            for n in names
        ),
    )
    with (workspace or Workspace.from_env()).offline(read_only=True) as store:
        store.require_table(decl.table, hint="run `qcli features build` first")
        con = store.con.cursor()  # a fresh cursor: no pending result from require_table
        con.register("pit_entities", entities.rename({"ts": "event_timestamp"}).to_arrow())
        try:
            out = con.sql(sql, params={"ttl_s": int(decl.ttl.total_seconds())}).pl()
        except duckdb.Error as exc:
            raise InputError(f"point-in-time join failed: {exc}") from None
    return (
        out.with_columns(
            pl.col("event_timestamp").dt.convert_time_zone("UTC").dt.cast_time_unit("us")
        )
        .drop("__row")
        .rename({"event_timestamp": ts_col})
    )


__all__ = ["entity_frame", "historical_features", "pit_join_duckdb"]
