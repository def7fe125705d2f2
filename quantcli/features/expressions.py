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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from quantcli.errors import InputError
from quantcli.features import _nb
from quantcli.features.definitions import FeatureSet

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
# "polars" engine
# --------------------------------------------------------------------------------------------
C, H, L, V = pl.col("close"), pl.col("high"), pl.col("low"), pl.col("volume")
_SYMBOL = "__symbol"  # run id of the symbol: 0, 1, ... in row order (the frame is sorted)


def _per_symbol(expr: pl.Expr) -> pl.Expr:
    """``expr`` evaluated on each symbol's bars on its own: ``.over`` the symbol.

    Keyed by the symbol's run id with ``mapping_strategy="explode"``: on bars sorted by
    ``(symbol, ts)`` that is the same result as ``.over("symbol")`` (groups come in row order),
    without hashing 2.5 M strings or scattering the rows back (measured: 4x less CPU for an
    ``ewm_mean`` on 1 M bars).
    """
    return expr.over(_SYMBOL, mapping_strategy="explode")


class _Graph:
    """The ``"polars"`` engine's plan: named columns, each placed in the first
    ``with_columns`` stage after the columns it reads (found with ``Expr.meta.root_names``).

    Why named intermediates instead of one nested expression per feature: an intermediate such
    as a Wilder sum is read by several expressions, and inlining it repeats its subtree in each
    (Polars' CSE does not see through ``.over``): the nested ADX expression grew to 143 k
    characters and took 12 s on 200 k bars. Intermediates are ``__``-prefixed and dropped.

    Every column records ``first``, the per-symbol bar from which it is defined; before it the
    column is null (masked with the bar position ``__bar``).
    """

    def __init__(self) -> None:
        self.stage: dict[str, int] = {c: -1 for c in ("symbol", "ts", *_INPUTS)}
        self.first: dict[str, int] = dict.fromkeys(_INPUTS, 0)
        self.stages: list[list[pl.Expr]] = []
        self.put(_SYMBOL, pl.col("symbol").rle_id(), 0, masked=False)
        self.put(_POS, _per_symbol(pl.int_range(pl.len())), 0, masked=False)

    def put(self, name: str, expr: pl.Expr, first: int, *, masked: bool = True) -> pl.Expr:
        """Add column ``name`` (once; a second ``put`` of the same name reuses it), null before
        bar ``first`` of each symbol; returns ``pl.col(name)``."""
        if name not in self.stage:
            if masked:
                expr = pl.when(pl.col(_POS) >= first).then(expr)
            stage = 1 + max((self.stage[c] for c in expr.meta.root_names()), default=-1)
            while len(self.stages) <= stage:
                self.stages.append([])
            self.stages[stage].append(expr.alias(name))
            self.stage[name] = stage
            self.first[name] = first
        return pl.col(name)

    def rolling(self, op: str, src: str, n: int) -> str:
        """``rolling_<op>(n)`` of column ``src`` (mean, sum, max, min; var is population), null
        where the window would reach into the previous symbol's bars.

        ``max``/``min`` are exact, so they run on the whole sorted frame and are only masked.
        ``mean``/``sum``/``var`` keep running sums whose rounding would carry the previous
        symbol's values into the next symbol's last bits, so they run per symbol: a symbol's
        values do not depend, even in the last bit, on the other symbols in the frame.
        """
        name = f"__{op}{n}_{src.strip('_')}"
        x = pl.col(src)
        expr = x.rolling_var(n, ddof=0) if op == "var" else getattr(x, f"rolling_{op}")(n)
        if op in ("mean", "sum", "var"):
            expr = _per_symbol(expr)
        self.put(name, expr, self.first[src] + n - 1)
        return name

    def stddev(self, src: str, n: int) -> str:
        """TA_STDDEV(n, 1): the population standard deviation (a variance below 0 from
        rounding is 0)."""
        var = self.rolling("var", src, n)
        name = f"__std{n}_{src.strip('_')}"
        self.put(name, pl.col(var).clip(lower_bound=0.0).sqrt(), self.first[var])
        return name

    def recursion(
        self, name: str, src: str, seed: str, seed_bar: int, alpha: float, *, scale: float = 1.0
    ) -> str:
        """``y = (1 - alpha) y[t-1] + alpha * scale * src`` per symbol, ``y = seed`` at bar
        ``seed_bar``: ``ewm_mean(adjust=False)`` of a series null before the seed bar.

        A null ``src`` after the seed (ADX's undefined DX) leaves ``y`` unchanged.
        """
        x = pl.col(src) * scale if scale != 1.0 else pl.col(src)
        seeded = pl.when(pl.col(_POS) == seed_bar).then(pl.col(seed)).otherwise(x)
        seeded_in = self.put(f"{name}_in", seeded, seed_bar)
        ewm = seeded_in.ewm_mean(alpha=alpha, adjust=False, ignore_nulls=True).forward_fill()
        self.put(name, _per_symbol(ewm), seed_bar, masked=False)
        return name

    def ema(self, src: str, n: int, *, seed_bar: int | None = None) -> str:
        """TA_EMA(n), alpha 2/(n+1), seeded with the SMA of ``n`` values ending at ``seed_bar``
        (default: the first full window; MACD ends its fast seed on the slow one's bar)."""
        sma = self.rolling("mean", src, n)
        bar = self.first[sma] if seed_bar is None else seed_bar
        tag = "" if seed_bar is None else f"_from{bar}"
        return self.recursion(f"__ema{n}_{src.strip('_')}{tag}", src, sma, bar, 2.0 / (n + 1))

    def wilder(self, src: str, n: int) -> str:
        """Wilder's average (RSI, ATR): seeded with the mean of the first ``n`` values, alpha
        1/n."""
        sma = self.rolling("mean", src, n)
        return self.recursion(f"__wilder{n}_{src.strip('_')}", src, sma, self.first[sma], 1 / n)

    def wilder_sum(self, src: str, n: int) -> str:
        """ADX's Wilder sum ``S = S[t-1] - S[t-1] / n + x``, seeded with the sum of the first
        ``n - 1`` values: an alpha-1/n EMA of ``n x``."""
        seed = self.rolling("sum", src, n - 1)
        name = f"__wsum{n}_{src.strip('_')}"
        return self.recursion(name, src, seed, self.first[seed], 1 / n, scale=float(n))

    def input(self, name: str) -> str:
        """A shared derived input of the price columns (close change, true range, OBV)."""
        if name == "__change":  # close - previous close, from bar 1
            self.put(name, C.diff(), 1)
        elif name == "__gain":
            self.put(name, pl.col(self.input("__change")).clip(lower_bound=0.0), 1)
        elif name == "__loss":
            self.put(name, (-pl.col(self.input("__change"))).clip(lower_bound=0.0), 1)
        elif name == "__tr":  # true range, from bar 1 as in TA-Lib
            prev = C.shift(1)
            self.put(name, pl.max_horizontal(H - L, (H - prev).abs(), (L - prev).abs()), 1)
        elif name == "__obv":  # OBV[0] = volume[0]; +volume on an up close, -volume on a down
            d = pl.col(self.input("__change"))
            signed = pl.when(pl.col(_POS) == 0).then(V).when(d > 0.0).then(V).when(d < 0.0).then(-V)
            self.put("__obv_in", signed.otherwise(0.0), 0)
            self.put(name, _per_symbol(pl.col("__obv_in").cum_sum()), 0, masked=False)
        return name


