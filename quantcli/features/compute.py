"""Compute a declared feature set on OHLCV bars: sort and check once, then a lazy Polars plan.

The declaration (:mod:`quantcli.features.definitions`) is compiled into lazy Polars expressions
(:mod:`quantcli.features.expressions`), evaluated with ``LazyFrame.with_columns`` on the bars
sorted by ``(symbol, ts)``, by one of two engines: ``kernel`` (default; each kind's stateful
Numba kernel over contiguous symbol blocks, :mod:`quantcli.features.engine`) or ``polars``
(native Polars expressions only). Every indicator follows
TA-Lib's arithmetic (see ``docs/features.md``); each symbol is computed over its full history,
on its own.

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
from dataclasses import dataclass

import numpy as np
import polars as pl

from quantcli.errors import InputError
from quantcli.features.definitions import FeatureSet, load_feature_set
from quantcli.features.expressions import (
    DEFAULT_ENGINE,
    check_engine,
    lazy_features,
)

__all__ = [
    "Plan",
    "block_starts",
    "compile_plan",
    "compute_features",
    "compute_sorted",
    "sort_bars",
]

_PRICE_INPUTS = ("high", "low", "close", "volume")


@dataclass(frozen=True)
class Plan:
    """A declaration bound to an engine: what :func:`compute_sorted` evaluates."""

    feature_set: FeatureSet
    engine: str = DEFAULT_ENGINE

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.feature_set.feature_names)

    @property
    def warmup(self) -> int:
        return self.feature_set.warmup


def compile_plan(fs: FeatureSet, engine: str = DEFAULT_ENGINE) -> Plan:
    """Bind a feature-set declaration to an engine (``kernel`` or ``polars``)."""
    return Plan(feature_set=fs, engine=check_engine(engine))


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


def compute_sorted(
    sorted_bars: pl.DataFrame, plan: Plan, starts: np.ndarray | None = None
) -> tuple[pl.DataFrame, int]:
    """Features of bars already passed through :func:`sort_bars`; returns (frame, warm-up rows).

    The ``polars`` engine evaluates :func:`quantcli.features.expressions.lazy_features`
    (``LazyFrame.with_columns`` of the compiled expressions, then a lazy filter dropping the
    warm-up rows); the ``kernel`` engine runs the same computation as its lazy plan eagerly
    (:func:`quantcli.features.engine.run_frame`), joining the kernels' output columns to the
    kept rows' keys without copying them. ``starts`` (from :func:`block_starts`) saves
    recomputing the symbol blocks.
    """
    if starts is None:
        starts, _ = block_starts(sorted_bars)
    if plan.engine == "kernel":
        from quantcli.features.engine import KernelPlan, run_frame

        frame, _ = run_frame(KernelPlan.of(plan.feature_set), sorted_bars, starts)
        return frame, sorted_bars.height - frame.height
    frame = lazy_features(sorted_bars, plan.feature_set, plan.engine, starts).collect()
    return frame, sorted_bars.height - frame.height


def compute_features(
    bars: pl.DataFrame | pl.LazyFrame, feature_set: str = "technical_v1", engine: str = "kernel"
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
    engine
        ``"kernel"`` (default: Numba kernels, one Polars expression per indicator group,
        bit-identical to TA-Lib) or ``"polars"`` (native Polars expressions, equal to a relative
        1e-9); see :mod:`quantcli.features.expressions`.

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
    from quantcli._interop import to_polars

    if not isinstance(bars, pl.LazyFrame):
        bars = to_polars(bars, "bars")  # pandas and pyarrow bars are accepted too
    plan = compile_plan(load_feature_set(feature_set), engine)
    srt = sort_bars(bars)
    starts, _ = block_starts(srt)
    frame, _ = compute_sorted(srt, plan, starts)
    return frame
