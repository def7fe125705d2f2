"""The backtest gate: a strategy passes only if its Sharpe, PSR and drawdown clear thresholds.

Defaults live in ``[gates]`` of :data:`quantcli.config.DEFAULTS` (``min_sharpe = 1.2``,
``min_psr = 0.95``, ``max_drawdown = -0.20``) and can be overridden per command.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from quantcli.backtest import stats
from quantcli.config import DEFAULTS
from quantcli.errors import InputError
from quantcli.results import Result


@dataclass(frozen=True, kw_only=True)
class GateVerdict(Result):
    """The verdict of :meth:`BacktestValidator.validate_model`.

    ``metrics`` is :func:`quantcli.backtest.stats.summary` of the returns plus ``dsr``,
    ``n_trials``, ``thresholds``, ``reasons``, ``passed`` and ``status``; ``to_dict()`` is that
    dict. The verdict also unpacks as the pair ``(passed, metrics)``:
    ``passed, metrics = validator.validate_model(returns)``.
    """

    metrics: dict[str, Any]

    failure_message = "the backtest gate failed"

    @property
    def sharpe(self) -> float:
        """Annualized Sharpe ratio (ddof = 1)."""
        return self.metrics["sharpe"]

    @property
    def psr(self) -> float:
        return self.metrics["psr"]

    @property
    def dsr(self) -> float:
        return self.metrics["dsr"]

    @property
    def max_drawdown(self) -> float:
        """The worst drawdown, a negative fraction."""
        return self.metrics["max_drawdown"]

    @property
    def thresholds(self) -> dict[str, float]:
        return dict(self.metrics["thresholds"])

    def to_dict(self) -> dict[str, Any]:
        return dict(self.metrics)

    def __iter__(self) -> Iterator[Any]:
        yield self.passed
        yield dict(self.metrics)

    def __len__(self) -> int:
        return 2

    def __getitem__(self, key: str | int) -> Any:
        if isinstance(key, int):  # verdict[0] is passed, verdict[1] the metrics, as for a pair
            return tuple(self)[key]
        return super().__getitem__(key)


class BacktestValidator:
    """Gate per-period strategy returns on annualized Sharpe, PSR and maximum drawdown.

    Parameters
    ----------
    min_sharpe : float, default 1.2
        Minimum annualized Sharpe ratio (``sqrt(periods_per_year)`` scaling, ddof = 1).
    min_psr : float, default 0.95
        Minimum probabilistic Sharpe ratio against a zero Sharpe ratio, in [0, 1].
    max_drawdown : float, default -0.20
        The worst drawdown allowed, a negative fraction: ``-0.20`` rejects a 25 % drawdown.
    periods_per_year : float, default 252
        Periods per year of the returns (252 for daily bars).

    Examples
    --------
    >>> import numpy as np
    >>> losing = np.tile([0.01, -0.012], 125)  # mean -0.1 % a day
    >>> passed, metrics = BacktestValidator().validate_model(losing)
    >>> passed
    False
    >>> for reason in metrics["reasons"]:
    ...     print(reason)
    Sharpe ratio -1.440 < min_sharpe 1.2
    PSR 0.0761 < min_psr 0.95
    max drawdown -24.06% is worse than max_drawdown -20%
    """

    def __init__(
        self,
        min_sharpe: float = DEFAULTS["gates"]["min_sharpe"],
        min_psr: float = DEFAULTS["gates"]["min_psr"],
        max_drawdown: float = DEFAULTS["gates"]["max_drawdown"],
        periods_per_year: float = stats.PERIODS_PER_YEAR,
    ) -> None:
        for option, value in (
            ("min_sharpe", min_sharpe),
            ("min_psr", min_psr),
            ("max_drawdown", max_drawdown),
            ("periods_per_year", periods_per_year),
        ):
            # every comparison with NaN is False: a NaN threshold would switch its check off
            if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
                raise InputError(f"`{option}` must be a number, got `{option}={value!r}`.")
            if not math.isfinite(value):
                raise InputError(f"`{option}` must be a finite number, got `{option}={value}`.")
        if not 0.0 <= min_psr <= 1.0:
            raise InputError(f"`min_psr` must be in [0, 1], got `min_psr={min_psr}`.")
        if not -1.0 <= max_drawdown <= 0.0:
            raise InputError(
                f"`max_drawdown` must be a negative fraction in [-1, 0], got "
                f"`max_drawdown={max_drawdown}`.",
                hint="-0.20 allows drawdowns up to 20 %",
            )
        if not periods_per_year > 0:
            raise InputError(
                f"`periods_per_year` must be positive, got `periods_per_year={periods_per_year}`."
            )
        self.min_sharpe = float(min_sharpe)
        self.min_psr = float(min_psr)
        self.max_drawdown = float(max_drawdown)
        self.periods_per_year = float(periods_per_year)

    @classmethod
    def from_config(cls, gates: dict[str, Any], **overrides: float | None) -> BacktestValidator:
        """A validator from a ``[gates]`` config section, with non-``None`` overrides on top."""
        merged = {**DEFAULTS["gates"], **gates}
        merged.update({k: v for k, v in overrides.items() if v is not None})
        return cls(
            min_sharpe=merged["min_sharpe"],
            min_psr=merged["min_psr"],
            max_drawdown=merged["max_drawdown"],
        )

    def thresholds(self) -> dict[str, float]:
        return {
            "min_sharpe": self.min_sharpe,
            "min_psr": self.min_psr,
            "max_drawdown": self.max_drawdown,
        }

    def check(self, metrics: dict[str, float]) -> list[str]:
        """The rejection reasons for ``metrics`` (keys ``sharpe``, ``psr``, ``max_drawdown``)."""
        reasons = []
        sharpe, psr, mdd = metrics["sharpe"], metrics["psr"], metrics["max_drawdown"]
        if not math.isfinite(sharpe):
            reasons.append(
                f"Sharpe ratio {sharpe} is undefined (zero volatility or fewer than 2 periods)"
            )
        elif sharpe < self.min_sharpe:
            reasons.append(f"Sharpe ratio {sharpe:.3f} < min_sharpe {self.min_sharpe:g}")
        if math.isfinite(sharpe) and not (math.isfinite(psr) and psr >= self.min_psr):
            reasons.append(f"PSR {psr:.4f} < min_psr {self.min_psr:g}")
        if mdd < self.max_drawdown:
            reasons.append(
                f"max drawdown {mdd:.2%} is worse than max_drawdown {self.max_drawdown:.0%}"
            )
        return reasons

    def validate_model(
        self,
        returns: Sequence[float] | np.ndarray,
        trial_sharpes: Sequence[float] | np.ndarray | None = None,
    ) -> GateVerdict:
        """The gate's verdict on per-period strategy ``returns`` (unpacks as ``passed, metrics``).

        Parameters
        ----------
        returns
            Per-period strategy returns, as fractions (a list, NumPy array, or a polars/pandas
            Series).
        trial_sharpes
            The per-period (not annualized) Sharpe ratios of every configuration tried before
            this one was chosen, for the deflated Sharpe ratio. Default: this strategy was the
            only trial, and DSR equals PSR against a zero Sharpe ratio.

        Returns
        -------
        GateVerdict
            ``passed``, ``reasons`` and ``metrics``, which holds
            :func:`quantcli.backtest.stats.summary` (``sharpe`` annualized, ``psr``,
            ``max_drawdown``, ``win_rate``, ``annual_return``, ...), ``dsr`` and ``n_trials``,
            the thresholds, ``status`` (``"pass"``/``"fail"``) and ``reasons``:
            every failed criterion, as a sentence (empty when ``passed``). DSR is reported, not
            gated, as in ``qcli backtest cpcv``.
        """
        if type(returns).__module__.partition(".")[0] in ("pandas", "polars", "pyarrow"):
            returns = np.asarray(returns.to_numpy(), dtype=np.float64)
        metrics: dict[str, Any] = stats.summary(returns, self.periods_per_year)
        trials = [] if trial_sharpes is None else [float(t) for t in trial_sharpes]
        if trials and not all(math.isfinite(t) for t in trials):
            raise InputError("`trial_sharpes` must be finite per-period Sharpe ratios")
        n_obs = int(metrics["n_periods"])
        metrics["dsr"] = stats.deflated_sharpe_ratio(
            metrics["sharpe_per_period"],
            trials or [metrics["sharpe_per_period"]],
            n_obs,
            metrics["skew"],
            metrics["kurtosis"],
        )
        metrics["n_trials"] = max(len(trials), 1)
        reasons = self.check(metrics)
        metrics["thresholds"] = self.thresholds()
        metrics["reasons"] = reasons
        metrics["passed"] = not reasons
        metrics["status"] = "pass" if not reasons else "fail"
        return GateVerdict(passed=not reasons, reasons=reasons, metrics=metrics)
