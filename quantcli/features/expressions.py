"""A feature-set declaration compiled into lazy Polars expressions, by one of two engines.

Every declared feature becomes a ``pl.Expr`` aliased by its declared name, evaluated with
``LazyFrame.with_columns`` on bars sorted by ``(symbol, ts)``; the warm-up rows (the first
``FeatureSet.warmup`` bars of every symbol) are dropped by a lazy ``filter`` on the per-symbol
bar position. :func:`lazy_features` returns that plan; ``.explain()`` prints it.

Engines
-------
``"polars"``
    Native Polars expressions only (no Python function): the readable, reviewable definition
    of every feature. Conventions (TA-Lib's, see the module docstring of
    :mod:`quantcli.features.kinds._steps`):

    * Rolling windows: SMA = ``rolling_mean(n)``, STDDEV = ``rolling_var(n, ddof=0)`` clipped at
      0, then ``sqrt`` (running sums: evaluated over the symbol); ``rolling_max/min``,
      ``shift``, ``diff`` (exact) run on the whole sorted frame. Every column is masked with
      ``pl.when(__bar >= first)`` before its first defined bar.
    * The recursive indicators are ``ewm_mean(alpha, adjust=False)`` over the symbol on a
      series whose values before the seed bar are null and whose seed-bar value is TA-Lib's seed
      (an SMA): EMA has ``alpha = 2 / (n + 1)``; Wilder smoothing (RSI, ATR, ADX)
      ``alpha = 1 / n``; ADX's Wilder *sums* ``S_t = S_{t-1} (1 - 1/n) + x_t`` are an
      ``alpha = 1/n`` EMA of ``n x``. OBV is a ``cum_sum`` over the symbol.
    * A zero denominator gives 0, as TA-Lib does: ``pl.when`` guards every division (RSI,
      +DI/-DI/DX within 1e-8 of 0, HH == LL, zero variance, a zero price).
    * Shared intermediates are ``__``-prefixed columns in staged ``with_columns`` (see
      :class:`quantcli.features.polars_graph.PolarsGraph`).

    Agrees with the kernel engine to a relative 1e-9 (not bit for bit: Polars sums windows in
    its own order); ``tests/features/test_expressions.py`` checks it.
``"kernel"`` (default)
    The same expressions API, but the features are computed by
    :class:`quantcli.features.engine.KernelPlan`: each kind's stateful Numba kernel over the
    contiguous symbol blocks, one call per TA-Lib call with equal parameters (``macd,
    macd_signal, macd_hist`` share one), every symbol from its first bar with one state vector
    that a streaming build stores and continues. The plan is the kept rows' keys after the lazy
    warm-up filter, then ONE ``map_batches`` expression returning a struct of the features
    (unnested); the warm-up bars go through the kernels into a scratch buffer, never into the
    frame. Bit-identical to TA-Lib.

Example
-------
>>> from quantcli.data.synthetic import synthetic_universe
>>> from quantcli.features import load_feature_set
>>> from quantcli.features.compute import sort_bars
>>> bars = sort_bars(synthetic_universe(2, 300, seed=1))
>>> lazy_features(bars, load_feature_set("technical_v1"), engine="polars").collect().shape
(202, 31)
"""

from __future__ import annotations

import numpy as np
import polars as pl

from quantcli.errors import InputError
from quantcli.features.blocks import block_starts
from quantcli.features.definitions import FeatureSet
from quantcli.features.engine import lazy_kernel_features
from quantcli.features.kinds import get_kind
from quantcli.features.polars_graph import PolarsGraph

ENGINES = ("kernel", "polars")
DEFAULT_ENGINE = "kernel"

_INPUTS = ("high", "low", "close", "volume")
_POS = "__bar"  # per-symbol bar position, 0 at each symbol's first bar
_ZERO = 1e-8  # TA-Lib's TA_IS_ZERO threshold (RSI, DI, DX denominators)


def check_engine(engine: str) -> str:
    """``engine`` if it is a known engine; :class:`InputError` naming the choices otherwise."""
    if engine not in ENGINES:
        raise InputError(
            f"`engine` must be one of {', '.join(ENGINES)}, got `engine={engine!r}`.",
            hint="use --engine kernel (TA-Lib-exact Numba kernels) or --engine polars",
        )
    return engine


# --------------------------------------------------------------------------------------------
# "polars" engine: each kind's Polars twin (Kind.polars) on one staged graph.
# --------------------------------------------------------------------------------------------
def polars_stages(fs: FeatureSet) -> list[list[pl.Expr]]:
    """The ``"polars"`` engine's ``with_columns`` stages for ``fs``: intermediates
    (``__``-prefixed) and one expression per declared feature, aliased by its name, each in the
    first stage after the columns it reads. Native expressions only, except the kinds whose
    twin says otherwise in its docstring (see ``docs/features.md``)."""
    g = PolarsGraph()
    g.warmup = fs.warmup  # a cross-sectional twin compares the rows kept past the warm-up only
    for spec in fs.features:
        kind = get_kind(spec.kind)
        if kind.scope == "bars":
            src = {c: c for c in kind.inputs}
        else:
            src = {role: str(spec.params[role]) for role in kind.inputs}
        expr, first = kind.polars(g, spec.params, src)[spec.output or kind.outputs[0]]
        g.put(spec.name, expr, first)
    return g.stages


# --------------------------------------------------------------------------------------------
# The plan.
# --------------------------------------------------------------------------------------------
def lazy_features(
    sorted_bars: pl.DataFrame,
    fs: FeatureSet,
    engine: str = DEFAULT_ENGINE,
    starts: np.ndarray | None = None,
) -> pl.LazyFrame:
    """The lazy plan computing ``fs`` on bars sorted by ``(symbol, ts)``.

    Parameters
    ----------
    sorted_bars
        Bars from :func:`quantcli.features.compute.sort_bars` (sorted, Float64 prices, checked).
    fs
        The feature-set declaration.
    engine
        ``"kernel"`` (Numba kernels, bit-identical to TA-Lib) or ``"polars"`` (native
        expressions); see the module docstring.
    starts
        Row offsets of the symbol blocks (``int64[S + 1]``, from
        :func:`quantcli.features.compute.block_starts`); the kernel engine binds them into its
        expressions. Computed here when not given.

    Returns
    -------
    polars.LazyFrame
        ``symbol, ts, <features>`` (Float64, declaration order), warm-up rows filtered out.
    """
    check_engine(engine)
    lf = sorted_bars.lazy()
    warmup_dropped = pl.col(_POS) >= fs.warmup
    if engine == "polars":
        for stage in polars_stages(fs):
            lf = lf.with_columns(stage)
        return lf.filter(warmup_dropped).select("symbol", "ts", *fs.feature_names)
    if starts is None:
        starts, _ = block_starts(sorted_bars)
    return lazy_kernel_features(sorted_bars, fs, starts)
