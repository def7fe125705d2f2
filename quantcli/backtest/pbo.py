"""Probability of backtest overfitting by combinatorially symmetric cross-validation (CSCV).

Bailey, Borwein, Lopez de Prado & Zhu (2015), "The probability of backtest overfitting":

1. ``M`` is a ``(T, N)`` matrix of per-period returns of ``N`` configurations (the trials);
2. its rows are cut into ``S`` (even) contiguous blocks of equal size (the first ``T mod S``
   rows are dropped so the blocks are equal, as in the paper);
3. for each of the ``C(S, S/2)`` ways to pick ``S/2`` blocks as in-sample (IS), the rest being
   out-of-sample (OOS), the configuration with the best IS per-period Sharpe ratio is chosen;
   its OOS rank ``r`` among the ``N`` (1 = worst, ties get the average rank) gives the relative
   rank ``w = r / (N + 1)`` and the logit ``lambda = ln(w / (1 - w))``;
4. ``PBO`` is the share of logits ``<= 0``: how often the IS winner is at or below the OOS median.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from quantcli.errors import InputError


@dataclass
class PBOResult:
    """``pbo`` in [0, 1], the logits of every CSCV split, and the grid used."""

    pbo: float
    logits: list[float] = field(default_factory=list)
    n_blocks: int = 0
    n_configs: int = 0

    def to_dict(self) -> dict:
        return {
            "pbo": self.pbo,
            "n_blocks": self.n_blocks,
            "n_configs": self.n_configs,
            "n_splits": len(self.logits),
            "logit_median": float(np.median(self.logits)) if self.logits else math.nan,
        }


def _sharpe_columns(m: np.ndarray) -> np.ndarray:
    sd = m.std(axis=0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        sr = m.mean(axis=0) / sd
    # a flat configuration has no edge: rank it as zero rather than nan
    return np.where(sd > 0, sr, 0.0)


def _average_rank(values: np.ndarray, i: int) -> float:
    """1-based rank of ``values[i]`` (1 = smallest), ties sharing their average rank."""
    below = int(np.sum(values < values[i]))
    equal = int(np.sum(values == values[i]))
    return below + (equal + 1) / 2.0


def probability_of_backtest_overfitting(
    returns: np.ndarray, n_blocks: int = 16, max_splits: int = 20_000
) -> PBOResult:
    """PBO of ``returns``, a ``(T, N)`` array of per-period returns of N configurations.

    Parameters
    ----------
    returns
        Per-period returns, one column per configuration (at least 2), rows in time order.
    n_blocks
        ``S``, even and at least 2; each block needs at least 2 rows. 16 gives 12,870 splits.
    max_splits
        Refuse ``C(S, S/2)`` above this (the work grows fast with ``S``).
    """
    m = np.asarray(returns, dtype=np.float64)
    if m.ndim != 2 or m.shape[1] < 2:
        raise InputError(
            f"PBO needs a (periods, configurations) matrix with at least 2 configurations, "
            f"got shape {m.shape}"
        )
    if n_blocks < 2 or n_blocks % 2:
        raise InputError(f"`n_blocks` must be even and at least 2, got `n_blocks={n_blocks}`.")
    if m.shape[0] < 2 * n_blocks:
        raise InputError(
            f"PBO with `n_blocks={n_blocks}` needs at least {2 * n_blocks} periods, "
            f"got {m.shape[0]}"
        )
    if math.comb(n_blocks, n_blocks // 2) > max_splits:
        raise InputError(
            f"`n_blocks={n_blocks}` gives {math.comb(n_blocks, n_blocks // 2)} CSCV splits, "
            f"more than `max_splits={max_splits}`"
        )
    if not np.isfinite(m).all():
        raise InputError("PBO returns contain NaN or inf")
    t, n = m.shape
    size = t // n_blocks
    blocks = m[t - size * n_blocks :].reshape(n_blocks, size, n)
    logits = []
    for is_blocks in itertools.combinations(range(n_blocks), n_blocks // 2):
        mask = np.zeros(n_blocks, dtype=bool)
        mask[list(is_blocks)] = True
        is_sr = _sharpe_columns(blocks[mask].reshape(-1, n))
        oos_sr = _sharpe_columns(blocks[~mask].reshape(-1, n))
        best = int(np.argmax(is_sr))  # first on ties: deterministic
        w = _average_rank(oos_sr, best) / (n + 1)
        logits.append(math.log(w / (1.0 - w)))
    pbo = float(np.mean(np.asarray(logits) <= 0.0))
    return PBOResult(pbo=pbo, logits=logits, n_blocks=n_blocks, n_configs=n)
