"""The ``"polars"`` engine's building blocks: a staged graph of named Polars columns.

Every kind's Polars twin (``Kind.polars``) adds its intermediates and outputs to one
:class:`PolarsGraph`; :func:`quantcli.features.expressions.polars_stages` turns the graph into
``with_columns`` stages. Native expressions only (no Python function), so the plan is the
readable, reviewable definition of every feature. Conventions (TA-Lib's):

* Rolling windows: SMA = ``rolling_mean(n)``, STDDEV = ``rolling_var(n, ddof=0)`` clipped at 0,
  then ``sqrt`` (running sums: evaluated per symbol); ``rolling_max/min``, ``shift``, ``diff``
  (exact) run on the whole sorted frame. Every column is masked with ``pl.when(__bar >= first)``
  before its first defined bar.
* Recursive indicators are ``ewm_mean(alpha, adjust=False)`` per symbol on a series null before
  the seed bar whose seed-bar value is TA-Lib's seed (an SMA).
* A zero denominator gives 0, as TA-Lib does (:func:`safe_div`).

Kind.polars contract::

    polars(g: PolarsGraph, params: dict, src: dict[str, str]) -> dict[str, tuple[pl.Expr, int]]

``src`` maps each of ``kind.inputs`` to a column of the graph (the bar column itself, or the
declared feature a transform reads); the result maps each of ``kind.outputs`` to its expression
and the per-symbol bar from which it is defined.
"""

from __future__ import annotations

import polars as pl

from quantcli.features.kinds._base import BAR_INPUTS

_POS = "__bar"  # per-symbol bar position, 0 at each symbol's first bar
_ZERO = 1e-8  # TA-Lib's TA_IS_ZERO threshold (RSI, DI, DX denominators)
POS = _POS
ZERO = _ZERO
OPEN, C, H, L, V = (pl.col(c) for c in ("open", "close", "high", "low", "volume"))
_SYMBOL = "__symbol"  # run id of the symbol: 0, 1, ... in row order (the frame is sorted)


def per_symbol(expr: pl.Expr) -> pl.Expr:
    """``expr`` evaluated on each symbol's bars on its own: ``.over`` the symbol.

    Keyed by the symbol's run id with ``mapping_strategy="explode"``: on bars sorted by
    ``(symbol, ts)`` that is the same result as ``.over("symbol")`` (groups come in row order),
    without hashing every bar's symbol string or scattering the rows back.
    """
    return expr.over(_SYMBOL, mapping_strategy="explode")


class PolarsGraph:
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
        self.stage: dict[str, int] = {c: -1 for c in ("symbol", "ts", *BAR_INPUTS)}
        self.first: dict[str, int] = dict.fromkeys(BAR_INPUTS, 0)
        self.stages: list[list[pl.Expr]] = []
        self.put(_SYMBOL, pl.col("symbol").rle_id(), 0, masked=False)
        self.put(_POS, per_symbol(pl.int_range(pl.len())), 0, masked=False)

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
            expr = per_symbol(expr)
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
        self.put(name, per_symbol(ewm), seed_bar, masked=False)
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
            self.put(name, per_symbol(pl.col("__obv_in").cum_sum()), 0, masked=False)
        return name


def safe_div(num: pl.Expr, den: pl.Expr) -> pl.Expr:
    """``num / den``, 0 where ``den == 0`` (TA-Lib's convention for a zero denominator)."""
    return pl.when(den == 0.0).then(0.0).otherwise(num / den)


def rocp(k: int) -> pl.Expr:
    prev = C.shift(k)
    return safe_div(C - prev, prev)
