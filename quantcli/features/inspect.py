"""Read-only views of feature sets and feature tables (``qcli features list`` / ``show``)."""

from __future__ import annotations

from typing import Any

from quantcli import resources
from quantcli.errors import InputError, NotFoundError
from quantcli.features.build_plan import table_ident
from quantcli.features.definitions import load_feature_set
from quantcli.workspace import Workspace

#: The most rows a listing returns: a larger count is a typo (and past 64 bits, a crash).
MAX_ROWS = 1_000_000


def _rows(cur, query: str, params: list | None = None) -> list[tuple]:
    return cur.execute(query, params or []).fetchall()


def _engine_column(cur) -> str:
    """``engine``, or ``'kernel' AS engine`` on a store whose ``feature_builds`` predates it.

    Such a store is migrated by its next build; until then its builds all ran the kernel engine
    (the only one there was), and a read-only ``list`` must not fail on the missing column.
    """
    cols = {r[0] for r in cur.execute("DESCRIBE feature_builds").fetchall()}
    return "engine" if "engine" in cols else "'kernel' AS engine"


def describe_feature_set(
    feature_set: str = "technical_v1", *, workspace: Workspace | None = None
) -> dict[str, Any]:
    """The declaration of ``feature_set`` and the state of its table in the offline store.

    Returns a dict with ``feature_set``, ``version``, ``table``, ``warmup``, ``features`` (name,
    kind, params, lookback, description), ``labels`` and ``table_status`` (``None`` when there
    is no store or no table yet; else rows, symbols, ``ts_min``, ``ts_max``, the last build and
    ``stream_state``: how many symbols have a stored kernel state, its bytes per symbol).
    The store is ``workspace``'s (default :meth:`Workspace.from_env`).
    """
    fs = load_feature_set(feature_set)
    ws = workspace or Workspace.from_env()
    status: dict[str, Any] | None = None
    if ws.offline_path.exists():
        with ws.offline(read_only=True) as store:
            cur = store.con.cursor()
            if store.table_exists(fs.table):
                table = table_ident(fs.table)
                n, syms, lo, hi = _rows(
                    cur, f"SELECT count(*), count(DISTINCT symbol), min(ts), max(ts) FROM {table}"
                )[0]
                status = {
                    "rows": n,
                    "symbols": syms,
                    "ts_min": lo,
                    "ts_max": hi,
                    "last_build": None,
                    "stream_state": None,
                }
                if store.table_exists("feature_stream_state"):
                    # the kernel states the next incremental build can continue from
                    k, size, last = _rows(
                        cur,
                        "SELECT count(*), max(octet_length(state)), max(last_bar_ts) "
                        "FROM feature_stream_state WHERE feature_set = ?",
                        [feature_set],
                    )[0]
                    if k:
                        status["stream_state"] = {
                            "symbols": k, "bytes_per_symbol": size, "last_bar_ts_max": last,
                        }  # fmt: skip
                if store.table_exists("feature_builds"):
                    last = _rows(
                        cur,
                        "SELECT build_id, built_at, mode, rows_written, input_sha256, "
                        f"{_engine_column(cur)} FROM feature_builds WHERE feature_set = ? "
                        "ORDER BY built_at DESC LIMIT 1",
                        [feature_set],
                    )
                    if last:
                        keys = ("build_id", "built_at", "mode", "rows_written", "input_sha256")
                        keys += ("engine",)
                        status["last_build"] = dict(zip(keys, last[0], strict=True))
    return {
        "feature_set": fs.name,
        "version": fs.version,
        "table": fs.table,
        "description": fs.description,
        "warmup": fs.warmup,
        "features": [
            {
                "name": f.name,
                "kind": f.kind,
                "params": f.params,
                "lookback": f.lookback,
                "talib": f.talib,
                "description": f.description,
            }
            for f in fs.features
        ],
        "labels": [
            {"name": lab.name, "horizon": lab.horizon, "description": lab.description}
            for lab in fs.labels
        ],
        "table_status": status,
    }


def show_features(
    symbol: str,
    last: int = 5,
    feature_set: str = "technical_v1",
    *,
    workspace: Workspace | None = None,
) -> dict[str, Any]:
    """The last ``last`` feature rows of ``symbol``, oldest first.

    Raises
    ------
    InputError
        ``last < 1``.
    NotFoundError
        No store, no feature table, or no rows for ``symbol`` (the hint lists some symbols).
    """
    if not 1 <= last <= MAX_ROWS:
        raise InputError(f"--last must be between 1 and {MAX_ROWS:,}, got --last {last}")
    fs = load_feature_set(feature_set)
    table = table_ident(fs.table)
    with (workspace or Workspace.from_env()).offline(read_only=True) as store:
        store.require_table(table, hint=f"run `qcli features build --feature-set {feature_set}`")
        cur = store.con.cursor()
        cols = ["ts", *fs.feature_names]
        rows = _rows(
            cur,
            f"SELECT {', '.join(cols)} FROM {table} WHERE symbol = ? ORDER BY ts DESC LIMIT ?",
            [symbol, last],
        )
        if not rows:
            known = [r[0] for r in _rows(cur, f"SELECT DISTINCT symbol FROM {table} ORDER BY 1")]
            shown = ", ".join(known[:10]) + (" ..." if len(known) > 10 else "")
            raise NotFoundError(
                f"no feature rows for symbol '{symbol}' in {table}",
                hint=f"symbols with features: {shown or 'none'}",
            )
    rows.reverse()
    return {
        "symbol": symbol,
        "feature_set": feature_set,
        "table": fs.table,
        "columns": cols,
        "rows": [dict(zip(cols, r, strict=True)) for r in rows],
    }


def stored_engine(
    feature_set: str = "technical_v1", *, workspace: Workspace | None = None
) -> str | None:
    """The engine that computed the rows now in ``feature_set``'s table; ``None`` when empty.

    A table holds one engine's values (switching engine rewrites it whole), so a caller that
    extends the table -- ``qcli pipeline run`` -- builds with this engine and keeps the table
    consistent, instead of refusing after a user rebuilt it with ``--engine polars``.
    """
    status = describe_feature_set(feature_set, workspace=workspace)["table_status"]
    if not status or not status["rows"] or not status["last_build"]:
        return None
    return str(status["last_build"]["engine"])


def recent_builds(limit: int = 10, *, workspace: Workspace | None = None) -> list[dict[str, Any]]:
    """The last ``limit`` rows of ``feature_builds`` (newest first); [] without a store."""
    ws = workspace or Workspace.from_env()
    if not ws.offline_path.exists():
        return []
    with ws.offline(read_only=True) as store:
        if not store.table_exists("feature_builds"):
            return []
        cur = store.con.cursor()
        query = resources.sql("features_builds_recent").replace(
            " engine,", f" {_engine_column(cur)},"
        )
        res = cur.execute(query, [limit])
        keys = [d[0] for d in res.description]
        return [dict(zip(keys, r, strict=True)) for r in res.fetchall()]


__all__ = ["describe_feature_set", "recent_builds", "show_features", "stored_engine"]
