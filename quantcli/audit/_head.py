"""Where the ledger lives, and its signed head: ``<ledger>.head``, the record count and last hash.

The file holds two fixed-size slots; the writer overwrites slot ``count % 2`` in place after every
append (one ``pwrite``), so a write torn by a crash leaves the other slot, one append older,
intact. A reader takes the valid slot with the highest count. Each slot is one JSON object padded
with spaces to :data:`SLOT_BYTES` - 1 bytes plus a newline::

    {"count": 7, "head_hash": "...", "sig": "ed25519:<fingerprint>:<base64>", "signed_at": "..."}

``sig`` signs :func:`~quantcli.audit._chain.head_statement` ``(count, head_hash)`` with the ledger
key; ``signed_at`` is informational (not signed).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from quantcli import config
from quantcli.audit._chain import head_statement
from quantcli.errors import IntegrityError
from quantcli.integrity import verify_message

LEDGER_FILE = "ledger.jsonl"
SLOT_BYTES = 512
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def ledger_path() -> Path:
    """``$QCLI_HOME/audit/ledger.jsonl``."""
    return config.audit_dir() / LEDGER_FILE


def head_path(ledger: str | os.PathLike[str]) -> Path:
    """``<ledger>.head`` next to the ledger file."""
    p = Path(ledger)
    return p.with_name(p.name + ".head")


@dataclass(frozen=True)
class SignedHead:
    """A verified head: ``count`` records, the last of which hashes to ``head_hash``."""

    count: int
    head_hash: str
    sig: str
    key: str
    signed_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "head_hash": self.head_hash,
            "sig": self.sig,
            "key": self.key,
            "signed_at": self.signed_at,
        }


def encode_slot(count: int, head_hash: str, sig: str) -> bytes:
    body = json.dumps(
        {
            "count": count,
            "head_hash": head_hash,
            "sig": sig,
            "signed_at": datetime.now(UTC).isoformat(),
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode("ascii")
    if len(body) > SLOT_BYTES - 1:
        raise ValueError("head slot overflow")  # a signature is ~110 bytes: cannot happen
    return body.ljust(SLOT_BYTES - 1, b" ") + b"\n"


def write_slot(fd: int, count: int, head_hash: str, sig: str) -> None:
    """Overwrite slot ``count % 2`` of the open head file ``fd``."""
    os.pwrite(fd, encode_slot(count, head_hash, sig), (count % 2) * SLOT_BYTES)


def parse_slot(raw: bytes, keys: dict[str, Any]) -> SignedHead | None:
    """The slot's head if it parses and its signature verifies with ``keys``, else ``None``."""
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    count, head_hash, sig = obj.get("count"), obj.get("head_hash"), obj.get("sig")
    if type(count) is not int or count < 0 or not isinstance(head_hash, str):
        return None
    if not _HEX64.match(head_hash) or not isinstance(sig, str):
        return None
    try:
        fp = verify_message(head_statement(count, head_hash), sig, "ledger", keys=keys)
    except IntegrityError:
        return None
    at = obj.get("signed_at")
    return SignedHead(count, head_hash, sig, fp, at if isinstance(at, str) else None)


def read_head(path: str | os.PathLike[str], keys: dict[str, Any]) -> SignedHead | None:
    """The valid slot of ``path`` with the highest count; ``None`` if none (or no file)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(2 * SLOT_BYTES)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        return None
    heads = [parse_slot(data[i : i + SLOT_BYTES], keys) for i in (0, SLOT_BYTES)]
    valid = [h for h in heads if h is not None]
    return max(valid, key=lambda h: h.count) if valid else None
