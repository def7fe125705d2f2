"""The guard run: gather the monitors' latest numbers, evaluate, act on CRITICAL, record.

The checks and their severities are :mod:`quantcli.monitoring.guard_rules` (re-exported here);
this module reads their inputs (the performance history, the latest drift check, the service's
``/metrics``), rolls back or halts the model on a CRITICAL finding, appends the evaluation to
``monitor_guard_events``, and only then delivers the alerts: a slow or dead webhook must never
delay the kill switch. The deliveries are part of the result.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import date, datetime
from typing import Any

from quantcli.errors import InputError
from quantcli.models.deployment import halt
from quantcli.models.registry import ModelRegistry
from quantcli.monitoring.alerts import AlertConfig, AlertSink, Delivery, finding_alerts
from quantcli.monitoring.drift_check import latest_drift_run
from quantcli.monitoring.guard_rules import (
    SEVERITIES,
    THRESHOLD_CHECKS,
    Finding,
    GuardThresholds,
    evaluate_guard,
    worst_severity,
)
from quantcli.monitoring.performance import PerformanceMonitor
from quantcli.monitoring.service_metrics import ServiceHealth, read_service_health
from quantcli.monitoring.state import as_utc, monitoring_store, store_file, utc_now
from quantcli.results import Result, jsonable
from quantcli.workspace import Workspace


@dataclass(frozen=True, kw_only=True)
class GuardResult(Result):
    """One guard evaluation: the findings (worst first), the action taken and its inputs.

    ``passed`` is false on a CRITICAL finding; ``reasons`` are the CRITICAL messages.
    """

    event_id: str
    evaluated_at: str
    monitor: str
    model: str | None
    severity: str
    findings: tuple[Finding, ...]
    action: str  # none | rollback | rollback-failed | halt
    rollback: dict[str, Any] | None
    halt: dict[str, Any] | None
    inputs: dict[str, Any]
    thresholds: dict[str, Any]
    alerts: tuple[Delivery, ...] = ()

    def message(self) -> str:
        if self.action == "rollback":
            done = (
                f"; production rolled back {self.rollback['from_version']} -> "
                f"{self.rollback['to_version']}"
            )
        elif self.action == "halt" and self.halt.get("halted"):
            done = "; model halted (every service answers 503)"
        else:
            done = ""
        lost = sum(1 for d in self.alerts if d.route is not None and not d.delivered)
        if lost:
            done += f"; {lost} alert(s) not delivered (see alerts)"
        return f"CRITICAL guard finding(s){done}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "evaluated_at": self.evaluated_at,
            "monitor": self.monitor,
            "model": self.model,
            "severity": self.severity,
            "findings": [f.to_dict() for f in self.findings],
            "action": self.action,
            "rollback": self.rollback,
            "halt": self.halt,
            "inputs": self.inputs,
            "thresholds": self.thresholds,
            "alerts": [d.to_dict() for d in self.alerts],
        }


@dataclass(frozen=True)
class _GuardInputs:
    """What the guard evaluates: the monitors' latest numbers and the service's counts."""

    daily: list[tuple[date, float | None]]
    drawdown: float | None
    raw: ServiceHealth | None  # the counters as read, kept to difference the next run
    health: ServiceHealth | None  # the counters since the previous guard run
    drift: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "daily_sharpe": [(d.isoformat(), s) for d, s in self.daily],
            "max_drawdown": self.drawdown,
            "service": self.health.to_dict() if self.health else None,
            "service_raw": self.raw.to_dict() if self.raw else None,
            "drift_checked_at": self.drift["timestamp"] if self.drift else None,
        }


def _gather(
    monitor: str, metrics: str | None, token: str | None, t: GuardThresholds, ws: Workspace
) -> _GuardInputs:
    history = PerformanceMonitor(name=monitor, workspace=ws).metrics_history(days=t.sharpe_days)
    raw = read_service_health(metrics, token=token) if metrics else None
    return _GuardInputs(
        daily=[(as_utc(h["computed_at"]).date(), h.get("sharpe")) for h in history],
        drawdown=history[-1].get("max_drawdown") if history else None,
        raw=raw,
        health=raw.since(*previous_service_counts(monitor, workspace=ws)) if raw else None,
        drift=latest_drift_run(workspace=ws),
    )


def run_guard(
    *,
    model: str | None = None,
    metrics: str | None = None,
    token: str | None = None,
    auto_rollback: bool = False,
    monitor: str = "production",
    thresholds: GuardThresholds | None = None,
    halt_on_critical: bool = True,
    alerts: AlertSink | None = None,
    workspace: Workspace | None = None,
    tracking_uri: str | None = None,
) -> GuardResult:
    """Gather the inputs, evaluate, act on CRITICAL, record the event, deliver the alerts.

    Inputs: the performance monitor's daily metrics history (``monitor_metrics``), the latest
    recorded drift check, and the service's ``/metrics`` (URL or snapshot file, optional).

    On a CRITICAL finding with ``model`` given: with ``auto_rollback``, ``production`` moves
    back to the previous version through the registry (the findings are the recorded reason)
    and every running service follows it; without it, or when the rollback fails, the model is
    halted (the kill switch, :func:`quantcli.models.deployment.halt`) unless
    ``halt_on_critical`` is false. Then every CRITICAL and WARNING finding is delivered through
    ``alerts`` (default: the ``[alerts]`` section of the workspace's config, i.e. the log only
    unless it names webhooks), all within one ``delivery_budget_s``; the deliveries are the
    result's ``alerts``. A bad ``[alerts]`` section (an unset ``env:NAME``, a dead-letter path
    that cannot be created) is an :class:`InputError` before anything is read or recorded.

    ``thresholds`` default to the ``[guard]`` section of the workspace's config;
    ``tracking_uri`` is deprecated (the workspace's registry is used).
    """
    if auto_rollback and not model:
        raise InputError("--auto-rollback needs --model NAME (the registered model to roll back)")
    ws = workspace or Workspace.from_env()
    if tracking_uri is not None:
        ws = replace(ws, tracking_uri=tracking_uri)
    t = thresholds or GuardThresholds.from_config(ws.config, source=ws.config_path)
    sink = alerts if alerts is not None else AlertSink(AlertConfig.from_config(ws.config))
    sink.config.check_dead_letter()
    inputs = _gather(monitor, metrics, token, t, ws)
    findings = evaluate_guard(
        daily_sharpe=inputs.daily,
        max_drawdown=inputs.drawdown,
        error_rate=inputs.health.error_rate if inputs.health else None,
        slow_share=inputs.health.slow_share if inputs.health else None,
        n_drifted=inputs.drift["n_drifted"] if inputs.drift else None,
        thresholds=t,
    )
    severity = worst_severity(findings)
    critical = [f for f in findings if f.severity == "CRITICAL"]
    action = "rollback-failed"  # what the alerts say if _act raises (it re-raises that only)
    try:
        action, detail = _act(
            model,
            critical,
            auto_rollback=auto_rollback,
            halt_on_critical=halt_on_critical,
            ws=ws,
            record=lambda act, det: record_guard_event(
                utc_now(), monitor, severity, findings, act, det, inputs.raw, ws
            ),
        )
        evaluated_at = utc_now()
        event_id = record_guard_event(
            evaluated_at, monitor, severity, findings, action, detail, inputs.raw, ws
        )
    except Exception:
        _deliver(sink, findings, model, action)  # on-call must hear of a failed rollback too
        raise
    deliveries = _deliver(sink, findings, model, action)
    return GuardResult(
        passed=not critical,
        reasons=[f.message for f in critical],
        event_id=event_id,
        evaluated_at=evaluated_at.isoformat(),
        monitor=monitor,
        model=model,
        severity=severity,
        findings=tuple(findings),
        action=action,
        rollback=(detail or None) if action.startswith("rollback") else None,
        halt=detail if action == "halt" else (detail or {}).get("halt"),
        inputs=inputs.to_dict(),
        thresholds=asdict(t),
        alerts=deliveries,
    )


def _deliver(
    sink: AlertSink, findings: list[Finding], model: str | None, action: str
) -> tuple[Delivery, ...]:
    """Send the findings' alerts, worst first, all within one ``delivery_budget_s``: past it
    the remaining ones are dead-lettered without an attempt."""
    deadline = time.monotonic() + sink.config.delivery_budget_s
    alerts = finding_alerts(findings, source="qcli monitor guard", model=model, action=action)
    return tuple(sink.send(alert, deadline=deadline) for alert in alerts)


def _act(
    model: str | None,
    critical: list[Finding],
    *,
    auto_rollback: bool,
    halt_on_critical: bool,
    ws: Workspace,
    record: Callable[[str, dict[str, Any]], Any],
) -> tuple[str, dict[str, Any]]:
    """What the guard does on CRITICAL findings: roll ``production`` back (``auto_rollback``)
    or halt the model; ``("none", {})`` otherwise. A failed rollback halts the model (unless
    ``halt_on_critical`` is false), is recorded through ``record`` and re-raised: the event
    must say it failed."""
    if critical and auto_rollback:
        reason = "guard auto-rollback: " + "; ".join(f.message for f in critical)
        try:
            done = ModelRegistry(ws).rollback(model, reason=reason)
            return "rollback", jsonable(done)
        except Exception as exc:
            detail = {"error": str(exc), "reason": reason}
            if halt_on_critical:
                detail["halt"] = _halt(model, critical, ws)
            record("rollback-failed", detail)
            raise
    if critical and model and halt_on_critical:
        return "halt", _halt(model, critical, ws)
    return "none", {}


def _halt(model: str, critical: list[Finding], ws: Workspace) -> dict[str, Any]:
    """The kill switch on ``model``, the CRITICAL findings as the reason (its result, or why
    it could not be set)."""
    reason = "guard CRITICAL: " + "; ".join(f.message for f in critical)
    try:
        return jsonable(halt(ModelRegistry(ws), model, reason=reason[:1000]))
    except Exception as exc:  # the rollback error (if any) is the one re-raised
        return {"halted": False, "error": str(exc), "reason": reason}


def record_guard_event(
    when: datetime,
    monitor: str,
    severity: str,
    findings: list[Finding],
    action: str,
    detail: dict[str, Any],
    service: ServiceHealth | None = None,
    workspace: Workspace | None = None,
) -> str:
    """Append one evaluation (and the rollback it did, if any) to ``monitor_guard_events``;
    ``service`` is the raw :class:`ServiceHealth` read (kept to difference the next run)."""
    event_id = uuid.uuid4().hex[:16]
    with monitoring_store(store_file(workspace)) as store, store.transaction() as con:
        con.execute(
            "INSERT INTO monitor_guard_events VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                event_id,
                when,
                monitor,
                severity,
                json.dumps([f.to_dict() for f in findings]),
                action,
                json.dumps(detail, default=str),
                json.dumps(service.to_dict()) if service is not None else None,
            ],
        )
    return event_id


def previous_service_counts(
    monitor: str, *, workspace: Workspace | None = None
) -> tuple[dict[str, Any] | None, str | None]:
    """The raw service counts of the last guard run that read any, and when it ran."""
    with monitoring_store(store_file(workspace)) as store:
        row = store.con.execute(
            "SELECT service, evaluated_at FROM monitor_guard_events WHERE monitor = ? "
            "AND service IS NOT NULL ORDER BY evaluated_at DESC LIMIT 1",
            [monitor],
        ).fetchone()
    if row is None:
        return None, None
    return json.loads(row[0]), as_utc(row[1]).isoformat()


__all__ = [
    "SEVERITIES",
    "THRESHOLD_CHECKS",
    "Finding",
    "GuardResult",
    "GuardThresholds",
    "evaluate_guard",
    "previous_service_counts",
    "record_guard_event",
    "run_guard",
    "worst_severity",
]
