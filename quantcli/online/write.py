"""Write the latest feature row of each updated symbol to the online store, through Feast.

``qcli features build --online`` calls :func:`write_latest` after the build's transaction has
committed: the rows are those the build wrote, so the online row equals the offline row bit for
bit (float64 values written as Feast ``Float64`` values, keys encoded by Feast's own
``write_to_online_store``, the same path as ``qcli features materialize``).

The offline store is the source of truth. If the online write fails after the offline commit
(the Redis server is down, the SQLite file is locked), the offline table is complete and the
online store keeps its previous rows for the symbols not written; the command exits 1 and says
so. Re-running ``qcli features build --online`` repairs it: the offline build finds nothing new
and writes nothing, and the online write sends every symbol's latest offline row again
(an online write is an upsert, so repeating it is harmless).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from quantcli.errors import QuantCliError
from quantcli.online._feast import import_feast, quiet_feast
from quantcli.online._record import RecordResult
from quantcli.online.declaration import load_declaration
from quantcli.online.repo import feast_objects, online_store_config, repo_config
from quantcli.store.offline import OfflineStore
from quantcli.workspace import Workspace


class OnlineWriteError(QuantCliError):
    """The online write failed after the offline build committed (exit code 1: a runtime
    failure, not bad input); a re-run of ``qcli features build --online`` repairs it."""

    exit_code = 1


@dataclass(frozen=True, kw_only=True)
class OnlineWriteResult(RecordResult):
    """What :func:`write_latest` wrote (the ``online`` object of ``qcli features build``)."""

    online_store: str
    feature_view: str
    symbols_written: int
    seconds: float


def check_target(
    online_store: str, redis_url: str | None, *, workspace: Workspace | None = None
) -> None:
    """:class:`~quantcli.errors.InputError` for a bad ``online_store``/``redis_url`` (run before
    the build, so bad options change nothing)."""
    online_store_config(online_store, redis_url, (workspace or Workspace.from_env()).feast_repo)


def latest_rows(
    store: OfflineStore, table: str, features: Sequence[str], symbols: Sequence[str]
) -> pl.DataFrame:
    """The newest row of each of ``symbols`` in the feature table ``table``."""
    if not symbols:
        return pl.DataFrame()
    cols = ", ".join(f'"{c}"' for c in ("symbol", "ts", *features))
    placeholders = ", ".join("?" for _ in symbols)
    query = (
        f"SELECT {cols} FROM {table} WHERE symbol IN ({placeholders}) "
        "QUALIFY row_number() OVER (PARTITION BY symbol ORDER BY ts DESC) = 1 ORDER BY symbol"
    )
    return store.con.sql(query, params=list(symbols)).pl()


def write_latest(
    feature_set: str,
    symbols: Sequence[str],
    *,
    online_store: str = "sqlite",
    redis_url: str | None = None,
    workspace: Workspace | None = None,
) -> OnlineWriteResult:
    """Write the newest offline row of each of ``symbols`` to the online store.

    Returns ``online_store``, ``feature_view``, ``symbols_written`` and ``seconds``. Raises
    :class:`~quantcli.errors.InputError` for a bad ``online_store``/``redis_url`` before
    anything is written; errors of the online store itself propagate.
    """
    t0 = time.perf_counter()
    ws = workspace or Workspace.from_env()
    decl = load_declaration(feature_set)
    check_target(online_store, redis_url, workspace=ws)  # before Feast is imported (seconds)
    with ws.offline(read_only=True) as store:
        rows = latest_rows(store, decl.table, decl.feature_names, symbols)
    if rows.height:
        FeatureStore = import_feast().FeatureStore
        cfg = repo_config(online_store, redis_url, "local", workspace=ws)
        entity, view = feast_objects(decl, workspace=ws)
        frame = rows.rename({"ts": decl.timestamp}) if decl.timestamp != "ts" else rows
        with quiet_feast():
            fs = FeatureStore(config=cfg)
            fs.apply([entity, view])
            fs.write_to_online_store(decl.view_name, frame.to_pandas())
    return OnlineWriteResult(
        online_store=online_store,
        feature_view=decl.view_name,
        symbols_written=rows.height,
        seconds=round(time.perf_counter() - t0, 3),
    )


__all__ = ["OnlineWriteError", "OnlineWriteResult", "check_target", "latest_rows", "write_latest"]