def _safe_div(num: pl.Expr, den: pl.Expr) -> pl.Expr:
    """``num / den``, 0 where ``den == 0`` (TA-Lib's convention for a zero denominator)."""
    return pl.when(den == 0.0).then(0.0).otherwise(num / den)


def _rocp(k: int) -> pl.Expr:
    prev = C.shift(k)
    return _safe_div(C - prev, prev)


def _nma(g: _Graph, p: dict[str, Any]) -> dict[str, tuple[pl.Expr, int]]:
    n = int(p["window"])
    sma = g.rolling("mean", "close", n)
    return {"nma": (pl.when(pl.col(sma) == 0.0).then(0.0).otherwise(C / pl.col(sma) - 1.0), n - 1)}


def _bbands(g: _Graph, p: dict[str, Any]) -> dict[str, tuple[pl.Expr, int]]:
    n = int(p["window"])
    middle = pl.col(g.rolling("mean", "close", n))
    dev = pl.col(g.stddev("close", n)) * float(p["nbdev"])
    upper, lower = middle + dev, middle - dev
    width = upper - lower
    return {
        "bb_pct": (_safe_div(C - lower, width), n - 1),
        "bb_width": (_safe_div(width, middle), n - 1),
    }


def _volume_z(g: _Graph, p: dict[str, Any]) -> dict[str, tuple[pl.Expr, int]]:
    n = int(p["window"])
    sma, std = g.rolling("mean", "volume", n), g.stddev("volume", n)
    return {"volume_z": (_safe_div(V - pl.col(sma), pl.col(std)), n - 1)}


