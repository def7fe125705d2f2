"""Content hashes of the bars a feature computation reads.

A symbol's *history hash* is the SHA-256 of its bars sorted by ``ts``: ``ts`` as little-endian
int64 microseconds since the Unix epoch (UTC), then ``open, high, low, close, volume`` as
little-endian float64: every price a kind can read (``bop`` reads ``open``), so a revised bar of
any column changes the hash. A hash stored by a version that left ``open`` out simply differs,
so the next build recomputes that symbol once instead of misreading the store.

The *input hash* of a frame of bars composes the symbols' history hashes in symbol order,
``sha256("<symbol>:<n_bars>:<history sha256>\\n" ...)``, so it can be computed shard by shard
(a 25 M row build never holds all bars at once) and gives the same value as hashing the frame
in one go. It is stable under row and symbol order and changes when any value changes.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable

import numpy as np
import polars as pl

from quantcli.features.blocks import block_starts, sort_bars

HASHED_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")


def history_sha256(ts_us: np.ndarray, columns: Iterable[np.ndarray]) -> str:
    """SHA-256 of one symbol's bars (``ts`` in int64 microseconds, then the price columns)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(ts_us, dtype="<i8").tobytes())
    for col in columns:
        h.update(np.ascontiguousarray(col, dtype="<f8").tobytes())
    return h.hexdigest()


def combine(per_symbol: Iterable[tuple[str, int, str]]) -> str:
    """The input hash from ``(symbol, n_bars, history_sha256)`` triples in symbol order."""
    h = hashlib.sha256()
    for symbol, n, sha in per_symbol:
        h.update(f"{symbol}:{n}:{sha}\n".encode())
    return h.hexdigest()


def symbol_hashes(sorted_bars: pl.DataFrame, starts: np.ndarray) -> list[tuple[str, int, str]]:
    """``(symbol, n_bars, history_sha256)`` of every block of bars sorted by ``(symbol, ts)``."""
    ts = sorted_bars["ts"].dt.epoch("us").to_numpy()
    cols = [sorted_bars[c].to_numpy() for c in HASHED_COLUMNS]
    symbols = sorted_bars["symbol"]
    out = []
    for a, b in itertools.pairwise(starts):
        out.append((symbols[int(a)], int(b - a), history_sha256(ts[a:b], (c[a:b] for c in cols))))
    return out


def input_sha256(bars: pl.DataFrame) -> str:
    """The input hash of a frame of bars (any row order); see the module docstring."""
    srt = sort_bars(bars)
    starts, _ = block_starts(srt)
    return combine(symbol_hashes(srt, starts))
