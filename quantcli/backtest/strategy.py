"""From model predictions to strategy returns: the one trading rule the backtest uses.

The rule, kept simple so the numbers are easy to check:

* at each timestamp ``t`` the strategy holds ``sign(prediction)`` of every symbol that has a
  prediction at ``t`` (long if positive, short if negative, flat if exactly zero),
* in equal weight: each position is ``1 / n_t`` of capital, ``n_t`` the number of symbols with
  a row at ``t`` (gross exposure 1, no leverage, no transaction costs),
* held for one period, earning the row's period return ``r``: by default the next bar's return
  ``fwd_return_1d = close[t+1] / close[t] - 1``, whatever horizon the model was trained on.

So the strategy return of period ``t`` is ``mean over symbols of sign(pred) * r``.
"""

from __future__ import annotations

import numpy as np

RULE = (
    "position = sign(prediction), equal weight 1/n across the symbols at each timestamp, "
    "held one period, earning the period's forward return (no costs, gross exposure 1)"
)


def period_starts(ts: np.ndarray) -> np.ndarray:
    """The first row of each distinct timestamp of sorted ``ts``, plus ``len(ts)`` at the end."""
    ts = np.asarray(ts)
    if ts.size == 0:
        return np.zeros(1, dtype=np.int64)
    change = np.flatnonzero(ts[1:] != ts[:-1]) + 1
    return np.concatenate([[0], change, [ts.size]]).astype(np.int64)


def strategy_returns(ts: np.ndarray, predictions: np.ndarray, returns: np.ndarray) -> np.ndarray:
    """Per-period strategy returns (fractions), one per distinct timestamp of sorted ``ts``.

    Parameters
    ----------
    ts
        Row timestamps, sorted (non-decreasing); rows sharing a timestamp are one period.
    predictions
        The model's prediction per row; only its sign is traded.
    returns
        The return each row's position earns over the holding period, a fraction.
    """
    pred = np.asarray(predictions, dtype=np.float64)
    ret = np.asarray(returns, dtype=np.float64)
    if pred.shape != ret.shape or pred.shape[0] != np.asarray(ts).shape[0]:
        raise ValueError(
            f"`ts`, `predictions` and `returns` must have the same length, got "
            f"{np.asarray(ts).shape[0]}, {pred.shape[0]}, {ret.shape[0]}"
        )
    starts = period_starts(ts)
    pnl = np.sign(pred) * ret
    sums = np.add.reduceat(pnl, starts[:-1]) if pnl.size else np.zeros(0)
    return sums / np.diff(starts)
