"""When to retrain: schedule, drift, performance degradation, or enough new samples.

The trigger's memory (when training last completed) lives in the offline store
(``monitor_trigger_state``), so a cron job in a new process sees what an earlier one recorded.
"""

from __future__ import annotations

import dataclasses
import os
from datetime import datetime
from typing import Any, ClassVar

from quantcli.errors import InputError
from quantcli.monitoring.drift import DriftResult
from quantcli.monitoring.drift_check import DriftCheck, latest_drift_run
from quantcli.monitoring.performance import PerformanceMonitor
from quantcli.monitoring.state import as_utc, monitoring_store, store_file, utc_now
from quantcli.results import Result
from quantcli.workspace import Workspace

REASONS = ("schedule", "drift", "performance", "samples")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RetrainDecision(Result):
    """Whether retraining is due: ``passed`` is false when it is, ``reasons`` say why (each
    starting with its kind: ``schedule:``, ``drift:``, ``performance:``, ``samples:``)."""

    monitor: str
    evaluated_at: str
    last_trained_at: str | None
    days_since_training: float | None
    n_drifted: int
    new_samples: int
    thresholds: dict[str, int]

    failure_message: ClassVar[str] = "retraining is due"

    @property
    def due(self) -> bool:
        return not self.passed

    def to_dict(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor,
            "evaluated_at": self.evaluated_at,
            "due": self.due,
            "reasons": list(self.reasons),
            "last_trained_at": self.last_trained_at,
            "days_since_training": self.days_since_training,
            "n_drifted": self.n_drifted,
            "new_samples": self.new_samples,
            "thresholds": self.thresholds,
        }


def _n_drifted(
    drift_results: DriftCheck | DriftResult | dict[str, Any] | None,
) -> tuple[int, list[str]]:
    if drift_results is None:
        return 0, []
    if isinstance(drift_results, DriftCheck):
        drift_results = drift_results.drift
    if isinstance(drift_results, DriftResult):
        names = drift_results.drifted_features
        return len(names), names
    if isinstance(drift_results, dict):
        names = list(drift_results.get("drifted_features") or [])
        return int(drift_results.get("n_drifted", len(names))), names
    raise InputError(
        f"drift_results must be a DriftResult, a dict or None, got {type(drift_results).__name__}"
    )


