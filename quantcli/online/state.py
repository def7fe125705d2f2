"""``quantcli_state.json``: what quantcli materialized, per feature set.

One entry per feature set: the online store and its secret-free identity, the batch engine, the
declaration's fingerprint, the watermark (latest feature ``ts`` materialized), ``data_end`` and
the latest feature timestamp of every symbol (the wrapper marks stale entities from these
without a second online read). The file is replaced atomically, so a reader never sees half of
it.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

STATE_FILE = "quantcli_state.json"


def state_path(repo: Path) -> Path:
    """The state file of the Feast repo ``repo``."""
    return repo / STATE_FILE


def read_state(repo: Path) -> dict[str, Any]:
    """Every feature set's entry (empty before the first materialization)."""
    p = state_path(repo)
    if not p.is_file():
        return {}
    return json.loads(p.read_text())


def write_state(repo: Path, state: dict[str, Any]) -> None:
    p = state_path(repo)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
    os.replace(tmp, p)


def iso(ts: datetime) -> str:
    """``ts`` as ISO-8601 UTC: strings of one offset order like the instants they name."""
    return ts.astimezone(UTC).isoformat()


__all__ = ["STATE_FILE", "iso", "read_state", "state_path", "write_state"]
