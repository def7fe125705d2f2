"""The guard's rules: a pure evaluation of the monitors' latest numbers into findings.

Checks and severities (thresholds in :class:`GuardThresholds`):

========================  ==========================================  =========================
check                     CRITICAL (rollback trigger)                 WARNING
========================  ==========================================  =========================
sharpe                    rolling Sharpe < 0.8 on each of the last    latest Sharpe < 0.8
                          3 consecutive days (UTC)
drawdown                  max drawdown beyond -25 %                   beyond -20 %
error_rate                > 1 % of /predict requests fail (5xx)       > 0.5 %
latency                   --                                          > 5 % of requests > 500 ms
drift                     --                                          > 5 features drifted
========================  ==========================================  =========================

A check that passes, or whose input is missing, is an INFO finding that says so. Latency and
drift are alerts, not rollback triggers: the previous model version would be just as slow on
the same infrastructure and sees the same drifted inputs -- they call for operations work and
retraining. :func:`evaluate_guard` takes plain values so it is testable without a server;
:mod:`quantcli.monitoring.guard` gathers them, acts on the findings and records the event.
"""

from __future__ import annotations

import itertools
import operator
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from datetime import date, timedelta
from typing import Any

from quantcli.config import DEFAULTS
from quantcli.errors import InputError

SEVERITIES = ("CRITICAL", "WARNING", "INFO")


_G = DEFAULTS["guard"]  # one source of truth: `[guard]` of a --config file overrides these


@dataclass(frozen=True)
class GuardThresholds:
    """The alert thresholds (fractions, not percent); defaults: ``[guard]`` of
    :data:`quantcli.config.DEFAULTS`.

    Raises
    ------
    InputError
        A threshold of the wrong type or out of range; the message names the ``[guard]`` key.
    """

    min_sharpe: float = _G["min_sharpe"]
    sharpe_days: int = _G["sharpe_days"]
    max_drawdown: float = _G["max_drawdown"]
    warn_drawdown: float = _G["warn_drawdown"]
    max_error_rate: float = _G["max_error_rate"]
    warn_error_rate: float = _G["warn_error_rate"]
    max_slow_share: float = _G["max_slow_share"]
    max_drifted_features: int = _G["max_drifted_features"]

    def __post_init__(self) -> None:
        def bad(key: str, want: str) -> InputError:
            return InputError(
                f"[guard] {key} must be {want}, got {key}={getattr(self, key)!r}",
                hint="fix the [guard] section of the --config file (thresholds are fractions)",
            )

        for f in fields(self):
            value = getattr(self, f.name)
            whole = f.type in ("int", int)
            if isinstance(value, bool) or not isinstance(value, int if whole else int | float):
                raise bad(f.name, "a whole number" if whole else "a number")
        if self.sharpe_days < 1:
            raise bad("sharpe_days", "at least 1")
        if self.max_drifted_features < 0:
            raise bad("max_drifted_features", "at least 0")
        for key in ("max_error_rate", "warn_error_rate", "max_slow_share"):
            if not 0 <= getattr(self, key) <= 1:
                raise bad(key, "a fraction in [0, 1]")
        for key in ("max_drawdown", "warn_drawdown"):
            if not -1 <= getattr(self, key) <= 0:
                raise bad(key, "a negative fraction in [-1, 0]")
        # a WARNING level that is stricter than CRITICAL could never be reported
        if self.warn_drawdown < self.max_drawdown:
            raise bad("warn_drawdown", f"at or above max_drawdown={self.max_drawdown}")
        if self.warn_error_rate > self.max_error_rate:
            raise bad("warn_error_rate", f"at or below max_error_rate={self.max_error_rate}")

    @classmethod
    def from_config(
        cls, cfg: dict[str, dict[str, Any]], source: str | os.PathLike[str] | None = None
    ) -> GuardThresholds:
        """The thresholds of the ``[guard]`` section of :func:`quantcli.config.load_config`;
        ``source`` (the config file) prefixes an error message."""
        try:
            return cls(**cfg["guard"])
        except InputError as exc:
            if source is None:
                raise
            raise InputError(f"{source}: {exc.message}", hint=exc.hint) from None


@dataclass(frozen=True)
class Finding:
    check: str
    severity: str
    message: str
    value: float | None = None
    threshold: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _ThresholdCheck:
    """A check that compares one number with one or two limits.

    ``levels`` are ``(severity, GuardThresholds field)``, the most severe first; the first
    level whose limit ``breaches(value, limit)`` is the finding (``operator.lt`` for a drawdown,
    a negative fraction; ``operator.gt`` for rates and counts), so a value exactly at a limit
    does not breach it. Messages are ``str.format`` templates: ``breach`` takes ``{value}``,
    ``{limit}`` and ``{limit_pct}`` (the limit in percent, all its significant digits);
    ``ok`` (no level applies) takes ``{value}``; ``missing`` is said when the input is absent.
    """

    check: str
    breaches: Callable[[float, float], bool]
    levels: tuple[tuple[str, str], ...]
    breach: str
    ok: str
    missing: str


_NO_SERVICE = "no service requests to rate (or no --metrics)"

