"""Registry events: who promoted, rolled back or overrode what, when and why.

Each event is one row of the offline-store table ``registry_events`` (``sql/schema_registry.sql``)
and, as JSON, the ``quantcli.last_event`` tag of the versions it touched
(:mod:`quantcli.models.registry` writes the tags). Timestamps are UTC; ``actor`` is
``getpass.getuser()``.
"""

from __future__ import annotations

import getpass
import json
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from quantcli.store.offline import OfflineStore

ACTIONS = ("promote", "override", "rollback", "rollout", "halt", "resume")


def current_actor() -> str:
    """Who is acting: the login name (``getpass.getuser()``), ``unknown`` if there is none."""
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers (no $USER, no passwd entry)
        return "unknown"


@dataclass(frozen=True)
class RegistryEvent:
    """One registry event. ``from_version``/``to_version`` are the production versions around it."""

    action: str
    model_name: str
    from_version: str | None
    to_version: str | None
    reason: str | None
    tracking_uri: str
    forced: bool = False
    details: dict[str, Any] = field(default_factory=dict)
    actor: str = field(default_factory=current_actor)
    ts: datetime = field(default_factory=lambda: datetime.now(UTC))
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"`action` must be one of {ACTIONS}, got `action={self.action!r}`.")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ts"] = self.ts.isoformat()
        return d

    def to_tag(self) -> str:
        """The compact JSON stored in the ``quantcli.last_event`` version tag."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))


def insert_event(store: OfflineStore, event: RegistryEvent) -> None:
    """Append ``event`` to ``registry_events`` (caller owns the transaction)."""
    store.ensure_schema("schema_registry")
    store.query(
        "registry_event_insert",
        [
            event.event_id,
            event.ts,
            event.action,
            event.model_name,
            event.from_version,
            event.to_version,
            event.actor,
            event.reason,
            event.forced,
            event.tracking_uri,
            json.dumps(event.details, sort_keys=True, default=str),
        ],
    )


def list_events(store: OfflineStore, model_name: str | None = None) -> list[dict[str, Any]]:
    """Events in time order (oldest first), optionally for one model; empty if none recorded."""
    if not store.table_exists("registry_events"):
        return []
    sql = "SELECT * FROM registry_events"
    params: list[Any] = []
    if model_name is not None:
        sql += " WHERE model_name = ?"
        params.append(model_name)
    cur = store.con.execute(sql + " ORDER BY ts, event_id", params)
    cols = [c[0] for c in cur.description]
    rows = []
    for row in cur.fetchall():
        rec = dict(zip(cols, row, strict=True))
        rec["details"] = json.loads(rec["details"])
        rows.append(rec)
    return rows
