"""The hash-chain rules shared by the writer and the verifier.

A record is a JSON object. Its hash is the sha256 (hex) of its *canonical* form: the record
without its ``hash`` key, serialised with sorted keys, separators ``(",", ":")`` and ASCII only.
Each record's ``prev_hash`` is the previous record's ``hash``; the first record's ``prev_hash`` is
:data:`GENESIS_HASH` (64 zeros). ``seq`` counts records from 0 without gaps.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

GENESIS_HASH = "0" * 64


def canonical_bytes(record: dict[str, Any]) -> bytes:
    """The canonical serialisation of ``record`` without its ``hash`` key (what is hashed)."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def record_hash(record: dict[str, Any]) -> str:
    """sha256 (hex) of the canonical form of ``record`` (see module docstring)."""
    return hashlib.sha256(canonical_bytes(record)).hexdigest()


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
