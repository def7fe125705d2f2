"""The training frame: stored features joined with a declared label, in time order.

``load_training_frame`` reads the feature table written by
:func:`quantcli.features.build.build_features` and the label computed from ``bars`` by
:func:`quantcli.features.labels.compute_labels` (forward return over ``horizon`` bars of the same
symbol; ``label_end`` = ``ts`` of bar ``t + horizon``), inner-joined on ``(symbol, ts)``.

Rows whose label is null (each symbol's last ``horizon`` bars) are dropped. The frame is sorted
by ``(ts, symbol)``: CPCV splits on time, and several symbols share a timestamp.

``since`` / ``until`` filter the *rows* (``since <= ts <= until``), never the bars a label reads:
a row at ``until`` keeps its label, whose ``label_end`` may lie after ``until`` -- that interval
is exactly what CPCV purges on.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

import polars as pl

from quantcli.features.build_plan import table_ident, to_utc
from quantcli.features.definitions import load_feature_set
from quantcli.features.labels import compute_labels
from quantcli.store.offline import OfflineStore
from quantcli.workspace import Workspace


def _where(symbols, since, until) -> tuple[str, list]:
    clauses, params = [], []
    if symbols:
        clauses.append(f"symbol IN ({', '.join('?' for _ in symbols)})")
        params += list(symbols)
    if since is not None:
        clauses.append("ts >= ?")
        params.append(since)
    if until is not None:
        clauses.append("ts <= ?")
        params.append(until)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def load_training_frame(
    store: OfflineStore | None = None,
    feature_set: str = "technical_v1",
    label: str = "fwd_return_5d",
    symbols: Sequence[str] | None = None,
    since: str | date | datetime | None = None,
    until: str | date | datetime | None = None,
    *,
    workspace: Workspace | None = None,
) -> pl.DataFrame:
    """Features and label for training: ``symbol, ts, <features>, label, label_end``.

    Parameters
    ----------
    store
        An open :class:`OfflineStore`; default: ``workspace``'s (default
        :meth:`Workspace.from_env`), opened read-only.
    feature_set, label
        The declaration and one of its ``[[labels]]`` (``fwd_return_5d``, ``fwd_return_1d``).
    symbols
        Restrict to these symbols (default: all).
    since, until
        Keep rows with ``since <= ts <= until`` (dates are UTC midnight).

    Returns
    -------
    polars.DataFrame
        ``label`` is a fraction (``close[t+h] / close[t] - 1``); ``label_end`` is a UTC
        timestamp. Sorted by ``(ts, symbol)``; no null label.

    Raises
    ------
    NotFoundError
        No store, no feature table (run ``qcli features build``), or an unknown label.
    """
    if store is None:
        with (workspace or Workspace.from_env()).offline(read_only=True) as own:
            return load_training_frame(own, feature_set, label, symbols, since, until)
    fs = load_feature_set(feature_set)
    spec = fs.label(label)
    table = table_ident(fs.table)
    store.require_table(table, hint=f"run `qcli features build --feature-set {feature_set}` first")
    store.require_table("bars", hint="run `qcli data ingest PATH` first")
    since_dt, until_dt = to_utc(since), to_utc(until)
    where, params = _where(symbols, since_dt, None)
    # a cursor: DuckDB 2 refuses .sql() on a connection with an unfinished execute() result
    cur = store.con.cursor()
    bars = cur.sql(f"SELECT symbol, ts, close FROM bars{where}", params=params).pl()
    labels = compute_labels(bars, spec.horizon)
    where, params = _where(symbols, since_dt, until_dt)
    cols = ", ".join(["symbol", "ts", *fs.feature_names])
    feats = cur.sql(f"SELECT {cols} FROM {table}{where}", params=params).pl()
    return (
        feats.lazy()
        .join(labels, on=["symbol", "ts"], how="inner")
        .filter(pl.col("label").is_not_null())
        # DuckDB hands back "Etc/UTC"; the project's convention is Datetime("us", "UTC")
        .with_columns(pl.col("ts", "label_end").dt.convert_time_zone("UTC"))
        .sort("ts", "symbol")
        .collect()
    )
