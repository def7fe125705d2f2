"""Walk the hash chain and name the first broken record."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from quantcli.audit._chain import GENESIS_HASH, record_hash
from quantcli.audit._ledger import ledger_path
from quantcli.errors import NotFoundError


def verify_ledger(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Verify every record of the ledger, in order.

    A record is intact when it is valid JSON, its ``seq`` is the previous ``seq`` + 1 (0 for the
    first), its ``prev_hash`` is the previous record's ``hash`` (:data:`GENESIS_HASH` for the
    first) and its ``hash`` is the sha256 of its canonical form. The walk stops at the first
    record that is not intact.

    Returns
    -------
    dict
        ``path``, ``ok``, ``records`` (intact records before the first broken one),
        ``head_hash`` (hash of the last intact record) and ``first_broken``: ``None`` or
        ``{"line": 1-based line number, "seq": the seq it should have, "reason": ...}``.
    """
    p = Path(path) if path is not None else ledger_path()
    if not p.is_file():
        raise NotFoundError(
            f"no audit ledger at {p}",
            hint="the ledger is created by the first prediction (`qcli predict` or `qcli serve`)",
        )
    data = p.read_bytes()
    lines = data.split(b"\n")
    trailing_partial = lines[-1] != b""
    lines = lines[:-1] if not trailing_partial else lines
    prev, expected, broken = GENESIS_HASH, 0, None
    for i, raw in enumerate(lines, start=1):
        reason = None
        if trailing_partial and i == len(lines):
            reason = "incomplete record (no trailing newline): a write was cut short"
        else:
            try:
                rec = json.loads(raw)
            except ValueError:
                rec = None
            if not isinstance(rec, dict):
                reason = "not a valid JSON record"
            elif not all(k in rec for k in ("seq", "prev_hash", "hash")):
                reason = "missing seq, prev_hash or hash"
            elif rec["seq"] != expected:
                reason = f"seq is {rec['seq']}, expected {expected} (a record was removed or added)"
            elif rec["prev_hash"] != prev:
                reason = "prev_hash does not match the previous record's hash (chain broken)"
            elif record_hash(rec) != rec["hash"]:
                reason = "content does not match its hash (the record was altered)"
        if reason is not None:
            broken = {"line": i, "seq": expected, "reason": reason}
            break
        prev, expected = rec["hash"], expected + 1
    return {
        "path": str(p),
        "ok": broken is None,
        "records": expected,
        "head_hash": prev,
        "first_broken": broken,
    }
