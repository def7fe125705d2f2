"""``qcli features materialize``: export the offline table, apply the generated objects, and
fill the online store.

Materialization is incremental: a later run materializes the window ``[watermark, data_end]``
(Feast writes the latest row per symbol in the window); ``full=True``, a different online store,
or a changed declaration re-materializes from the first row. Rows *rewritten* in place before
the watermark (a rebuilt feature table) need ``full=True``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from quantcli import resources
from quantcli.errors import InputError
from quantcli.online._feast import import_feast, quiet_feast
from quantcli.online._record import RecordResult
from quantcli.online.declaration import FeastDeclaration, load_declaration
from quantcli.online.ray_engine import prepare_ray_materialization
from quantcli.online.repo import (
    REDIS_URL_ENV,
    check_engine,
    feast_objects,
    online_store_config,
    parquet_path,
    public_online_config,
    repo_config,
    url_without_password,
    write_repo,
)
from quantcli.online.state import iso, read_state, write_state
from quantcli.workspace import Workspace

# Feast's materialization window is inclusive; one second past the last row is safely "after".
_END_PAD = timedelta(seconds=1)


@dataclass(frozen=True)
class OfflineExport:
    """The Parquet export of a feature table: file, row count and per-symbol latest ``ts``."""

    path: Path
    rows: int
    entity_ts: dict[str, str]
    data_end: datetime


@dataclass(frozen=True, kw_only=True)
class MaterializeResult(RecordResult):
    """What one materialization wrote (the ``--json`` object of ``qcli features materialize``).

    ``start`` and ``end`` are the materialized window (ISO-8601 UTC); ``incremental`` says
    whether it started at the previous watermark.
    """

    feature_set: str
    feature_view: str
    online_store: str
    engine: str
    incremental: bool
    start: str
    end: str
    rows_exported: int
    symbols: int
    features: int
    ttl_days: int
    parquet: str
    repo: str
    seconds: float


def _require_table(ws: Workspace, decl: FeastDeclaration) -> None:
    with ws.offline(read_only=True) as store:
        store.require_table(
            decl.table, hint=f"build it first: qcli features build --feature-set {decl.feature_set}"
        )


def export_offline_features(
    decl: FeastDeclaration, *, workspace: Workspace | None = None
) -> OfflineExport:
    """Export the offline feature table to Parquet for Feast (written atomically)."""
    ws = workspace or Workspace.from_env()
    _require_table(ws, decl)
    with ws.offline(read_only=True) as store:
        cols = {r[0] for r in store.con.execute(f"DESCRIBE {decl.table}").fetchall()}
        missing = [c for c in ["symbol", "ts", *decl.feature_names] if c not in cols]
        if missing:
            raise InputError(
                f"table '{decl.table}' lacks the declared column(s) {missing}",
                hint=f"rebuild it: qcli features build --feature-set {decl.feature_set}",
            )
        out = parquet_path(decl, workspace=ws)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        columns = ", ".join(f'"{n}"' for n in decl.feature_names)
        store.con.execute(
            resources.sql("feast_export").format(
                table=decl.table, columns=columns, path=str(tmp).replace("'", "''")
            )
        )
        marks = store.con.execute(
            resources.sql("feast_entity_watermarks").format(table=decl.table)
        ).fetchall()
        rows = store.con.execute(f"SELECT count(*) FROM {decl.table}").fetchone()[0]
    if not marks:
        tmp.unlink(missing_ok=True)
        raise InputError(f"table '{decl.table}' is empty: nothing to materialize")
    os.replace(tmp, out)
    return OfflineExport(
        path=out,
        rows=int(rows),
        entity_ts={sym: iso(ts) for sym, ts in marks},
        data_end=max(ts for _, ts in marks),
    )


def _window_start(
    ws: Workspace,
    decl: FeastDeclaration,
    prev: dict[str, Any] | None,
    target: tuple[str, str],
    full: bool,
) -> tuple[bool, datetime]:
    """``(incremental, start)``: from the watermark when the previous run wrote the same
    declaration to the same online store (``target``: its kind and identity), else from the
    table's first row."""
    same_target = (
        prev is not None
        and (prev.get("online_store"), prev.get("online_config")) == target
        and prev.get("fingerprint") == decl.fingerprint()
    )
    if same_target and not full:
        return True, datetime.fromisoformat(prev["watermark"])
    with ws.offline(read_only=True) as store:
        return False, store.con.execute(f"SELECT min(ts) FROM {decl.table}").fetchone()[0]


