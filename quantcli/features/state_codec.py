"""How a symbol's kernel state vector is stored: its little-endian float64 bytes, Snappy-compressed.

The window ring buffers hold the same recent closes several times over (each moving average's,
the bands', the returns'), which Snappy finds cheaply, and DuckDB updates, checkpoints and reads
smaller blobs faster (docs/features.md, streaming, has the figures). Each row names its codec,
so a state stored raw by an earlier version still loads. pyarrow (Snappy) loads on first use:
``qcli features --help`` and ``FeatureStream`` without a store do not need it.
"""

from __future__ import annotations

import numpy as np

#: the codec of every state written now (``feature_stream_state.state_codec``)
CODEC = "snappy"
#: the codec of a state written before the column existed: the raw bytes
RAW = ""


def encode(vec: np.ndarray) -> bytes:
    """The stored form of one state vector (float64)."""
    import pyarrow as pa

    raw = np.ascontiguousarray(vec, dtype="<f8").tobytes()
    return pa.compress(raw, codec=CODEC, asbytes=True)


def decode(blob: bytes, codec: str, size: int) -> bytes | None:
    """The raw little-endian float64 bytes of a stored state of ``size`` values, or ``None``
    when the row cannot be one (an unknown codec, a corrupt or truncated blob): the caller
    then rebuilds the symbol instead of continuing it."""
    n_bytes = 8 * size
    if codec == RAW:
        return bytes(blob) if len(blob) == n_bytes else None
    if codec != CODEC or _snappy_length(blob) != n_bytes:
        return None
    import pyarrow as pa

    try:
        raw = pa.decompress(bytes(blob), n_bytes, codec=CODEC, asbytes=True)
    except (pa.ArrowException, OSError, ValueError):
        return None
    return raw if len(raw) == n_bytes else None


def _snappy_length(blob: bytes) -> int | None:
    """The uncompressed length a Snappy block declares (its leading varint): Arrow's decompress
    fills the buffer it is given, so a shorter state would come back padded."""
    length = shift = 0
    for byte in bytes(blob[:5]):
        length |= (byte & 0x7F) << shift
        if byte < 0x80:
            return length
        shift += 7
    return None


__all__ = ["CODEC", "RAW", "decode", "encode"]
