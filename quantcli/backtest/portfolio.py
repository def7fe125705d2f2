"""Portfolio construction: from model predictions to target weights (the ``[strategy]`` choice).

Weights are fractions of capital, one per symbol with a prediction at a rebalance bar (a symbol
without a row that bar gets 0). Three constructions:

* ``sign`` -- ``sign(prediction) / n_t``, ``n_t`` the symbols with a prediction at bar ``t``:
  equal weight, long the positive and short the negative predictions, gross exposure 1.
* ``rank`` -- cross-sectional rank long/short, dollar-neutral at each bar: with ``q`` the
  average ranks (ties share theirs) of the predictions, ``w = (q - mean q) / sum |q - mean q|``,
  so ``sum w = 0`` and ``sum |w| = 1`` (0.5 long, 0.5 short); all weights 0 when every
  prediction ties.
* ``vol_target`` -- the ``sign`` portfolio scaled by ``k_t = target_vol / sigma_t``, capped so
  that ``sum |w| <= max_leverage``. ``sigma_t`` is the annualized sample std (ddof = 1) of the
  ``sign`` portfolio's bar returns over the ``vol_window`` bars *before* ``t`` (returns earned
  up to bar ``t``, no look-ahead); flat (all weights 0) until ``vol_window`` bars are known.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from quantcli.backtest._pnl_nb import rank_weights_sorted
from quantcli.backtest.costs import rolling_std
from quantcli.errors import InputError

CONSTRUCTIONS = ("sign", "rank", "vol_target")


@dataclass(frozen=True)
class Construction:
    """The ``[strategy]`` section: how predictions become target weights."""

    construction: str = "sign"
    target_vol: float = 0.10
    vol_window: int = 60
    max_leverage: float = 2.0

    def __post_init__(self) -> None:
        if self.construction not in CONSTRUCTIONS:
            raise InputError(
                f"`construction` must be one of {', '.join(CONSTRUCTIONS)}, "
                f"got `construction={self.construction!r}`."
            )
        if not (math.isfinite(self.target_vol) and self.target_vol > 0):
            raise InputError(f"`target_vol` must be > 0 (annualized), got `{self.target_vol}`.")
        if int(self.vol_window) < 2:
            raise InputError(f"`vol_window` must be at least 2 bars, got `{self.vol_window}`.")
        if not (math.isfinite(self.max_leverage) and self.max_leverage > 0):
            raise InputError(f"`max_leverage` must be > 0, got `{self.max_leverage}`.")

    @classmethod
    def from_config(cls, strategy: dict[str, Any] | None) -> Construction:
        return cls(**(strategy or {}))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        if self.construction == "sign":
            return "sign(prediction), equal weight 1/n across the symbols at each rebalance"
        if self.construction == "rank":
            return "cross-sectional rank long/short, dollar-neutral, gross exposure 1"
        return (
            f"sign(prediction) 1/n scaled to {self.target_vol:.0%} annualized volatility "
            f"({self.vol_window}-bar estimate, gross exposure <= {self.max_leverage:g})"
        )

    def weights(
        self,
        predictions: np.ndarray,
        bar_returns: np.ndarray,
        rebalance: np.ndarray,
        periods_per_year: float,
    ) -> np.ndarray:
        """Target weights ``(n_bars, n_symbols)`` from predictions (NaN = no row).

        ``bar_returns[t]`` is what a position held from bar ``t`` earns (used by
        ``vol_target`` only through earlier bars). Rows of bars that do not rebalance are 0.
        """
        # only the rebalance bars trade: weights of the other bars are never read
        rows = np.flatnonzero(rebalance)
        p = np.asarray(predictions, dtype=np.float64)[rows]
        w = np.zeros(np.shape(predictions))
        w[rows] = rank_weights(p) if self.construction == "rank" else sign_weights(p)
        if self.construction == "vol_target":
            w = w * self._scale(w, bar_returns, rebalance, periods_per_year)[:, None]
        return w

    def _scale(
        self,
        sign_w: np.ndarray,
        bar_returns: np.ndarray,
        rebalance: np.ndarray,
        periods_per_year: float,
    ) -> np.ndarray:
        # the sign portfolio's bar returns, holding each rebalance's weights until the next
        held_from = np.maximum.accumulate(np.where(rebalance, np.arange(rebalance.size), -1))
        held = np.where(held_from[:, None] >= 0, sign_w[np.maximum(held_from, 0)], 0.0)
        base = np.sum(held * np.nan_to_num(bar_returns), axis=1)
        # sigma_t from base[t - window .. t - 1]: the returns earned before trading at t
        sd = rolling_std(base[:, None], int(self.vol_window))[:, 0]
        sigma = np.concatenate([[np.nan], sd[:-1]]) * math.sqrt(periods_per_year)
        gross = np.abs(sign_w).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            k = np.where(sigma > 0, self.target_vol / sigma, np.nan)
            cap = np.where(gross > 0, self.max_leverage / gross, 0.0)
        return np.where(np.isfinite(k), np.minimum(k, cap), 0.0)


def sign_weights(predictions: np.ndarray) -> np.ndarray:
    """``sign(prediction) / n_t`` per bar (row); NaN predictions get 0 and do not count."""
    p = np.asarray(predictions, dtype=np.float64)
    has = np.isfinite(p)
    n = has.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(has, np.sign(np.where(has, p, 0.0)) / n, 0.0)
    return w


def rank_weights(predictions: np.ndarray) -> np.ndarray:
    """Dollar-neutral rank weights per bar: ``(q - mean q) / sum |q - mean q|``, ``q`` the
    average ranks of the finite predictions; 0 for NaN and for a bar whose predictions all tie."""
    p = np.ascontiguousarray(predictions, dtype=np.float64)
    # NumPy sorts NaN last; ties end up adjacent whatever the sort's stability
    return rank_weights_sorted(p, np.argsort(p, axis=1))
