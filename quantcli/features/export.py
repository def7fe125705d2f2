"""``qcli features export``: a built feature table written to one Parquet or CSV file."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import date, datetime

from quantcli.data.export import ExportResult, export_stored_table
from quantcli.features.definitions import load_feature_set
from quantcli.workspace import Workspace


def export_features(
    output: str | os.PathLike[str],
    feature_set: str = "technical_v1",
    *,
    fmt: str | None = None,
    symbols: Sequence[str] | None = None,
    since: str | date | datetime | None = None,
    until: str | date | datetime | None = None,
    workspace: Workspace | None = None,
) -> ExportResult:
    """Write ``feature_set``'s table (symbol, ts and the features, as built), sorted by
    ``(symbol, ts)``; the same store and options write the same bytes."""
    return export_stored_table(
        load_feature_set(feature_set).table, output, fmt=fmt, symbols=symbols, since=since,
        until=until, workspace=workspace, feature_set=feature_set,
    )  # fmt: skip


__all__ = ["export_features"]
