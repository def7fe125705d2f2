"""Access to the monitoring tables of the offline store (``sql/schema_monitoring.sql``).

Each call opens the store briefly and closes it, so no process holds DuckDB's write lock
between calls (cron jobs, the service and the CLI share one file).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from quantcli.store.offline import OfflineStore
from quantcli.workspace import Workspace

SCHEMA = "schema_monitoring"


def store_file(
    workspace: Workspace | None = None, store_path: str | os.PathLike[str] | None = None
) -> Path:
    """The offline store file of a monitoring call: ``store_path`` (the deprecated keyword of
    the older signatures) when given, else the workspace's (default :meth:`Workspace.from_env`)."""
    if store_path is not None:
        return Path(store_path)
    return (workspace or Workspace.from_env()).offline_path


@contextmanager
def monitoring_store(path: str | os.PathLike[str] | None = None) -> Iterator[OfflineStore]:
    """Open the offline store (``$QCLI_HOME/offline.duckdb`` or ``path``) with the schema."""
    store = OfflineStore(Path(path) if path is not None else None)
    try:
        store.ensure_schema(SCHEMA)
        yield store
    finally:
        store.close()


def utc_now() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | str) -> datetime:
    """A timezone-aware UTC datetime from a datetime (naive means UTC) or an ISO 8601 string."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)
