"""Backtest statistics, with the conventions of ``docs/backtest.md``.

Returns are simple per-period returns as fractions (``0.01`` is +1 %), one per period, in time
order; the risk-free rate ``rf`` is per period too. Conventions:

* Sharpe ratio (annualized): ``mean(r - rf) / std(r - rf, ddof=1) * sqrt(periods_per_year)``.
  The *per-period* Sharpe ratio is the same without the ``sqrt`` factor; PSR, DSR and MinTRL
  take per-period Sharpe ratios.
* PSR (Bailey & Lopez de Prado 2012): ``Phi((SR - SR*) sqrt(T - 1) / sqrt(1 - g3 SR +
  (g4 - 1)/4 SR^2))`` with ``g3`` the skewness and ``g4`` the raw (non-excess, 3 for a normal)
  kurtosis, both population moments (biased, ddof = 0).
* DSR (Bailey & Lopez de Prado 2014): ``PSR(SR0)``, ``SR0 = sqrt(V) ((1 - gamma) Phi^-1(1 - 1/N)
  + gamma Phi^-1(1 - 1/(N e)))``, ``V`` the variance (ddof = 0) of the N trials' per-period
  Sharpe ratios, ``gamma`` the Euler-Mascheroni constant.
* Minimum track record length: ``1 + (1 - g3 SR + (g4 - 1)/4 SR^2) (z_p / (SR - SR*))^2``
  periods.
* Maximum drawdown: on compounded wealth ``prod(1 + r)`` starting at 1 (a loss in the first
  period counts), a negative fraction (``-0.2`` is a 20 % drawdown), ``0.0`` without losses.
* Win rate: the share of periods with a strictly positive return (zero counts as no win).
* Annual return: geometric, ``prod(1 + r) ** (periods_per_year / T) - 1``.

Undefined values (too few periods, zero volatility) are ``nan``, never an exception.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from quantcli.frequency import TRADING_DAYS

EULER_GAMMA = 0.5772156649015329
#: The default annualization of a caller that names no feature set: daily bars. The backtest
#: engine takes the feature set's ``periods_per_year`` (or infers it from the bar spacing).
PERIODS_PER_YEAR = TRADING_DAYS


def _norm_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _norm_ppf(p: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(p))


def _as_returns(returns: Sequence[float] | np.ndarray) -> np.ndarray:
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 1:
        raise ValueError(f"`returns` must be one-dimensional, got shape {r.shape}")
    if not np.isfinite(r).all():
        raise ValueError(
            f"`returns` has {int((~np.isfinite(r)).sum())} non-finite value(s); drop or fill them"
        )
    return r


def sharpe_ratio(
    returns: Sequence[float] | np.ndarray,
    *,
    rf: float = 0.0,
    periods_per_year: float | None = PERIODS_PER_YEAR,
) -> float:
    """Sharpe ratio of per-period ``returns``: annualized, or per period with ``None``.

    ``mean(r - rf) / std(r - rf, ddof=1)``, times ``sqrt(periods_per_year)`` when given;
    ``nan`` with fewer than 2 periods or zero volatility.
    """
    r = _as_returns(returns) - rf
    if r.size < 2:
        return math.nan
    sd, mean = float(r.std(ddof=1)), float(r.mean())
    # a constant series has a std of float noise (1e-19), not a meaningful volatility
    if not sd > 1e-12 * abs(mean):
        return math.nan
    sr = mean / sd
    return sr * math.sqrt(periods_per_year) if periods_per_year else sr


def moments(returns: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """``(skewness, raw kurtosis)`` of ``returns``: population moments (3.0 for a normal)."""
    r = _as_returns(returns)
    d = r - r.mean()
    m2 = float(np.mean(d**2))
    if not m2 > 0.0:
        return math.nan, math.nan
    return float(np.mean(d**3)) / m2**1.5, float(np.mean(d**4)) / m2**2


def probabilistic_sharpe_ratio(
    sr: float, sr_benchmark: float, n_obs: int, skew: float = 0.0, kurtosis: float = 3.0
) -> float:
    """PSR: the probability that the true per-period Sharpe ratio exceeds ``sr_benchmark``.

    ``sr`` and ``sr_benchmark`` are per period (not annualized); ``kurtosis`` is raw (3 for a
    normal). Oracle: ``probabilistic_sharpe_ratio(1.14, 1.0, 250) == 0.95727...``.
    """
    if n_obs < 2 or not math.isfinite(sr):
        return math.nan
    var = 1.0 - skew * sr + (kurtosis - 1.0) / 4.0 * sr**2
    if not var > 0.0:
        return math.nan
    return _norm_cdf((sr - sr_benchmark) * math.sqrt(n_obs - 1) / math.sqrt(var))


def psr(returns: Sequence[float] | np.ndarray, sr_benchmark: float = 0.0) -> float:
    """PSR of ``returns`` against the per-period benchmark Sharpe ratio ``sr_benchmark``."""
    r = _as_returns(returns)
    sr = sharpe_ratio(r, periods_per_year=None)
    skew, kurt = moments(r) if r.size >= 2 else (math.nan, math.nan)
    return probabilistic_sharpe_ratio(sr, sr_benchmark, r.size, skew, kurt)


def expected_max_sharpe(trial_srs: Sequence[float] | np.ndarray) -> float:
    """``SR0``: the expected maximum per-period Sharpe ratio of N unskilled trials.

    ``sqrt(V) ((1 - gamma) Phi^-1(1 - 1/N) + gamma Phi^-1(1 - 1/(N e)))`` with ``V`` the
    variance (ddof = 0) of the trials' per-period Sharpe ratios. ``0.0`` for a single trial.
    """
    srs = np.asarray(trial_srs, dtype=np.float64)
    srs = srs[np.isfinite(srs)]
    n = srs.size
    if n < 2:
        return 0.0
    sd = math.sqrt(float(srs.var(ddof=0)))
    return sd * (
        (1.0 - EULER_GAMMA) * _norm_ppf(1.0 - 1.0 / n)
        + EULER_GAMMA * _norm_ppf(1.0 - 1.0 / (n * math.e))
    )


def deflated_sharpe_ratio(
    sr: float,
    trial_srs: Sequence[float] | np.ndarray,
    n_obs: int,
    skew: float = 0.0,
    kurtosis: float = 3.0,
) -> float:
    """DSR: ``PSR(SR0)`` with ``SR0`` from :func:`expected_max_sharpe` (all per period).

    Oracle: ``deflated_sharpe_ratio(1.14, [3.5, 1.01, 1.02], 250) == 0.95836...``.
    """
    return probabilistic_sharpe_ratio(sr, expected_max_sharpe(trial_srs), n_obs, skew, kurtosis)


def min_track_record_length(
    sr: float,
    sr_benchmark: float = 0.0,
    skew: float = 0.0,
    kurtosis: float = 3.0,
    prob: float = 0.95,
) -> float:
    """Periods needed for ``PSR(sr_benchmark) >= prob`` (per-period SRs); ``inf`` if SR <= SR*."""
    if not math.isfinite(sr):
        return math.nan
    if sr <= sr_benchmark:
        return math.inf
    var = 1.0 - skew * sr + (kurtosis - 1.0) / 4.0 * sr**2
    return 1.0 + var * (_norm_ppf(prob) / (sr - sr_benchmark)) ** 2


def drawdown(returns: Sequence[float] | np.ndarray) -> np.ndarray:
    """The drawdown after each period: ``wealth / running peak - 1`` (<= 0), wealth from 1."""
    r = _as_returns(returns)
    wealth = np.cumprod(1.0 + r)
    peak = np.maximum.accumulate(np.concatenate([[1.0], wealth]))[1:]
    return wealth / peak - 1.0


def max_drawdown(returns: Sequence[float] | np.ndarray) -> float:
    """The worst drawdown of compounded wealth starting at 1, a negative fraction (or 0.0)."""
    r = _as_returns(returns)
    if r.size == 0:
        return 0.0
    return float(min(drawdown(r).min(), 0.0))


def win_rate(returns: Sequence[float] | np.ndarray) -> float:
    """The share of periods with a strictly positive return; ``nan`` for no periods."""
    r = _as_returns(returns)
    return float((r > 0).mean()) if r.size else math.nan


def annual_return(
    returns: Sequence[float] | np.ndarray, periods_per_year: float = PERIODS_PER_YEAR
) -> float:
    """Geometric annual return ``prod(1 + r) ** (periods_per_year / T) - 1``."""
    r = _as_returns(returns)
    if r.size == 0:
        return math.nan
    growth = float(np.prod(1.0 + r))
    if growth <= 0.0:
        return -1.0
    return growth ** (periods_per_year / r.size) - 1.0


def summary(
    returns: Sequence[float] | np.ndarray, periods_per_year: float = PERIODS_PER_YEAR
) -> dict[str, float]:
    """Every statistic of one return series (PSR against a zero Sharpe ratio)."""
    r = _as_returns(returns)
    sr_p = sharpe_ratio(r, periods_per_year=None)
    skew, kurt = moments(r) if r.size >= 2 else (math.nan, math.nan)
    return {
        "sharpe": sr_p * math.sqrt(periods_per_year) if math.isfinite(sr_p) else math.nan,
        "sharpe_per_period": sr_p,
        "psr": probabilistic_sharpe_ratio(sr_p, 0.0, r.size, skew, kurt),
        "min_trl": min_track_record_length(sr_p, 0.0, skew, kurt),
        "max_drawdown": max_drawdown(r),
        "win_rate": win_rate(r),
        "annual_return": annual_return(r, periods_per_year),
        "skew": skew,
        "kurtosis": kurt,
        "n_periods": float(r.size),
    }
