"""Compute a declared feature set on OHLCV bars: sort once, then Numba kernels per symbol block.

The declaration (:mod:`quantcli.features.definitions`) is compiled into a dispatch table -- one
kind code and up to three parameters per feature -- that
:func:`quantcli.features._nb.compute_blocks` runs over contiguous symbol blocks, in parallel
over symbols. Every indicator follows TA-Lib's arithmetic (see ``docs/features.md``); each
symbol is computed over its full history, on its own.

Conventions
-----------
* Bars are ordered by ``(symbol, ts)`` first; the input order does not matter.
* Warm-up rows (the first ``FeatureSet.warmup`` bars of every symbol, 199 for ``technical_v1``)
  are dropped, so every kept row has every feature defined.
* Output: ``symbol, ts`` then the features in declaration order, all ``Float64``, sorted by
  ``(symbol, ts)``; never NaN or inf for finite, positive prices (zero denominators give 0).
"""

from __future__ import annotations

import itertools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import polars as pl

from quantcli.errors import InputError
from quantcli.features import _nb
from quantcli.features.definitions import FeatureSet, load_feature_set

#: kind name -> kernel code in quantcli.features._nb
KIND_CODES: dict[str, int] = {
    "nma": _nb.NMA,
    "bb_pct": _nb.BB_PCT,
    "bb_width": _nb.BB_WIDTH,
    "volume_z": _nb.VOLUME_Z,
    "rsi": _nb.RSI,
    "roc": _nb.ROC,
    "macd": _nb.MACD,
    "macd_signal": _nb.MACD_SIGNAL,
    "macd_hist": _nb.MACD_HIST,
    "adx": _nb.ADX,
    "plus_di": _nb.PLUS_DI,
    "minus_di": _nb.MINUS_DI,
    "atr": _nb.ATR,
    "volatility": _nb.VOLATILITY,
    "stoch_k": _nb.STOCH_K,
    "stoch_d": _nb.STOCH_D,
    "obv": _nb.OBV,
    "obv_ema": _nb.OBV_EMA,
    "return": _nb.RETURN,
}

# Parameter order passed to the kernels, per kind.
_PARAM_ORDER: dict[str, tuple[str, ...]] = {
    "bb_pct": ("window", "nbdev"),
    "bb_width": ("window", "nbdev"),
    "macd": ("fast", "slow", "signal"),
    "macd_signal": ("fast", "slow", "signal"),
    "macd_hist": ("fast", "slow", "signal"),
    "stoch_k": ("fastk", "slowk", "slowd"),
    "stoch_d": ("fastk", "slowk", "slowd"),
    "obv": (),
}

_PRICE_INPUTS = ("high", "low", "close", "volume")


@dataclass(frozen=True)
class Plan:
    """The compiled declaration: arrays the kernel reads."""

    codes: np.ndarray  # int64[F]
    params: np.ndarray  # float64[F, 3]
    names: tuple[str, ...]
    warmup: int


def compile_plan(fs: FeatureSet) -> Plan:
    """Compile a feature-set declaration into the kernel's dispatch arrays."""
    codes = np.empty(len(fs.features), dtype=np.int64)
    params = np.zeros((len(fs.features), 3), dtype=np.float64)
    for i, spec in enumerate(fs.features):
        codes[i] = KIND_CODES[spec.kind]
        order = _PARAM_ORDER.get(spec.kind, ("window",))
        for j, key in enumerate(order):
            params[i, j] = float(spec.params[key])
    return Plan(codes=codes, params=params, names=tuple(fs.feature_names), warmup=fs.warmup)


def _runs(df: pl.DataFrame) -> tuple[np.ndarray, list[str]]:
    """Row offsets (``int64[S + 1]``) and values of the runs of equal ``symbol``."""
    runs = df["symbol"].rle().struct.unnest()
    starts = np.zeros(runs.height + 1, dtype=np.int64)
    np.cumsum(runs["len"].to_numpy(), out=starts[1:])
    return starts, runs["value"].to_list()


def _is_sorted(df: pl.DataFrame, starts: np.ndarray, symbols: list[str]) -> bool:
    """Sorted by ``(symbol, ts)`` with strictly increasing ``ts`` per symbol, judged from the
    symbol runs (one string comparison per symbol, not per row): checking is ~10x cheaper than
    sorting 2.5 M rows, and bars from the store or the generator arrive sorted."""
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
    df = lf.select(
        pl.col("symbol").cast(pl.String),
        pl.col("ts"),
        *(pl.col(c).cast(pl.Float64) for c in _PRICE_INPUTS),
    ).collect()
    starts, symbols = _runs(df)
    if not _is_sorted(df, starts, symbols):
        df = df.sort("symbol", "ts")
    for col in ("symbol", "ts", *_PRICE_INPUTS):
        nulls = df[col].null_count()
        if nulls:
            raise InputError(f"bars: column '{col}' has {nulls} null value(s)")
    for col in _PRICE_INPUTS:
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