class RetrainingTrigger:
    """Decide whether the model is due for retraining, and remember when it was retrained.

    Parameters
    ----------
    schedule_days
        Retrain at least every ``schedule_days`` days (also when no training is on record).
    min_samples
        Retrain once this many new labelled predictions (``ts`` after the last training)
        have been logged by the :class:`PerformanceMonitor` of the same ``name``.
    drift_threshold
        Retrain when at least this many features drifted.
    name
        The monitored model alias; default ``production``.
    workspace
        Where the state lives (its offline store); default :meth:`Workspace.from_env`.
    store_path
        Deprecated: the offline store file, instead of the workspace's.

    Examples
    --------
    ``should_retrain`` returns ``(due, reasons)``; each reason starts with its kind
    (``schedule:``, ``drift:``, ``performance:``, ``samples:``).
    """

    def __init__(
        self,
        schedule_days: int = 90,
        min_samples: int = 10000,
        drift_threshold: int = 3,
        *,
        name: str = "production",
        store_path: str | os.PathLike[str] | None = None,
        workspace: Workspace | None = None,
    ) -> None:
        for param, value in (
            ("schedule_days", schedule_days),
            ("min_samples", min_samples),
            ("drift_threshold", drift_threshold),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"`{param}` must be a positive integer, got `{param}={value!r}`")
        self.schedule_days = schedule_days
        self.min_samples = min_samples
        self.drift_threshold = drift_threshold
        self.name = name
        self.store_path = store_file(workspace, store_path)

    def last_trained_at(self) -> datetime | None:
        """When training last completed (UTC), or None if never recorded."""
        with monitoring_store(self.store_path) as store:
            row = store.con.execute(
                "SELECT last_trained_at FROM monitor_trigger_state WHERE monitor = ?", [self.name]
            ).fetchone()
        return as_utc(row[0]) if row else None

    def mark_training_completed(self, at: datetime | str | None = None) -> datetime:
        """Record that training completed at ``at`` (default now, UTC); persists at once."""
        when = as_utc(at) if at is not None else utc_now()
        with monitoring_store(self.store_path) as store, store.transaction() as con:
            con.execute(
                "INSERT OR REPLACE INTO monitor_trigger_state VALUES (?, ?, ?)",
                [self.name, when, utc_now()],
            )
        return when

    def should_retrain(
        self,
        drift_results: DriftCheck | DriftResult | dict[str, Any] | None = None,
        performance_metrics: dict[str, Any] | None = None,
        *,
        now: datetime | str | None = None,
    ) -> tuple[bool, list[str]]:
        """``(due, reasons)``: every reason that holds, in the order schedule, drift,
        performance, samples.

        Parameters
        ----------
        drift_results
            The latest drift check (a :class:`DriftCheck`, a :class:`DriftResult` or its
            ``to_dict()``), or None.
        performance_metrics
            The latest :meth:`PerformanceMonitor.calculate_metrics` result, or None.
        now
            The evaluation time (default now, UTC).
        """
        decision = self.evaluate(drift_results, performance_metrics, now=now)
        return decision.due, list(decision.reasons)

    def evaluate(
        self,
        drift_results: DriftCheck | DriftResult | dict[str, Any] | None = None,
        performance_metrics: dict[str, Any] | None = None,
        *,
        now: datetime | str | None = None,
    ) -> RetrainDecision:
        """The full decision (``due``, ``reasons``, and the inputs)."""
        now_dt = as_utc(now) if now is not None else utc_now()
        last = self.last_trained_at()
        reasons: list[str] = []
        if last is None:
            reasons.append("schedule: no completed training on record")
            age_days = None
        else:
            age_days = (now_dt - last).total_seconds() / 86400.0
            if age_days >= self.schedule_days:
                reasons.append(
                    f"schedule: last training {age_days:.1f} days ago "
                    f"(every {self.schedule_days} days)"
                )
        n_drifted, drifted = _n_drifted(drift_results)
        if n_drifted >= self.drift_threshold:
            reasons.append(
                f"drift: {n_drifted} features drifted (threshold {self.drift_threshold}): "
                f"{', '.join(drifted)}"
            )
        if performance_metrics is not None and performance_metrics.get("degraded"):
            why = "; ".join(performance_metrics.get("reasons") or []) or "degraded"
            reasons.append(f"performance: {why}")
        new_samples = PerformanceMonitor(
            name=self.name, store_path=self.store_path
        ).n_samples_since(last)
        if new_samples >= self.min_samples:
            reasons.append(
                f"samples: {new_samples} new labelled samples since the last training "
                f"(minimum {self.min_samples})"
            )
        return RetrainDecision(
            passed=not reasons,
            reasons=reasons,
            monitor=self.name,
            evaluated_at=now_dt.isoformat(),
            last_trained_at=last.isoformat() if last else None,
            days_since_training=age_days,
            n_drifted=n_drifted,
            new_samples=new_samples,
            thresholds={
                "schedule_days": self.schedule_days,
                "min_samples": self.min_samples,
                "drift_threshold": self.drift_threshold,
            },
        )


def check_retrain(
    *, monitor: str = "production", workspace: Workspace | None = None
) -> RetrainDecision:
    """``qcli monitor retrain-check``: the latest recorded drift check and the rolling
    performance (not recorded) against the ``[retrain]`` and ``[monitor]`` thresholds of the
    workspace's config."""
    ws = workspace or Workspace.from_env()
    trigger = RetrainingTrigger(**ws.section("retrain"), name=monitor, workspace=ws)
    metrics = PerformanceMonitor(**ws.section("monitor"), name=monitor, workspace=ws)
    return trigger.evaluate(latest_drift_run(workspace=ws), metrics.calculate_metrics(record=False))