def _state_entry(
    decl: FeastDeclaration,
    online_store: str,
    redis_url: str | None,
    engine: str,
    cfg: Any,
    exported: OfflineExport,
) -> dict[str, Any]:
    """The state-file entry of a finished materialization; ``redis_url`` is kept, without its
    password, so a reader can reconnect to the same Redis (:func:`url_with_password`)."""
    url = redis_url or os.environ.get(REDIS_URL_ENV)
    return {
        "online_store": online_store,
        "online_config": public_online_config(cfg),
        "redis_url": url_without_password(url) if online_store == "redis" and url else None,
        "engine": engine,
        "fingerprint": decl.fingerprint(),
        "feature_view": decl.view_name,
        "watermark": iso(exported.data_end),
        "data_end": iso(exported.data_end),
        "entity_ts": exported.entity_ts,
        "materialized_at": iso(datetime.now(UTC)),
    }


def materialize(
    feature_set: str = "technical_v1",
    *,
    online_store: str = "sqlite",
    redis_url: str | None = None,
    engine: str = "local",
    full: bool = False,
    ray_address: str | None = None,
    workspace: Workspace | None = None,
) -> MaterializeResult:
    """Generate, apply and materialize the feature set into the online store.

    Parameters
    ----------
    feature_set
        The declaration under ``feature_defs/`` (``technical_v1``).
    online_store
        ``"sqlite"`` (embedded, ``$QCLI_HOME/feast/online_store.db``) or ``"redis"``.
    redis_url
        ``redis://HOST:PORT/DB`` for the Redis store (default: ``$QCLI_REDIS_URL``).
    engine
        Feast batch engine: ``"local"`` (default) or ``"ray"``.
    full
        Re-materialize from the first row instead of from the last watermark.
    ray_address
        With ``engine="ray"``: the cluster (``auto``, ``ray://HOST:PORT``; default
        ``$QCLI_RAY_ADDRESS``, else a local cluster). The window is checked and the cluster
        joined before Feast runs (:func:`~quantcli.online.ray_engine.prepare_ray_materialization`).
    workspace
        Where the offline store and the Feast repo live (default ``Workspace.from_env()``).

    Returns
    -------
    MaterializeResult
        ``feature_set``, ``feature_view``, ``online_store``, ``engine``, ``incremental``,
        ``start``, ``end`` (the materialized window, ISO UTC), ``rows_exported``, ``symbols``,
        ``features``, ``ttl_days``, ``parquet``, ``repo``, ``seconds``.
    """
    t0 = time.perf_counter()
    ws = workspace or Workspace.from_env()
    decl = load_declaration(feature_set)
    # every option is checked before Feast is imported (seconds) or anything is written
    online_store_config(online_store, redis_url, ws.feast_repo)
    check_engine(engine)
    if engine == "ray":
        prepare_ray_materialization(feature_set, ray_address, workspace=ws)
    _require_table(ws, decl)
    FeatureStore = import_feast().FeatureStore
    cfg = repo_config(online_store, redis_url, engine, workspace=ws)
    exported = export_offline_features(decl, workspace=ws)
    state = read_state(ws.feast_repo)
    incremental, start = _window_start(
        ws, decl, state.get(feature_set), (online_store, public_online_config(cfg)), full
    )
    entity, view = feast_objects(decl, workspace=ws)
    write_repo(decl, online_store, redis_url, engine, workspace=ws)
    with quiet_feast():
        fs = FeatureStore(config=cfg)
        fs.apply([entity, view])
        end = exported.data_end + _END_PAD
        fs.materialize(start_date=start, end_date=end, feature_views=[decl.view_name])
    state[feature_set] = _state_entry(decl, online_store, redis_url, engine, cfg, exported)
    write_state(ws.feast_repo, state)
    return MaterializeResult(
        feature_set=feature_set,
        feature_view=decl.view_name,
        online_store=online_store,
        engine=engine,
        incremental=incremental,
        start=iso(start),
        end=iso(exported.data_end),
        rows_exported=exported.rows,
        symbols=len(exported.entity_ts),
        features=len(decl.features),
        ttl_days=decl.ttl_days,
        parquet=str(exported.path),
        repo=str(ws.feast_repo),
        seconds=round(time.perf_counter() - t0, 3),
    )


__all__ = ["MaterializeResult", "OfflineExport", "export_offline_features", "materialize"]
