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
    :mod:`quantcli.features._nb`):

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
      :class:`_Graph`).

    Agrees with the kernel engine to a relative 1e-9 (not bit for bit: Polars sums windows in
    its own order); ``tests/features/test_expressions.py`` checks it.
``"kernel"`` (default)
    The same expressions API, but each indicator GROUP -- features of one TA-Lib call with
    equal parameters (``macd, macd_signal, macd_hist``; ``adx_14, plus_di_14, minus_di_14``;
    ``bb_pct, bb_width``; ``stoch_k, stoch_d``; any other single feature) -- is ONE
    ``map_batches`` expression that runs the Numba kernel of :mod:`quantcli.features._nb` over
    the contiguous symbol blocks and returns the member's column, or a struct of the group's
    outputs. The block offsets and the sorted frame's price columns are bound at plan time
    (:class:`BoundFrame`: the frame is sorted once), and the warm-up filter runs *before* the
    groups, so each kernel writes the kept rows once while still reading every symbol's history
    from its first bar. Polars' common subexpression elimination does not merge identical
    Python UDFs (measured on Polars 2.1: a struct UDF referenced by two ``struct.field`` calls
    ran twice), so a multi-output group is a temporary ``__group_<members>`` struct column and a
    second ``with_columns`` takes one ``struct.field`` per feature: each group runs once per
    evaluation. Bit-identical to TA-Lib.

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

import itertools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import polars as pl

from quantcli.errors import InputError
from quantcli.features import _nb
from quantcli.features.definitions import FeatureSet
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
# "kernel" engine: one map_batches expression per indicator group.
# --------------------------------------------------------------------------------------------
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

# Parameter order passed to the kernels, per kind (default: the window alone).
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

# Outputs of each kernel group, in the row order of _nb.group_values (group code -> rows).
_GROUP_ROWS: dict[int, int] = {_nb.BB_PCT: 2, _nb.MACD: 3, _nb.ADX: 3, _nb.STOCH_K: 2}


@dataclass(frozen=True)
class KernelGroup:
    """One kernel call: a TA-Lib group with its parameters and the declared features it feeds.

    ``members`` maps each feature name to its row in the group's output.
    """

    code: int
    params: tuple[float, float, float]
    members: dict[str, int]

    @property
    def rows(self) -> int:
        return _GROUP_ROWS.get(self.code, 1)

    @property
    def column(self) -> str:
        """The temporary struct column of the group in the plan."""
        return "__group_" + "_".join(self.members)


def kernel_groups(fs: FeatureSet) -> list[KernelGroup]:
    """The declared features grouped by kernel call (same TA-Lib group, same parameters),
    in order of each group's first feature."""
    groups: dict[tuple[int, tuple[float, float, float]], dict[str, int]] = {}
    for spec in fs.features:
        code = KIND_CODES[spec.kind]
        raw = [float(spec.params[k]) for k in _PARAM_ORDER.get(spec.kind, ("window",))]
        params = (*raw, 0.0, 0.0, 0.0)[:3]
        key = (int(_nb.group_of(code)), params)
        groups.setdefault(key, {})[spec.name] = int(_nb.member_row(code))
    return [KernelGroup(code, params, members) for (code, params), members in groups.items()]


def n_threads() -> int:
    """Threads for the kernels: ``QCLI_FEATURE_THREADS`` or the number of CPUs."""
    raw = os.environ.get("QCLI_FEATURE_THREADS")
    if raw:
        try:
            return max(1, int(raw))
        except ValueError:
            raise InputError(f"QCLI_FEATURE_THREADS must be an integer, got {raw!r}") from None
    return max(1, os.cpu_count() or 1)


def thread_ranges(starts: np.ndarray, threads: int) -> list[tuple[int, int]]:
    """Split the symbol blocks into at most ``threads`` contiguous ranges of similar row count."""
    n_sym = starts.shape[0] - 1
    if threads <= 1 or n_sym <= 1 or starts[-1] < 20_000:
        return [(0, n_sym)]
    targets = starts[-1] * np.arange(1, threads) / threads
    cuts = np.unique(np.clip(np.searchsorted(starts, targets), 1, n_sym - 1))
    edges = [0, *cuts.tolist(), n_sym]
    return [(int(a), int(b)) for a, b in itertools.pairwise(edges) if b > a]