#: The threshold checks after ``sharpe``, in report order (the table in the module docstring).
THRESHOLD_CHECKS: tuple[_ThresholdCheck, ...] = (
    _ThresholdCheck(
        "drawdown", operator.lt, (("CRITICAL", "max_drawdown"), ("WARNING", "warn_drawdown")),
        breach="max drawdown {value:.1%} beyond {limit_pct}",
        ok="max drawdown {value:.1%} ok",
        missing="no drawdown recorded",
    ),
    _ThresholdCheck(
        "error_rate", operator.gt, (("CRITICAL", "max_error_rate"), ("WARNING", "warn_error_rate")),
        breach="error rate {value:.2%} above {limit_pct}",
        ok="error rate {value:.2%} ok",
        missing=_NO_SERVICE,
    ),
    _ThresholdCheck(
        "latency", operator.gt, (("WARNING", "max_slow_share"),),
        breach="{value:.1%} of requests slower than 500 ms (limit {limit_pct})",
        ok="{value:.1%} of requests over 500 ms",
        missing=_NO_SERVICE,
    ),
    _ThresholdCheck(
        "drift", operator.gt, (("WARNING", "max_drifted_features"),),
        breach="{value} features drifted (more than {limit})",
        ok="{value} features drifted",
        missing="no drift check recorded",
    ),
)  # fmt: skip


def _threshold_finding(spec: _ThresholdCheck, value: float | None, t: GuardThresholds) -> Finding:
    """The finding of one threshold check: the first level ``value`` breaches, else INFO."""
    if value is None:
        return Finding(spec.check, "INFO", spec.missing)
    for severity, field in spec.levels:
        limit = getattr(t, field)
        if spec.breaches(value, limit):
            # the limit exactly as configured ({:g} of percent): 0.005 -> 0.5%, 0.015 -> 1.5%
            message = spec.breach.format(value=value, limit=limit, limit_pct=f"{limit * 100:g}%")
            return Finding(spec.check, severity, message, float(value), float(limit))
    return Finding(spec.check, "INFO", spec.ok.format(value=value), float(value))


def _consecutive_days(days: list[date]) -> bool:
    return all(b - a == timedelta(days=1) for a, b in itertools.pairwise(days))


def evaluate_guard(
    *,
    daily_sharpe: list[tuple[date, float | None]] | None = None,
    max_drawdown: float | None = None,
    error_rate: float | None = None,
    slow_share: float | None = None,
    n_drifted: int | None = None,
    thresholds: GuardThresholds | None = None,
) -> list[Finding]:
    """The findings, worst first (CRITICAL, WARNING, INFO; check order within a severity).

    Parameters
    ----------
    daily_sharpe
        ``(day, annualized rolling Sharpe)`` of the last recorded metrics of each day, oldest
        first (:meth:`PerformanceMonitor.metrics_history` with ``days=3``).
    max_drawdown
        The latest rolling max drawdown, a negative fraction.
    error_rate, slow_share
        From the prediction service (:mod:`quantcli.monitoring.service_metrics`).
    n_drifted
        Features drifted in the latest drift check.
    """
    t = thresholds or GuardThresholds()
    out: list[Finding] = []

    if not daily_sharpe:
        out.append(Finding("sharpe", "INFO", "no performance metrics recorded"))
    else:
        last = daily_sharpe[-t.sharpe_days :]
        latest = last[-1][1]
        low = [s is not None and s < t.min_sharpe for _, s in last]
        if len(last) == t.sharpe_days and all(low) and _consecutive_days([d for d, _ in last]):
            out.append(
                Finding(
                    "sharpe",
                    "CRITICAL",
                    f"rolling Sharpe below {t.min_sharpe:g} for {t.sharpe_days} consecutive days "
                    f"({', '.join(f'{d}: {s:.2f}' for d, s in last)})",
                    latest,
                    t.min_sharpe,
                )
            )
        elif latest is not None and latest < t.min_sharpe:
            out.append(
                Finding(
                    "sharpe",
                    "WARNING",
                    f"rolling Sharpe {latest:.2f} below {t.min_sharpe:g} "
                    f"(not yet {t.sharpe_days} consecutive days)",
                    latest,
                    t.min_sharpe,
                )
            )
        elif latest is None:
            out.append(Finding("sharpe", "INFO", "rolling Sharpe undefined (too few periods)"))
        else:
            out.append(
                Finding("sharpe", "INFO", f"rolling Sharpe {latest:.2f} ok", latest, t.min_sharpe)
            )

    values = {
        "drawdown": max_drawdown,
        "error_rate": error_rate,
        "latency": slow_share,
        "drift": n_drifted,
    }
    out += [_threshold_finding(spec, values[spec.check], t) for spec in THRESHOLD_CHECKS]

    rank = {s: i for i, s in enumerate(SEVERITIES)}
    return sorted(out, key=lambda f: rank[f.severity])  # stable: check order kept


def worst_severity(findings: list[Finding]) -> str:
    """The most severe level among ``findings`` (INFO when there are none)."""
    for s in SEVERITIES:
        if any(f.severity == s for f in findings):
            return s
    return "INFO"
