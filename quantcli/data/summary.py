"""What the offline store holds: bars per symbol with their date range, and recent ingests."""

from __future__ import annotations

import json
from typing import Any

from quantcli.errors import InputError
from quantcli.store.offline import OfflineStore
from quantcli.workspace import Workspace


def bars_summary(
    store: OfflineStore | None = None,
    *,
    recent_ingests: int = 5,
    workspace: Workspace | None = None,
) -> dict[str, Any]:
    """Symbols, bar counts and first/last timestamps (UTC) of the ``bars`` table.

    Parameters
    ----------
    store
        An open store; default: ``workspace``'s (:meth:`Workspace.from_env`), opened read-only
        (a missing store raises :class:`~quantcli.errors.NotFoundError` telling the user to
        ingest first).
    recent_ingests
        How many of the latest ingests to list (newest first).

    Returns
    -------
    dict
        ``store``, ``symbols`` (count), ``rows`` (total), ``first_ts``, ``last_ts``,
        ``by_symbol`` (list of ``{symbol, rows, first_ts, last_ts}``, sorted by symbol) and
        ``ingests`` (the recent ingest records with their warning counts).
    """
    if not 0 <= recent_ingests <= 1_000_000:  # LIMIT takes 64 bits: a larger count crashed it
        raise InputError(f"--recent must be between 0 and 1,000,000, got --recent {recent_ingests}")
    if store is None:
        with (workspace or Workspace.from_env()).offline(read_only=True) as own:
            return bars_summary(own, recent_ingests=recent_ingests)
    store.require_table("bars", hint="run `qcli data ingest PATH` (or --sample) first")
    by_symbol = [
        {"symbol": s, "rows": n, "first_ts": first, "last_ts": last}
        for s, n, first, last in store.query("bars_summary").fetchall()
    ]
    ingests = []
    if store.table_exists("ingests"):
        for row in store.query("ingests_recent", [recent_ingests]).fetchall():
            ingest_id, at, sources, rows_in, ins, upd, unch, quality = row
            warnings = json.loads(quality).get("warnings", [])
            ingests.append(
                {
                    "ingest_id": ingest_id,
                    "ingested_at": at,
                    "sources": json.loads(sources),
                    "rows_in": rows_in,
                    "rows_inserted": ins,
                    "rows_updated": upd,
                    "rows_unchanged": unch,
                    "warnings": {w["check"]: w["count"] for w in warnings},
                }
            )
    return {
        "store": str(store.path),
        "symbols": len(by_symbol),
        "rows": sum(r["rows"] for r in by_symbol),
        "first_ts": min((r["first_ts"] for r in by_symbol), default=None),
        "last_ts": max((r["last_ts"] for r in by_symbol), default=None),
        "by_symbol": by_symbol,
        "ingests": ingests,
    }


__all__ = ["bars_summary"]