def n_threads() -> int:
    """Threads for the kernels: ``QCLI_FEATURE_THREADS`` or the number of CPUs."""
    raw = os.environ.get("QCLI_FEATURE_THREADS")
    if raw:
        try:
            return max(1, int(raw))
        except ValueError:
            raise InputError(f"QCLI_FEATURE_THREADS must be an integer, got {raw!r}") from None
    return max(1, os.cpu_count() or 1)


def _thread_ranges(starts: np.ndarray, threads: int) -> list[tuple[int, int]]:
    """Split the symbol blocks into at most ``threads`` contiguous ranges of similar row count."""
    n_sym = starts.shape[0] - 1
    if threads <= 1 or n_sym <= 1 or starts[-1] < 20_000:
        return [(0, n_sym)]
    targets = starts[-1] * np.arange(1, threads) / threads
    cuts = np.unique(np.clip(np.searchsorted(starts, targets), 1, n_sym - 1))
    edges = [0, *cuts.tolist(), n_sym]
    return [(int(a), int(b)) for a, b in itertools.pairwise(edges) if b > a]


def compute_sorted(
    sorted_bars: pl.DataFrame, plan: Plan, starts: np.ndarray | None = None
) -> tuple[pl.DataFrame, int]:
    """Features of bars already passed through :func:`sort_bars`; returns (frame, warm-up rows).

    ``starts`` (from :func:`block_starts`) saves recomputing the symbol blocks.
    """
    if starts is None:
        starts, _ = block_starts(sorted_bars)
    lengths = np.diff(starts)
    kept = np.maximum(lengths - plan.warmup, 0)
    out_starts = np.zeros_like(starts)
    np.cumsum(kept, out=out_starts[1:])
    total = int(out_starts[-1])
    out = np.empty((len(plan.names), total), dtype=np.float64)
    if total:
        inputs = [np.ascontiguousarray(sorted_bars[c].to_numpy()) for c in _PRICE_INPUTS]
        args = (plan.codes, plan.params, starts, out_starts, plan.warmup, *inputs, out)
        ranges = _thread_ranges(starts, n_threads())
        if len(ranges) == 1:
            _nb.compute_blocks(*args, *ranges[0])
        else:
            with ThreadPoolExecutor(len(ranges)) as pool:
                for fut in [pool.submit(_nb.compute_blocks, *args, lo, hi) for lo, hi in ranges]:
                    fut.result()
    # rows kept: bars warmup .. len-1 of every block
    idx = np.repeat(starts[:-1] + plan.warmup - out_starts[:-1], kept) + np.arange(total)
    keys = sorted_bars.select("symbol", "ts")[idx]
    frame = keys.hstack([pl.Series(name, out[i]) for i, name in enumerate(plan.names)])
    return frame, int(lengths.sum()) - total


def compute_features(
    bars: pl.DataFrame | pl.LazyFrame, feature_set: str = "technical_v1"
) -> pl.DataFrame:
    """Compute ``feature_set`` on ``bars``: ``symbol, ts`` and the declared features.

    Parameters
    ----------
    bars
        OHLCV bars with columns ``symbol, ts, high, low, close, volume`` (``open`` is not used by
        ``technical_v1``), any order. Each symbol's history is taken as complete: indicators are
        recursive, so a symbol's values depend on its first bar.
    feature_set
        The declaration in ``feature_defs/`` (default ``technical_v1``).

    Returns
    -------
    polars.DataFrame
        ``symbol, ts, <features>`` (Float64, declaration order), sorted by ``(symbol, ts)``,
        without each symbol's warm-up rows (``load_feature_set(feature_set).warmup`` bars).

    Examples
    --------
    >>> from quantcli.data.synthetic import synthetic_universe
    >>> feats = compute_features(synthetic_universe(2, 300, seed=1))
    >>> feats.shape  # 2 symbols x (300 - 199 warm-up bars), symbol + ts + 29 features
    (202, 31)
    """
    plan = compile_plan(load_feature_set(feature_set))
    srt = sort_bars(bars)
    starts, _ = block_starts(srt)
    frame, _ = compute_sorted(srt, plan, starts)
    return frame
