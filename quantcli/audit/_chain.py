"""The hash-chain and signature rules shared by the writer and the verifier.

A record is a JSON object. Its hash is the sha256 (hex) of its *canonical* form: the record
without its ``hash`` and ``sig`` keys, serialised with sorted keys, separators ``(",", ":")`` and
ASCII only. Each record's ``prev_hash`` is the previous record's ``hash``; the first record's
``prev_hash`` is :data:`GENESIS_HASH` (64 zeros). ``seq`` counts records from 0 without gaps.

A stored line is exactly the canonical form with ``"hash"`` (and, on the last record of each
append, ``"sig"``) added as the last keys: any other spelling of the same JSON is an alteration.
``sig`` is the Ed25519 signature, by the ledger key, of :func:`record_statement`
``(seq + 1, hash)``: "the ledger's first ``seq + 1`` records end in ``hash``".

Record and head signatures sign different statements (``quantcli-ledger-record:v2`` and
``quantcli-ledger-head:v2``), so neither can stand in for the other: were a record's signature a
valid head, every request boundary would carry one and the ledger could be cut back to any of
them without the key. Ledgers written before the split signed records with
:func:`legacy_record_statement`, the same bytes their heads signed; such record signatures still
verify, but such a head proves nothing and is never accepted (``qcli audit adopt`` re-signs it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

GENESIS_HASH = "0" * 64
_UNHASHED = ("hash", "sig")


def canonical_bytes(record: dict[str, Any]) -> bytes:
    """The canonical serialisation of ``record`` without ``hash``/``sig`` (what is hashed).

    Raises ``ValueError`` for NaN or an infinity, which JSON cannot carry.
    """
    body = {k: v for k, v in record.items() if k not in _UNHASHED}
    return json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def record_hash(record: dict[str, Any]) -> str:
    """sha256 (hex) of the canonical form of ``record`` (see module docstring)."""
    return hashlib.sha256(canonical_bytes(record)).hexdigest()


def record_line(body: bytes, hash_hex: str, sig: str | None = None) -> bytes:
    """The stored line (without newline) of a record whose canonical form is ``body``."""
    tail = b',"hash":"' + hash_hex.encode("ascii") + b'"'
    if sig is not None:
        tail += b',"sig":"' + sig.encode("ascii") + b'"'
    if body == b"{}":
        return b"{" + tail[1:] + b"}"
    return body[:-1] + tail + b"}"


def record_statement(count: int, head_hash: str) -> bytes:
    """What a record's ``sig`` signs: the ledger's first ``count`` records end in ``head_hash``."""
    return f"quantcli-ledger-record:v2:{count}:{head_hash}".encode("ascii")


def legacy_record_statement(count: int, head_hash: str) -> bytes:
    """What a record's ``sig`` signed before record and head statements were separated.

    Accepted on records only: it is also what the old heads signed, so it never vouches for a
    head.
    """
    return f"quantcli-ledger-head:v1:{count}:{head_hash}".encode("ascii")


def head_statement(ledger_id: str, generation: int, count: int, head_hash: str) -> bytes:
    """What a signed head's ``sig`` signs.

    ``ledger_id`` is drawn at random when the head file is created, so no head of another ledger
    signed with the same key fits this one; ``generation`` grows by one at every head write, so
    the two slots of one head file are consecutive writes and neither can be an older one.
    """
    return f"quantcli-ledger-head:v2:{ledger_id}:{generation}:{count}:{head_hash}".encode("ascii")


def features_sha256(values: Sequence[float | None] | np.ndarray) -> str:
    """sha256 (hex) of the model's input feature vector.

    Convention: the values in the model's input order, as little-endian IEEE-754 float64
    (``numpy.dtype('<f8')``), ``None`` written as NaN, concatenated. The hash therefore pins the
    exact bits the model saw, independent of JSON number formatting.
    """
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiu":
        arr = np.ascontiguousarray(values, dtype="<f8")  # the serving path: no per-value loop
    else:
        arr = np.asarray([np.nan if v is None else v for v in values], dtype="<f8")
    return hashlib.sha256(arr.tobytes()).hexdigest()
