"""Trading costs of the backtest: commission, half-spread, slippage and borrow.

Every trade of ``|dw|`` (a change of a position's weight, a fraction of capital) pays
``c * |dw|`` of capital, with the per-unit cost ``c`` (a fraction, ``1 bp = 1e-4``)::

    c = commission_bps + half_spread_bps + slippage          (all in basis points)

``slippage`` is ``slippage_bps`` (``slippage = "fixed"``), or ``slippage_mult`` times the
symbol's daily volatility (``"volatility"``: the sample std, ddof = 1, of its last
``slippage_window`` bar returns, known at the trade) or its ATR over close (``"atr"``:
Wilder-smoothed true range, ``alpha = 1 / slippage_window``, over the bar's close). Where the
estimate is not available yet (the first bars of a symbol) the fixed ``slippage_bps`` applies.

A short position pays ``borrow_bps_per_year / periods_per_year`` of its value per bar.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from quantcli.errors import InputError

SLIPPAGE_MODELS = ("fixed", "volatility", "atr")
BPS = 1e-4


@dataclass(frozen=True)
class CostModel:
    """The ``[costs]`` section as an object; all values in basis points (``1 bp = 0.01 %``).

    Parameters
    ----------
    commission_bps, half_spread_bps
        Paid on every unit of turnover (one way).
    slippage, slippage_bps, slippage_mult, slippage_window
        ``"fixed"`` pays ``slippage_bps``; ``"volatility"`` / ``"atr"`` pay ``slippage_mult``
        times the daily volatility / ATR-over-close (estimated over ``slippage_window`` bars).
    borrow_bps_per_year
        Stock-loan fee on the value of the short positions, per year.
    """

    commission_bps: float = 1.0
    half_spread_bps: float = 2.0
    slippage: str = "fixed"
    slippage_bps: float = 2.0
    slippage_mult: float = 0.05
    slippage_window: int = 14
    borrow_bps_per_year: float = 30.0

    def __post_init__(self) -> None:
        for name in ("commission_bps", "half_spread_bps", "slippage_bps", "borrow_bps_per_year"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise InputError(f"`{name}` must be a finite number >= 0, got `{name}={value}`.")
        if self.slippage not in SLIPPAGE_MODELS:
            raise InputError(
                f"`slippage` must be one of {', '.join(SLIPPAGE_MODELS)}, "
                f"got `slippage={self.slippage!r}`."
            )
        if not (math.isfinite(self.slippage_mult) and self.slippage_mult >= 0):
            raise InputError(f"`slippage_mult` must be >= 0, got `{self.slippage_mult}`.")
        if int(self.slippage_window) < 2:
            raise InputError(
                f"`slippage_window` must be at least 2 bars, got `{self.slippage_window}`."
            )

    @classmethod
    def from_config(cls, costs: dict[str, Any] | None) -> CostModel:
        """From a ``[costs]`` section (missing keys take the defaults)."""
        return cls(**(costs or {}))

    @classmethod
    def zero(cls) -> CostModel:
        """No costs at all: the gross backtest."""
        return cls(0.0, 0.0, "fixed", 0.0, 0.0, 14, 0.0)

    @property
    def fixed_bps(self) -> float:
        """Commission plus half-spread: the part of the per-unit cost that never varies."""
        return self.commission_bps + self.half_spread_bps

    def borrow_per_period(self, periods_per_year: float) -> float:
        """The borrow fee of one period per unit of short value, a fraction."""
        return self.borrow_bps_per_year * BPS / periods_per_year

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def unit_cost(
        self,
        bar_returns: np.ndarray,
        atr_over_close: np.ndarray | None = None,
    ) -> np.ndarray:
        """The per-unit cost ``c`` (a fraction) of trading each cell of a ``(bars, symbols)`` panel.

        ``bar_returns[t, i]`` is symbol ``i``'s return from bar ``t - 1`` to bar ``t`` (known at
        ``t``; NaN where unknown); ``atr_over_close`` is needed for ``slippage = "atr"``.
        """
        fixed = self.fixed_bps * BPS
        shape = bar_returns.shape
        if self.slippage == "fixed":
            return np.full(shape, fixed + self.slippage_bps * BPS)
        if self.slippage == "volatility":
            scale = rolling_std(bar_returns, int(self.slippage_window))
        else:
            if atr_over_close is None:
                raise InputError(
                    '[costs] slippage = "atr" needs high, low and close prices',
                    hint='use slippage = "volatility" or "fixed" for frames without OHLC columns',
                )
            scale = atr_over_close
        slip = np.where(np.isfinite(scale), self.slippage_mult * scale, self.slippage_bps * BPS)
        return fixed + slip


def rolling_std(values: np.ndarray, window: int) -> np.ndarray:
    """Per column, the sample std (ddof = 1) of the ``window`` rows ending at each row.

    NaN where fewer than ``window`` finite values are in the window (NaNs count as missing).
    """
    v = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(v)
    x = np.where(finite, v, 0.0)
    zero = np.zeros((1, *v.shape[1:]))
    s1 = np.concatenate([zero, np.cumsum(x, axis=0)])
    s2 = np.concatenate([zero, np.cumsum(x * x, axis=0)])
    n = np.concatenate([zero, np.cumsum(finite, axis=0)])
    out = np.full(v.shape, np.nan)
    if v.shape[0] < window:
        return out
    cnt = n[window:] - n[:-window]
    tot = s1[window:] - s1[:-window]
    sq = s2[window:] - s2[:-window]
    with np.errstate(invalid="ignore", divide="ignore"):
        var = (sq - tot * tot / cnt) / (cnt - 1)
    std = np.sqrt(np.maximum(var, 0.0))
    out[window - 1 :] = np.where(cnt == window, std, np.nan)
    return out


def atr_over_close(high: np.ndarray, low: np.ndarray, close: np.ndarray, window: int) -> np.ndarray:
    """Wilder's ATR over the close, per column of ``(bars, symbols)`` arrays (TA-Lib's ATR: the
    first value is the mean of the first ``window`` true ranges, then ``alpha = 1/window``);
    NaN before it. A missing bar (NaN) keeps the previous ATR."""
    prev = np.vstack([np.full((1, close.shape[1]), np.nan), close[:-1]])
    # a true range needs the previous close: none on a symbol's first bar (TA-Lib's convention)
    tr = np.maximum(high - low, np.maximum(np.abs(high - prev), np.abs(low - prev)))
    out = np.full(close.shape, np.nan)
    for j in range(close.shape[1]):
        col = tr[:, j]
        ok = np.flatnonzero(np.isfinite(col))
        if ok.size < window:
            continue
        first = ok[0]
        if not np.isfinite(col[first : first + window]).all():
            continue
        atr = float(col[first : first + window].mean())
        out[first + window - 1, j] = atr
        for t in range(first + window, col.size):
            if np.isfinite(col[t]):
                atr += (col[t] - atr) / window
            out[t, j] = atr
    return out / close
