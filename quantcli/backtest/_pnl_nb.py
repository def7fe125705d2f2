"""Numba kernel of the backtest's profit and loss (plain arrays in, plain arrays out).

Layout: ``(n_bars, n_symbols)`` panels in time order. Row ``t`` of ``returns`` is what a
position held from bar ``t`` to the next bar earns (a fraction; 0 where the symbol has no row).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def simulate(
    targets: np.ndarray,
    rebalance: np.ndarray,
    returns: np.ndarray,
    unit_cost: np.ndarray,
    borrow: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(gross, net, turnover, trading_cost, borrow_cost)`` per bar, fractions of capital.

    The portfolio is a cash-and-shares ledger written in weights. At a bar with
    ``rebalance[t]`` it trades from its drifted weights ``w_pre`` to ``targets[t]`` (fractions
    of the equity before costs); otherwise it holds its shares and its weights drift. Per bar::

        turnover = sum |w - w_pre|                  (0 between rebalances)
        trading  = sum unit_cost * |w - w_pre|
        borrow   = borrow * sum max(-w, 0)          (short value at the start of the bar)
        gross    = sum w * returns
        net      = gross - trading - borrow
        w_pre'   = w * (1 + returns) / (1 + net)    (the held shares' weights next bar)
    """
    n_bars, n_sym = returns.shape
    gross = np.zeros(n_bars)
    net = np.zeros(n_bars)
    turnover = np.zeros(n_bars)
    trading = np.zeros(n_bars)
    borrowed = np.zeros(n_bars)
    w = np.zeros(n_sym)
    for t in range(n_bars):
        if rebalance[t]:
            tov = 0.0
            tc = 0.0
            for i in range(n_sym):
                d = abs(targets[t, i] - w[i])
                tov += d
                tc += unit_cost[t, i] * d
                w[i] = targets[t, i]
            turnover[t] = tov
            trading[t] = tc
        g = 0.0
        short = 0.0
        for i in range(n_sym):
            g += w[i] * returns[t, i]
            if w[i] < 0.0:
                short -= w[i]
        b = borrow * short
        r = g - trading[t] - b
        gross[t] = g
        borrowed[t] = b
        net[t] = r
        growth = 1.0 + r
        for i in range(n_sym):
            w[i] = w[i] * (1.0 + returns[t, i]) / growth if growth != 0.0 else 0.0
    return gross, net, turnover, trading, borrowed


@njit(cache=True)
def rank_weights_sorted(predictions: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Dollar-neutral rank weights per row: ``(q - mean q) / sum |q - mean q|``, ``q`` the
    average ranks (1-based, ties share theirs) of the row's finite predictions; 0 for NaN and
    for a row whose predictions all tie. ``order`` is each row's argsort with NaN last."""
    n_rows, n_sym = predictions.shape
    out = np.zeros((n_rows, n_sym))
    q = np.empty(n_sym)
    for t in range(n_rows):
        m = 0
        for i in range(n_sym):
            if predictions[t, i] == predictions[t, i]:  # not NaN
                m += 1
        if m < 2:
            continue
        j = 0
        while j < m:
            v = predictions[t, order[t, j]]
            k = j
            while k + 1 < m and predictions[t, order[t, k + 1]] == v:
                k += 1
            for r in range(j, k + 1):
                q[r] = 0.5 * (j + k) + 1.0
            j = k + 1
        mean = 0.5 * (m + 1)
        norm = 0.0
        for r in range(m):
            norm += abs(q[r] - mean)
        if norm > 0.0:
            for r in range(m):
                out[t, order[t, r]] = (q[r] - mean) / norm
    return out