def _rsi(g: _Graph, p: dict[str, Any]) -> dict[str, tuple[pl.Expr, int]]:
    n = int(p["window"])
    gain = pl.col(g.wilder(g.input("__gain"), n))
    loss = pl.col(g.wilder(g.input("__loss"), n))
    total = gain + loss
    # 0 when no change was ever seen (gain + loss == 0), as TA-Lib
    return {"rsi": (pl.when(total > 0.0).then(100.0 * (gain / total)).otherwise(0.0), n)}


def _roc(g: _Graph, p: dict[str, Any]) -> dict[str, tuple[pl.Expr, int]]:
    k = int(p["window"])
    prev = C.shift(k)
    return {"roc": (pl.when(prev == 0.0).then(0.0).otherwise((C / prev - 1.0) * 100.0), k)}


def _macd(g: _Graph, p: dict[str, Any]) -> dict[str, tuple[pl.Expr, int]]:
    fast, slow = sorted((int(p["fast"]), int(p["slow"])))
    signal = int(p["signal"])
    seed_bar = slow - 1
    start = seed_bar + signal - 1
    fast_ema = g.ema("close", fast, seed_bar=seed_bar)
    slow_ema = g.ema("close", slow)
    line = g.put(f"__macd{fast}_{slow}", pl.col(fast_ema) - pl.col(slow_ema), seed_bar)
    sig = pl.col(g.ema(f"__macd{fast}_{slow}", signal))
    return {"macd": (line, start), "macd_signal": (sig, start), "macd_hist": (line - sig, start)}


def _directional(g: _Graph, p: dict[str, Any]) -> dict[str, tuple[pl.Expr, int]]:
    """TA-Lib's directional movement system over ``n`` bars: ADX, +DI, -DI."""
    n = int(p["window"])
    up = g.put("__up", H.diff(), 1)
    down = g.put("__down", -L.diff(), 1)
    # +DM and -DM as TA-Lib assigns them: at most one is non-zero
    g.put("__minus_dm", pl.when((down > 0.0) & (up < down)).then(down).otherwise(0.0), 1)
    g.put("__plus_dm", pl.when((up > 0.0) & (up > down)).then(up).otherwise(0.0), 1)
    tr = pl.col(g.wilder_sum(g.input("__tr"), n))
    plus_sum = pl.col(g.wilder_sum("__plus_dm", n))
    minus_sum = pl.col(g.wilder_sum("__minus_dm", n))
    tr_zero = tr.abs() < _ZERO
    plus = g.put(f"__plus_di{n}", pl.when(tr_zero).then(0.0).otherwise(100.0 * (plus_sum / tr)), n)
    minus = g.put(
        f"__minus_di{n}", pl.when(tr_zero).then(0.0).otherwise(100.0 * (minus_sum / tr)), n
    )
    total = minus + plus
    # DX is undefined (TA-Lib skips the bar) when TR or +DI + -DI is within 1e-8 of zero
    undefined = tr_zero | (total.abs() < _ZERO)
    dx = g.put(f"__dx{n}", pl.when(~undefined).then(100.0 * ((minus - plus).abs() / total)), n)
    # ADX starts at bar 2n-1 with the mean of the first n DX (an undefined DX counts 0), then
    # Wilder steps that skip an undefined DX (the average carries over)
    g.put(f"__dx{n}_or_0", dx.fill_null(0.0), n)
    seed = g.rolling("mean", f"__dx{n}_or_0", n)
    adx = g.recursion(f"__adx{n}", f"__dx{n}", seed, 2 * n - 1, 1 / n)
    return {"adx": (pl.col(adx), 2 * n - 1), "plus_di": (plus, n), "minus_di": (minus, n)}


