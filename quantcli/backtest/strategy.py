"""From model predictions to strategy returns, gross and net of costs: the backtest's trading rule.

**One horizon.** The label's horizon ``h`` (bars, from ``label_end``) is the holding period:
the strategy rebalances every ``h``-th bar (bars ``0, h, 2h, ...`` of the frame's timeline) to
the target weights of :mod:`quantcli.backtest.portfolio` and holds its *shares* in between, so a
position earns exactly the ``h``-bar forward return the model was trained on (the weights drift
with prices between rebalances). With a per-bar return column (``fwd_return_1d``) the returns
are per bar; without it each period is ``h`` bars and earns the label itself.

**Costs** (:class:`~quantcli.backtest.costs.CostModel`): per bar ``t``::

    net_t = gross_t - sum_i c_ti |w_ti - w_pre_ti| - borrow * sum_i max(-w_ti, 0)

``gross_t = sum_i w_ti r_ti`` on the held weights ``w``, ``w_pre`` the drifted weights before
trading, ``c`` the per-unit cost. This is a cash-and-shares ledger: equity after the bar is
equity before it times ``1 + net_t`` (:func:`quantcli.backtest._pnl_nb.simulate`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from quantcli.backtest._pnl_nb import simulate
from quantcli.backtest.costs import BPS, CostModel
from quantcli.backtest.portfolio import Construction


def period_starts(ts: np.ndarray) -> np.ndarray:
    """The first row of each distinct timestamp of sorted ``ts``, plus ``len(ts)`` at the end."""
    ts = np.asarray(ts)
    if ts.size == 0:
        return np.zeros(1, dtype=np.int64)
    change = np.flatnonzero(ts[1:] != ts[:-1]) + 1
    return np.concatenate([[0], change, [ts.size]]).astype(np.int64)


@dataclass(frozen=True)
class Panel:
    """Where each row of a ``(ts, symbol)``-sorted frame sits in a ``(bars, symbols)`` grid."""

    bar: np.ndarray
    symbol: np.ndarray
    n_bars: int
    n_symbols: int

    @classmethod
    def from_keys(cls, ts: np.ndarray, symbol_codes: np.ndarray) -> Panel:
        """``ts`` sorted; ``symbol_codes`` integer codes ``0 .. n_symbols - 1``."""
        starts = period_starts(ts)
        bar = np.repeat(np.arange(starts.size - 1), np.diff(starts))
        codes = np.asarray(symbol_codes, dtype=np.int64)
        return cls(bar, codes, int(starts.size - 1), int(codes.max()) + 1 if codes.size else 0)

    def dense(self, values: np.ndarray, fill: float = np.nan) -> np.ndarray:
        """``values`` (one per row) on the grid; cells without a row hold ``fill``."""
        out = np.full((self.n_bars, self.n_symbols), fill)
        out[self.bar, self.symbol] = values
        return out


@dataclass
class PathReturns:
    """Per-period series of every path, ``(n_paths, n_periods)``, fractions of capital."""

    gross: np.ndarray
    net: np.ndarray
    turnover: np.ndarray
    trading_cost: np.ndarray
    borrow_cost: np.ndarray


@dataclass(frozen=True)
class Strategy:
    """The trading rule: construction, costs, holding period and annualization.

    ``horizon`` is the holding period in periods of the return panel (bars with per-bar
    returns, 1 when each period already spans the label horizon); ``periods_per_year`` is
    per period of that panel.
    """

    construction: Construction
    costs: CostModel
    horizon: int
    periods_per_year: float

    def rebalance(self, n_periods: int) -> np.ndarray:
        return np.arange(n_periods) % self.horizon == 0

    def run(
        self,
        predictions: np.ndarray,
        returns: np.ndarray,
        unit_cost: np.ndarray,
    ) -> tuple[np.ndarray, ...]:
        """``(gross, net, turnover, trading_cost, borrow_cost)`` of one path.

        ``predictions`` and ``returns`` are ``(n_periods, n_symbols)`` panels (NaN = no row;
        NaN returns earn 0); ``unit_cost`` the per-unit trading cost of each cell.
        """
        rebalance = self.rebalance(returns.shape[0])
        r = np.nan_to_num(returns, nan=0.0)
        targets = self.construction.weights(predictions, r, rebalance, self.periods_per_year)
        borrow = self.costs.borrow_per_period(self.periods_per_year)
        return simulate(targets, rebalance, r, unit_cost, borrow)

    def describe(self) -> str:
        return (
            f"{self.construction.describe()}; rebalanced every {self.horizon} period(s) "
            f"(the label horizon), shares held in between; net of "
            f"{self.costs.fixed_bps:g} bps commission + half-spread, "
            f"{_slippage_text(self.costs)} slippage per unit of turnover and "
            f"{self.costs.borrow_bps_per_year:g} bps/year borrow on shorts"
        )


def _slippage_text(costs: CostModel) -> str:
    if costs.slippage == "fixed":
        return f"{costs.slippage_bps:g} bps"
    what = "daily volatility" if costs.slippage == "volatility" else "ATR/close"
    return f"{costs.slippage_mult:g} x {what}"


def break_even_bps(gross: np.ndarray, borrow: np.ndarray, turnover: np.ndarray) -> float:
    """The per-unit trading cost (bps) at which the mean net return, hence the net Sharpe
    ratio, is zero: ``(mean gross - mean borrow) / mean turnover``; to first order (the
    turnover is the one observed at the configured costs). ``nan`` without turnover."""
    tov = float(np.mean(turnover)) if turnover.size else 0.0
    if not tov > 0.0:
        return math.nan
    return (float(np.mean(gross)) - float(np.mean(borrow))) / tov / BPS