@dataclass(frozen=True)
class BoundFrame:
    """What the kernel engine binds at plan time: the symbol-block offsets of the sorted frame,
    zero-copy views of its input columns, and where each block's kept rows go.

    Why the arrays are bound and not read from the expression's input: the kernel plan drops
    the warm-up rows *before* its group expressions run (so the features are written once,
    straight into the kept rows, not computed full length and copied by a filter: measured
    0.9 s of CPU on 2.5 M bars, more than the kernels), while every indicator needs each
    symbol's full history from its first bar. The bound frame is that history; it is also
    contiguous, where Polars hands ``map_batches`` its input in morsels (26 chunks for
    2.5 M bars) that would have to be copied again for every group.
    """

    starts: np.ndarray  # int64[S + 1], block offsets in the sorted frame
    out_starts: np.ndarray  # int64[S + 1], block offsets among the kept rows
    skip: int  # warm-up bars dropped at the start of each block
    arrays: tuple[np.ndarray, ...]  # high, low, close, volume: float64[N]

    @classmethod
    def of(cls, sorted_bars: pl.DataFrame, starts: np.ndarray, skip: int) -> BoundFrame:
        kept = np.maximum(np.diff(starts) - skip, 0)
        out_starts = np.zeros_like(starts)
        np.cumsum(kept, out=out_starts[1:])
        arrays = tuple(np.ascontiguousarray(sorted_bars[c].to_numpy()) for c in _INPUTS)
        return cls(starts=starts, out_starts=out_starts, skip=skip, arrays=arrays)

    @property
    def kept_rows(self) -> int:
        return int(self.out_starts[-1])


_POOLS: dict[int, ThreadPoolExecutor] = {}


def _kernel_pool(threads: int) -> ThreadPoolExecutor:
    """A thread pool kept for the process: one evaluation runs 23 groups, and starting fresh
    threads for each cost 40 ms per evaluation on 50 k bars (more than the kernels)."""
    pool = _POOLS.get(threads)
    if pool is None:
        pool = _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="qcli-kernel")
    return pool


def _forget_pools() -> None:
    # a forked child inherits the pools' bookkeeping but not their threads
    _POOLS.clear()


os.register_at_fork(after_in_child=_forget_pools)


def run_group(group: KernelGroup, frame: BoundFrame, inputs: pl.Series) -> pl.Series:
    """Run one kernel group over every symbol block of the bound frame, each from its first
    bar, writing the kept rows (bars from ``frame.skip`` on); returns the member's Float64
    column, or a struct with one field per member for a multi-output group. ``inputs`` is the
    expression's input, the kept rows' bar positions, checked against the bound frame (the
    prices are read from the frame, which holds the warm-up bars too). Called once per group
    and evaluation."""
    n = len(inputs)
    if frame.kept_rows != n:
        raise InputError(
            f"kernel plan bound to {frame.kept_rows} rows evaluated on {n}",
            hint="build the plan with lazy_features() on the frame it evaluates",
        )
    out = np.empty((group.rows, n), dtype=np.float64)
    args = (group.code, *group.params, frame.starts, frame.out_starts, frame.skip)
    args = (*args, *frame.arrays, out)
    ranges = thread_ranges(frame.starts, n_threads())
    if len(ranges) == 1:
        _nb.group_blocks(*args, *ranges[0])
    else:
        pool = _kernel_pool(len(ranges))
        for fut in [pool.submit(_nb.group_blocks, *args, lo, hi) for lo, hi in ranges]:
            fut.result()
    # zero-copy views of the kernel's rows
    if len(group.members) == 1:
        ((name, row),) = group.members.items()
        return pl.Series(name, out[row])
    return pl.DataFrame({name: out[row] for name, row in group.members.items()}).to_struct(
        group.column
    )


def _kernel_expr(group: KernelGroup, frame: BoundFrame) -> pl.Expr:
    """The group's expression: a struct of its members, or the one member's column."""
    if len(group.members) == 1:
        dtype: pl.DataType = pl.Float64()
        alias = next(iter(group.members))
    else:
        dtype = pl.Struct(dict.fromkeys(group.members, pl.Float64))
        alias = group.column
    # run_group is looked up when the plan runs (a module global), so a test can count calls
    return (
        pl.col(_POS)
        .map_batches(lambda s: run_group(group, frame, s), return_dtype=dtype)
        .alias(alias)
    )


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
        from quantcli.features.compute import block_starts

        starts, _ = block_starts(sorted_bars)
    position = np.arange(int(starts[-1]), dtype=np.int64) - np.repeat(starts[:-1], np.diff(starts))
    groups = kernel_groups(fs)
    frame = BoundFrame.of(sorted_bars, starts, fs.warmup)
    # the warm-up filter comes first: each group writes the kept rows once (see BoundFrame)
    lf = (
        lf.with_columns(pl.lit(pl.Series(_POS, position)))
        .filter(warmup_dropped)
        .with_columns(_kernel_expr(g, frame) for g in groups)
        .with_columns(
            pl.col(g.column).struct.field(name).alias(name)
            for g in groups
            if len(g.members) > 1
            for name in g.members
        )
    )
    return lf.select("symbol", "ts", *fs.feature_names)