def _atr(g: _Graph, p: dict[str, Any]) -> dict[str, tuple[pl.Expr, int]]:
    n = int(p["window"])
    return {"atr": (pl.col(g.wilder(g.input("__tr"), n)), n)}


def _volatility(g: _Graph, p: dict[str, Any]) -> dict[str, tuple[pl.Expr, int]]:
    n = int(p["window"])
    g.put("__rocp1", _rocp(1), 1)
    return {"volatility": (pl.col(g.stddev("__rocp1", n)), n)}


def _stoch(g: _Graph, p: dict[str, Any]) -> dict[str, tuple[pl.Expr, int]]:
    fastk, slowk, slowd = int(p["fastk"]), int(p["slowk"]), int(p["slowd"])
    hh = pl.col(g.rolling("max", "high", fastk))
    ll = pl.col(g.rolling("min", "low", fastk))
    fast = f"__fastk{fastk}"
    g.put(fast, _safe_div(C - ll, hh - ll) * 100.0, fastk - 1)  # 0 when HH == LL
    k = g.rolling("mean", fast, slowk)
    d = g.rolling("mean", k, slowd)
    start = g.first[d]  # slow %K is reported from %D's first bar on, as TA-Lib does
    return {"stoch_k": (pl.col(k), start), "stoch_d": (pl.col(d), start)}


def _obv(g: _Graph, p: dict[str, Any]) -> dict[str, tuple[pl.Expr, int]]:
    return {"obv": (pl.col(g.input("__obv")), 0)}


def _obv_ema(g: _Graph, p: dict[str, Any]) -> dict[str, tuple[pl.Expr, int]]:
    n = int(p["window"])
    return {"obv_ema": (pl.col(g.ema(g.input("__obv"), n)), n - 1)}


def _return(g: _Graph, p: dict[str, Any]) -> dict[str, tuple[pl.Expr, int]]:
    k = int(p["window"])
    return {"return": (_rocp(k), k)}


# kind -> the builder of its TA-Lib call's outputs (kinds of one call share a builder)
_POLARS_BUILDERS: dict[str, Callable[[_Graph, dict[str, Any]], dict[str, tuple[pl.Expr, int]]]] = {
    "nma": _nma,
    "bb_pct": _bbands,
    "bb_width": _bbands,
    "volume_z": _volume_z,
    "rsi": _rsi,
    "roc": _roc,
    "macd": _macd,
    "macd_signal": _macd,
    "macd_hist": _macd,
    "adx": _directional,
    "plus_di": _directional,
    "minus_di": _directional,
    "atr": _atr,
    "volatility": _volatility,
    "stoch_k": _stoch,
    "stoch_d": _stoch,
    "obv": _obv,
    "obv_ema": _obv_ema,
    "return": _return,
}


def polars_stages(fs: FeatureSet) -> list[list[pl.Expr]]:
    """The ``"polars"`` engine's ``with_columns`` stages for ``fs``: intermediates
    (``__``-prefixed) and one expression per declared feature, aliased by its name, each in the
    first stage after the columns it reads. Native expressions only."""
    g = _Graph()
    for spec in fs.features:
        expr, first = _POLARS_BUILDERS[spec.kind](g, spec.params)[spec.kind]
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
