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

from dataclasses import dataclass

import numpy as np
import polars as pl

from quantcli._interop import to_polars
from quantcli.features.blocks import block_starts, sort_bars
from quantcli.features.definitions import FeatureSet, load_feature_set
from quantcli.features.engine import KernelPlan, run_frame
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
    if not isinstance(bars, pl.LazyFrame):
        bars = to_polars(bars, "bars")  # pandas and pyarrow bars are accepted too
    plan = compile_plan(load_feature_set(feature_set), engine)
    srt = sort_bars(bars)
    starts, _ = block_starts(srt)
    frame, _ = compute_sorted(srt, plan, starts)
    return frame
