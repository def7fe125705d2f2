"""Where the ledger lives, and its signed head: ``<ledger>.head``, the record count and last hash.

The file holds two fixed-size slots, each one JSON object padded with spaces to
:data:`SLOT_BYTES` - 1 bytes plus a newline::

    {"count": 7, "gen": 12, "head_hash": "...", "ledger_id": "...", "sig": "ed25519:<fp>:<b64>",
     "signed_at": "...", "v": 2}

``sig`` signs :func:`~quantcli.audit._chain.head_statement` ``(ledger_id, gen, count,
head_hash)`` with the ledger key; ``signed_at`` is informational (not signed). ``ledger_id`` is
random, drawn when the head file is created; ``gen`` grows by one at every head write, which
goes to slot ``gen % 2`` (one ``pwrite``). A new head file holds generations 0 and 1.

A head is valid only when *both* slots verify, name the same ledger, sit in their own slot and
are consecutive generations, the newer counting no fewer records: the newer one is the head.
Accepting a lone slot would let an editor blank the newer one and cut the ledger back to the
older; a torn slot (a crash inside a 512-byte ``pwrite``) is therefore refused like an edit.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from quantcli import config
from quantcli.audit._chain import head_statement, legacy_record_statement
from quantcli.errors import IntegrityError
from quantcli.integrity import sign_message, verify_message

LEDGER_FILE = "ledger.jsonl"
SLOT_BYTES = 512
HEAD_VERSION = 2
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_LEDGER_ID = re.compile(r"^[0-9a-f]{32}$")


def ledger_path() -> Path:
    """``$QCLI_HOME/audit/ledger.jsonl``."""
    return config.audit_dir() / LEDGER_FILE


def head_path(ledger: str | os.PathLike[str]) -> Path:
    """``<ledger>.head`` next to the ledger file."""
    p = Path(ledger)
    return p.with_name(p.name + ".head")


def new_ledger_id() -> str:
    return secrets.token_hex(16)


@dataclass(frozen=True)
class SignedHead:
    """A verified head: ``count`` records, the last of which hashes to ``head_hash``.

    ``version`` 1 is a head written before record and head signatures were separated: its
    signature is also a record's, so it is reported but never trusted.
    """

    count: int
    head_hash: str
    sig: str
    key: str
    signed_at: str | None = None
    generation: int | None = None
    ledger_id: str | None = None
    version: int = HEAD_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "head_hash": self.head_hash,
            "sig": self.sig,
            "key": self.key,
            "signed_at": self.signed_at,
            "generation": self.generation,
            "ledger_id": self.ledger_id,
            "version": self.version,
        }

    def statement(self) -> bytes:
        assert self.ledger_id is not None and self.generation is not None
        return head_statement(self.ledger_id, self.generation, self.count, self.head_hash)


@dataclass(frozen=True)
class HeadState:
    """What :func:`read_head_state` found: the valid ``head``, else the ``problem`` (a phrase
    completing "<file> ..."), and ``legacy`` the verified head of the old format, if that is
    what the file holds."""

    head: SignedHead | None
    problem: str | None
    legacy: SignedHead | None = None


def encode_slot(ledger_id: str, generation: int, count: int, head_hash: str, sig: str) -> bytes:
    body = json.dumps(
        {
            "count": count,
            "gen": generation,
            "head_hash": head_hash,
            "ledger_id": ledger_id,
            "sig": sig,
            "signed_at": datetime.now(UTC).isoformat(),
            "v": HEAD_VERSION,
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode("ascii")
    if len(body) > SLOT_BYTES - 1:
        raise ValueError("head slot overflow")  # a signature is ~110 bytes: cannot happen
    return body.ljust(SLOT_BYTES - 1, b" ") + b"\n"


def signed_slot(
    ledger_id: str, generation: int, count: int, head_hash: str, key: tuple[Any, str]
) -> bytes:
    sig = sign_message(head_statement(ledger_id, generation, count, head_hash), "ledger", key=key)
    return encode_slot(ledger_id, generation, count, head_hash, sig)


def write_slot(
    fd: int, ledger_id: str, generation: int, count: int, head_hash: str, key: tuple[Any, str]
) -> None:
    """Overwrite slot ``generation % 2`` of the open head file ``fd``."""
    slot = signed_slot(ledger_id, generation, count, head_hash, key)
    os.pwrite(fd, slot, (generation % 2) * SLOT_BYTES)


def write_new_head(
    fd: int, count: int, head_hash: str, key: tuple[Any, str], ledger_id: str | None = None
) -> tuple[str, int]:
    """Fill the open, new head file ``fd`` with generations 0 and 1 of ``(count, head_hash)``
    for a new ledger id (one ``pwrite``); returns ``(ledger_id, 1)``."""
    lid = ledger_id or new_ledger_id()
    data = b"".join(signed_slot(lid, g, count, head_hash, key) for g in (0, 1))
    os.pwrite(fd, data, 0)
    return lid, 1


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
    at = obj.get("signed_at")
    at = at if isinstance(at, str) else None
    version = obj.get("v", 1)
    if version == 1 and "v" not in obj:
        message = legacy_record_statement(count, head_hash)
        gen, lid = None, None
    elif type(version) is int and version == HEAD_VERSION:
        gen, lid = obj.get("gen"), obj.get("ledger_id")
        if type(gen) is not int or gen < 0 or not isinstance(lid, str) or not _LEDGER_ID.match(lid):
            return None
        message = head_statement(lid, gen, count, head_hash)
    else:
        return None
    try:
        fp = verify_message(message, sig, "ledger", keys=keys)
    except IntegrityError:
        return None
    return SignedHead(count, head_hash, sig, fp, at, gen, lid, version if gen is not None else 1)


def read_head_state(path: str | os.PathLike[str], keys: dict[str, Any]) -> HeadState:
    """The head of ``path`` under the rules of the module docstring, or why there is none."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(2 * SLOT_BYTES)
    except FileNotFoundError:
        return HeadState(None, "is missing")
    except (IsADirectoryError, PermissionError, OSError):
        return HeadState(None, "is unreadable")
    slots = [parse_slot(data[i : i + SLOT_BYTES], keys) for i in (0, SLOT_BYTES)]
    if any(s is not None and s.version == 1 for s in slots) and not any(
        s is not None and s.version == HEAD_VERSION for s in slots
    ):
        legacy = max((s for s in slots if s is not None), key=lambda h: h.count)
        return HeadState(
            None,
            "is in the format written before record and head signatures were separated, "
            "which cannot show that the ledger was not cut back",
            legacy,
        )
    for i, s in enumerate(slots):
        if s is None or s.version != HEAD_VERSION:
            return HeadState(
                None,
                f"slot {i} does not verify (edited, torn, or not signed by a ledger key in "
                "the keyring)",
            )
    a, b = slots
    assert a is not None and b is not None and a.generation is not None
    assert b.generation is not None
    if a.ledger_id != b.ledger_id:
        return HeadState(None, "holds the heads of two different ledgers")
    if a.generation % 2 != 0 or b.generation % 2 != 1 or abs(a.generation - b.generation) != 1:
        return HeadState(
            None, "does not hold two consecutive head writes (a slot was replaced by an older one)"
        )
    new, old = (a, b) if a.generation > b.generation else (b, a)
    if new.count < old.count:
        return HeadState(None, "holds a newer head counting fewer records than the older one")
    return HeadState(new, None)


def read_head(path: str | os.PathLike[str], keys: dict[str, Any]) -> SignedHead | None:
    """The valid head of ``path``, ``None`` if there is none (see :func:`read_head_state`)."""
    return read_head_state(path, keys).head
