"""The hash-chain and signature rules shared by the writer and the verifier.

A record is a JSON object. Its hash is the sha256 (hex) of its *canonical* form: the record
without its ``hash`` and ``sig`` keys, serialised with sorted keys, separators ``(",", ":")`` and
ASCII only. Each record's ``prev_hash`` is the previous record's ``hash``; the first record's
``prev_hash`` is :data:`GENESIS_HASH` (64 zeros). ``seq`` counts records from 0 without gaps.

A stored line is exactly the canonical form with ``"hash"`` (and, on the last record of each
append, ``"sig"``) added as the last keys: any other spelling of the same JSON is an alteration.
``sig`` is the Ed25519 signature, by the ledger key, of :func:`head_statement` ``(seq + 1, hash)``:
"the ledger's first ``seq + 1`` records end in ``hash``".
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


def head_statement(count: int, head_hash: str) -> bytes:
    """What the ledger key signs: the number of records and the hash of the last one."""
    return f"quantcli-ledger-head:v1:{count}:{head_hash}".encode("ascii")


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
