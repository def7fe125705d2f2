"""``qcli data export`` and ``qcli features export``: a stored table written to one file.

The writing is :func:`quantcli.store.export.export_table`'s (same store and options, same
bytes; nothing is left under the output name if it fails); this module gives it a workspace
and a typed result.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from quantcli.store.export import TableExport, export_table
from quantcli.workspace import Workspace


@dataclass(frozen=True, kw_only=True)
class ExportResult(TableExport):
    """What an export wrote (:class:`~quantcli.store.export.TableExport`: ``table``, ``path``,
    ``format``, ``rows``, ``symbols``, ``columns``, ``start``, ``end``), and ``feature_set`` for
    a feature table exported by its set's name (a JSON key only then)."""

    passed: bool = True
    feature_set: str | None = None

    @classmethod
    def of(cls, record: TableExport, feature_set: str | None = None) -> ExportResult:
        """``record`` with the feature set that named the table."""
        values = {f.name: getattr(record, f.name) for f in dataclasses.fields(TableExport)}
        return cls(**values, feature_set=feature_set)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if self.feature_set is not None:
            out["feature_set"] = self.feature_set
        return out

    def summary(self) -> str:
        """One line: what was written where."""
        return (
            f"{self.rows} rows of {len(self.symbols)} symbol(s) from {self.table} "
            f"({self.start} .. {self.end}) -> {self.path} ({self.format})"
        )


def export_stored_table(
    table: str,
    output: str | os.PathLike[str],
    *,
    fmt: str | None = None,
    symbols: Sequence[str] | None = None,
    since: str | date | datetime | None = None,
    until: str | date | datetime | None = None,
    workspace: Workspace | None = None,
    feature_set: str | None = None,
) -> ExportResult:
    """Write the rows of ``table`` of ``workspace``'s offline store to ``output`` (parameters as
    :func:`~quantcli.store.export.export_table`)."""
    ws = workspace or Workspace.from_env()
    record = export_table(
        table, output, fmt=fmt, symbols=symbols, since=since, until=until,
        store_path=ws.offline_path,
    )  # fmt: skip
    return ExportResult.of(record, feature_set=feature_set)


def export_bars(
    output: str | os.PathLike[str],
    *,
    fmt: str | None = None,
    symbols: Sequence[str] | None = None,
    since: str | date | datetime | None = None,
    until: str | date | datetime | None = None,
    workspace: Workspace | None = None,
) -> ExportResult:
    """Write the stored bars to a Parquet or CSV file, sorted by ``(symbol, ts)``, ts in UTC."""
    return export_stored_table(
        "bars", output, fmt=fmt, symbols=symbols, since=since, until=until, workspace=workspace
    )


__all__ = ["ExportResult", "export_bars", "export_stored_table"]
