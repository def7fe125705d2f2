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


def _sharpe_from_sums(total: np.ndarray, total_sq: np.ndarray, n: int) -> np.ndarray:
    """Per-period Sharpe ratios (ddof = 1) from sums and sums of squares over ``n`` rows."""
    mean = total / n
    var = np.maximum(total_sq - total * mean, 0.0) / (n - 1)
    sd = np.sqrt(var)
    with np.errstate(divide="ignore", invalid="ignore"):
        sr = mean / sd
    # a flat configuration has no edge: rank it as zero rather than nan
    return np.where(sd > 1e-12 * np.abs(mean), sr, 0.0)


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
    # every CSCV split at once: IS sums are (splits x blocks) @ (blocks x configs)
    is_mask = np.zeros((math.comb(n_blocks, n_blocks // 2), n_blocks))
    for row, chosen in enumerate(itertools.combinations(range(n_blocks), n_blocks // 2)):
        is_mask[row, list(chosen)] = 1.0
    block_sum, block_sq = blocks.sum(axis=1), (blocks**2).sum(axis=1)
    is_sum, is_sq = is_mask @ block_sum, is_mask @ block_sq
    half = size * n_blocks // 2
    is_sr = _sharpe_from_sums(is_sum, is_sq, half)
    oos_sr = _sharpe_from_sums(block_sum.sum(0) - is_sum, block_sq.sum(0) - is_sq, half)
    best = np.argmax(is_sr, axis=1)  # the first on ties: deterministic
    best_oos = oos_sr[np.arange(best.size), best][:, None]
    # 1-based rank (1 = worst), ties sharing their average rank
    rank = (oos_sr < best_oos).sum(axis=1) + ((oos_sr == best_oos).sum(axis=1) + 1) / 2.0
    w = rank / (n + 1)
    logits = np.log(w / (1.0 - w)).tolist()
    pbo = float(np.mean(np.asarray(logits) <= 0.0))
    return PBOResult(pbo=pbo, logits=logits, n_blocks=n_blocks, n_configs=n)
