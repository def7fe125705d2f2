"""Bars as the engines read them: typed, sorted by ``(symbol, ts)``, cut into symbol blocks.

Every engine and the build hash work on contiguous blocks of one symbol's bars; a block is
addressed by its row offsets (``starts``, ``int64[S + 1]``), computed once per frame.
"""

from __future__ import annotations

import itertools

import numpy as np
import polars as pl

from quantcli.errors import InputError

_PRICE_INPUTS = ("high", "low", "close", "volume")


def _runs(df: pl.DataFrame) -> tuple[np.ndarray, list[str]]:
    """Row offsets (``int64[S + 1]``) and values of the runs of equal ``symbol``."""
    runs = df["symbol"].rle().struct.unnest()
    starts = np.zeros(runs.height + 1, dtype=np.int64)
    np.cumsum(runs["len"].to_numpy(), out=starts[1:])
    return starts, runs["value"].to_list()


def _is_sorted(df: pl.DataFrame, starts: np.ndarray, symbols: list[str]) -> bool:
    """Sorted by ``(symbol, ts)`` with strictly increasing ``ts`` per symbol, judged from the
    symbol runs (one string comparison per symbol, not per row): checking is a linear
    scan, much cheaper than a sort, and bars from the store or the generator arrive sorted."""
    if any(a >= b for a, b in itertools.pairwise(symbols)):
        return False
    ts = df["ts"].to_physical().to_numpy()
    rising = ts[1:] > ts[:-1]
    rising[starts[1:-1] - 1] = True  # a new symbol starts its own history
    return bool(rising.all())


def sort_bars(bars: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """The columns the engine needs, typed (``Float64`` prices) and sorted by ``(symbol, ts)``.

    Raises :class:`InputError` naming the column for a missing column, a null/NaN value or a
    duplicate ``(symbol, ts)`` key.
    """
    lf = bars.lazy() if isinstance(bars, pl.DataFrame) else bars
    present = lf.collect_schema().names()
    missing = [c for c in ("symbol", "ts", *_PRICE_INPUTS) if c not in present]
    if missing:
        raise InputError(
            f"bars: missing column(s) {', '.join(missing)}",
            hint="bars need symbol, ts, open, high, low, close, volume",
        )
    # open is optional (technical_v1 does not read it); kept, typed and checked when present
    prices = ("open", *_PRICE_INPUTS) if "open" in present else _PRICE_INPUTS
    df = lf.select(
        pl.col("symbol").cast(pl.String),
        pl.col("ts"),
        *(pl.col(c).cast(pl.Float64) for c in prices),
    ).collect()
    starts, symbols = _runs(df)
    if not _is_sorted(df, starts, symbols):
        df = df.sort("symbol", "ts")
    for col in ("symbol", "ts", *prices):
        nulls = df[col].null_count()
        if nulls:
            raise InputError(f"bars: column '{col}' has {nulls} null value(s)")
    for col in prices:
        arr = df[col].to_numpy()
        if not np.isfinite(arr).all():
            row = int(np.flatnonzero(~np.isfinite(arr))[0])
            raise InputError(
                f"bars: column '{col}' has a NaN or infinite value "
                f"(symbol {df['symbol'][row]}, ts {df['ts'][row]})"
            )
    return df


def block_starts(sorted_bars: pl.DataFrame) -> tuple[np.ndarray, list[str]]:
    """Row offsets of the symbol blocks (``int64[S + 1]``) and the symbols, in order.

    Raises :class:`InputError` on a duplicate ``(symbol, ts)``.
    """
    starts, symbols = _runs(sorted_bars)
    ts = sorted_bars["ts"].to_physical().to_numpy()
    same = ts[1:] == ts[:-1]
    if same.any():
        same[starts[1:-1] - 1] = False  # a new symbol may repeat the previous symbol's ts
        if same.any():
            row = int(np.flatnonzero(same)[0]) + 1
            raise InputError(
                f"bars: duplicate key (symbol {sorted_bars['symbol'][row]}, "
                f"ts {sorted_bars['ts'][row]})",
                hint="each (symbol, ts) must occur once; validate the bars first",
            )
    return starts, symbols


__all__ = ["block_starts", "sort_bars"]
