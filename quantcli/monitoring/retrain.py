"""When to retrain: schedule, drift, performance degradation, or enough new samples.

The trigger's memory (when training last completed) lives in the offline store
(``monitor_trigger_state``), so a cron job in a new process sees what an earlier one recorded.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from quantcli.errors import InputError
from quantcli.monitoring.drift import DriftResult
from quantcli.monitoring.performance import PerformanceMonitor
from quantcli.monitoring.state import as_utc, monitoring_store, utc_now

REASONS = ("schedule", "drift", "performance", "samples")


def _n_drifted(drift_results: DriftResult | dict[str, Any] | None) -> tuple[int, list[str]]:
    if drift_results is None:
        return 0, []
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
    store_path
        The offline store file; default ``$QCLI_HOME/offline.duckdb``.

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
        self.store_path = store_path

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
        drift_results: DriftResult | dict[str, Any] | None = None,
        performance_metrics: dict[str, Any] | None = None,
        *,
        now: datetime | str | None = None,
    ) -> tuple[bool, list[str]]:
        """``(due, reasons)``: every reason that holds, in the order schedule, drift,
        performance, samples.

        Parameters
        ----------
        drift_results
            The latest drift check (a :class:`DriftResult` or its ``to_dict()``), or None.
        performance_metrics
            The latest :meth:`PerformanceMonitor.calculate_metrics` result, or None.
        now
            The evaluation time (default now, UTC).
        """
        decision = self.evaluate(drift_results, performance_metrics, now=now)
        return decision["due"], decision["reasons"]

    def evaluate(
        self,
        drift_results: DriftResult | dict[str, Any] | None = None,
        performance_metrics: dict[str, Any] | None = None,
        *,
        now: datetime | str | None = None,
    ) -> dict[str, Any]:
        """The full decision as a JSON-able dict (``due``, ``reasons``, and the inputs)."""
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
        return {
            "monitor": self.name,
            "evaluated_at": now_dt.isoformat(),
            "due": bool(reasons),
            "reasons": reasons,
            "last_trained_at": last.isoformat() if last else None,
            "days_since_training": age_days,
            "n_drifted": n_drifted,
            "new_samples": new_samples,
            "thresholds": {
                "schedule_days": self.schedule_days,
                "min_samples": self.min_samples,
                "drift_threshold": self.drift_threshold,
            },
        }
