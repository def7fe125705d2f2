"""The gated lifecycle of a registered model: validate, promote, roll back.

Each workflow returns a typed result (:class:`ValidationResult`, :class:`PromotionResult`,
:class:`RollbackResult`); ``qcli model validate / promote / rollback`` render it and apply
``result.raise_if_failed()``, and :class:`~quantcli.models.registry.ModelRegistry` keeps its
raising methods on top of these functions.

* **Gated promotion, with a floor.** Every verdict of the policy must be ``pass`` and fresh,
  and every artifact of the version must verify; ``force`` with a ``reason`` overrides the
  gates (never integrity) and is recorded as an ``override``.
* **One writer at a time.** promote, rollback and the deployment changes hold an exclusive
  file lock per model (:func:`registry_lock`) around their read-modify-write.
* **All or nothing.** The ``registry_events`` row and the MLflow writes of one change share a
  transaction (:func:`apply_event`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from quantcli import config, integrity
from quantcli.errors import InputError, IntegrityError, NotFoundError
from quantcli.models import tags as T
from quantcli.models.events import RegistryEvent, insert_event
from quantcli.models.verdicts import (
    GATE_FLOOR,
    REGISTERED_FORMAT,
    THRESHOLD_FLOOR,
    judged_snapshot,
    registered_statement,
    required_verdicts,
    statuses,
    threshold_shortfalls,
    with_floor,
)
from quantcli.models.versions import ModelVersionInfo, check_model_name
from quantcli.results import Result
from quantcli.store.offline import OfflineStore

if TYPE_CHECKING:
    from quantcli.models.registry import ModelRegistry

StorePath = str | os.PathLike[str] | None


@contextmanager
def registry_lock(name: str, locks_dir: Path | None = None) -> Iterator[None]:
    """An exclusive inter-process lock for read-modify-write of model ``name``'s aliases and
    tags (``<locks_dir>/registry-<name>.lock``, default ``$QCLI_HOME/locks``)."""
    lock_dir = locks_dir or config.qcli_home(create=True) / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"registry-{name}.lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def apply_event(
    reg: ModelRegistry,
    event: RegistryEvent,
    changes: Callable[[], None],
    undo: Callable[[], None],
    store_path: StorePath = None,
) -> None:
    """Insert ``event`` into ``registry_events`` and run the MLflow ``changes``, all or nothing.

    The DuckDB insert and the MLflow writes share one transaction: if an MLflow call fails the
    row is rolled back and ``undo`` restores what MLflow had before.
    """
    with OfflineStore(store_path or reg.workspace.offline_path) as store:
        store.ensure_schema("schema_registry")
        try:
            with store.transaction():
                insert_event(store, event)
                changes()
        except Exception:
            undo()
            raise


# -- results ----------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class ValidationResult(Result):
    """``qcli model validate``: every required gate's verdict on one version."""

    name: str
    version: str
    required_verdicts: list[str]
    verdicts: dict[str, str]
    verdict_states: dict[str, dict[str, Any]]
    backtest_metrics: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "passed": self.passed,
            "required_verdicts": self.required_verdicts,
            "verdicts": self.verdicts,
            "verdict_states": self.verdict_states,
            "reasons": list(self.reasons),
            "backtest_metrics": self.backtest_metrics,
        }

    def message(self) -> str:
        return f"{self.name} v{self.version} did not pass validation"


@dataclass(frozen=True, kw_only=True)
class PromotionResult(Result):
    """``qcli model promote``: refused (``passed`` false), already production, or promoted.

    ``reasons`` are the gates that did not pass (overridden when ``forced``); ``note`` says why
    nothing changed for a version that already was production.
    """

    name: str
    version: str
    required_verdicts: list[str]
    policy: dict[str, list[str]]
    verdicts: dict[str, str]
    forced: bool = False
    promoted: bool = False
    previous_version: str | None = None
    history: list[str] | None = None
    event: dict[str, Any] | None = None
    note: str | None = None

    failure_hint_text: ClassVar[str] = (
        "fix the gates, or override with --force --reason '...' (recorded)"
    )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "required_verdicts": self.required_verdicts,
            "policy": self.policy,
            "verdicts": self.verdicts,
            "reasons": list(self.reasons),
            "forced": self.forced,
            "promoted": self.promoted,
        }
        if not self.passed:
            return out
        out["previous_version"] = self.previous_version
        if self.promoted:
            out["history"] = self.history
            out["event"] = self.event
        else:
            out["event"] = None
            out["message"] = self.note
        return out

    def message(self) -> str:
        n = len(self.reasons)
        return f"promotion of {self.name} v{self.version} refused: {n} gate(s) not passed"

    def failure_hint(self) -> str | None:
        return self.failure_hint_text


@dataclass(frozen=True, kw_only=True)
class RollbackResult(Result):
    """``qcli model rollback``: production moved from ``from_version`` to ``to_version``."""

    name: str
    from_version: str | None
    to_version: str
    history: list[str]
    event: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "rolled_back": True,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "history": self.history,
            "event": self.event,
        }


# -- validate ---------------------------------------------------------------------------------
def validate_version(
    reg: ModelRegistry,
    name: str,
    version: str | int | None = None,
    *,
    required: list[str] | None = None,
) -> ValidationResult:
    """Check a version's model bytes, record its backtest verdict, report every gate.

    The model files are downloaded and verified first (sha256, signature, binding to this
    version). The ``backtest`` verdict is the CPCV verdict signed into the registration record
    at training, with the model files, dataset manifest and run it judged -- never the run's
    editable tags -- and it fails when it was judged under thresholds looser than
    :data:`~quantcli.models.verdicts.THRESHOLD_FLOOR`. A missing or edited registration record
    is an :class:`IntegrityError`. ``parity`` and ``scan`` are read from the version as
    ``qcli model export`` / ``qcli model scan`` recorded them, and shown ``stale`` when an
    artifact they judged changed since. ``required`` defaults to the policy (floor + config);
    ``version`` to the ``staging`` version, else the latest. The backtest verdict is recorded
    whatever the outcome.
    """
    required = list(required) if required is not None else required_verdicts()
    info = reg.resolve(name, reg.candidate_version(name, version)[0])
    if not info.run_id:
        raise NotFoundError(f"{name} v{info.version} has no training run to validate")
    reg.verify_model(name, info.version)
    registered = _registered_snapshot(info)
    record = registered["backtest"]
    if record is None:
        verdict = T.FAIL
        run_reasons = [
            "the training backtest was not signed with the model at registration (registered "
            "before backtest verdicts were signed at training): train the model again"
        ]
        thresholds, metrics = None, {}
    else:
        verdict = record.get("verdict") if record.get("verdict") in T.VERDICT_VALUES else None
        run_reasons = list(record.get("reasons") or [])
        if verdict is None:
            verdict = T.FAIL
            run_reasons = [f"training run {info.run_id} recorded no CPCV backtest verdict"]
        thresholds, metrics = record.get("thresholds"), dict(record.get("metrics") or {})
        run_reasons += threshold_shortfalls(thresholds)
    passed = verdict == T.PASS and not run_reasons
    snapshot = judged_snapshot("backtest", registered["artifacts"], registered["dataset"])
    snapshot.update(
        {"run_id": info.run_id, "thresholds": thresholds, "floor": dict(THRESHOLD_FLOOR)}
    )
    reg.record_signed_verdict(info, "backtest", passed, run_reasons, snapshot)
    info = reg.resolve(name, info.version)
    reasons = reg.gate_reasons(info, required)
    return ValidationResult(
        passed=not reasons,
        reasons=reasons,
        name=name,
        version=info.version,
        required_verdicts=required,
        verdicts=statuses(info),
        verdict_states=info.verdict_states,
        backtest_metrics={k: v for k, v in sorted(metrics.items()) if v is not None},
    )


def _registered_snapshot(info: ModelVersionInfo) -> dict[str, Any]:
    """The signed record of the files and backtest registered with the training run.

    ``backtest`` is ``None`` for a record written before it carried the backtest. A missing
    record is refused like an edited one: the files there now are never taken as the ones
    registered.
    """
    raw, sig = info.tags.get(T.REGISTERED), info.tags.get(T.REGISTERED_SIG)
    if raw is None or sig is None:
        raise IntegrityError(
            f"{info.name} v{info.version}: no signed registration record of its model files "
            f"(tags {T.REGISTERED} / {T.REGISTERED_SIG}); refusing to bind a backtest verdict "
            "to whatever files are there now",
            hint="train the model again: qcli model train --name NAME",
        )
    try:
        integrity.verify_message(
            registered_statement(info.name, info.version, raw or ""),
            sig,
            "signing",
            what="the registration record",
        )
        snap = json.loads(raw or "")
        out = {
            "artifacts": dict(snap["artifacts"]),
            "dataset": snap["dataset"],
            "backtest": None,
        }
        if snap.get("format") == REGISTERED_FORMAT:
            if snap["run_id"] != info.run_id:
                raise IntegrityError(
                    f"the record names run {snap['run_id']}, the version run {info.run_id}"
                )
            out["backtest"] = dict(snap["backtest"])
        return out
    except (IntegrityError, ValueError, KeyError, TypeError) as exc:
        why = exc.message if isinstance(exc, IntegrityError) else "unreadable"
        raise IntegrityError(
            f"{info.name} v{info.version}: the registration record of its model files was "
            f"edited ({why}); refusing to bind a backtest verdict to it"
        ) from None


# -- promote ----------------------------------------------------------------------------------
def promote_version(
    reg: ModelRegistry,
    name: str,
    version: str | int | None = None,
    *,
    force: bool = False,
    reason: str | None = None,
    required: list[str] | None = None,
    store_path: StorePath = None,
) -> PromotionResult:
    """Move alias ``production`` to ``version`` (default: the ``staging`` version), gated.

    A refusal is a failed result and changes nothing. Raises :class:`IntegrityError` when an
    artifact of the version does not verify (``force`` does not override this) and
    :class:`InputError` for ``force`` without a ``reason``.
    """
    check_model_name(name)
    if force and not (reason and reason.strip()):
        raise InputError(
            "--force needs --reason: a governance override must say why",
            hint='e.g. --force --reason "risk committee approved, ticket RISK-123"',
        )
    requested = list(required) if required is not None else required_verdicts()
    required = with_floor(requested)
    policy = {"floor": list(GATE_FLOOR), "requested": requested, "required": required}
    target = _default_version(reg, name, version)
    info = reg.resolve(name, target)
    # integrity is not a gate a human may override: a tampered artifact is never promoted
    reg.verify_all(info)
    reasons = reg.gate_reasons(info, required)
    verdict: dict[str, Any] = {
        "name": name,
        "version": target,
        "required_verdicts": required,
        "policy": policy,
        "verdicts": statuses(info),
        "reasons": reasons,
        "forced": bool(force and reasons),
    }
    if reasons and not force:
        return PromotionResult(passed=False, **verdict)
    with registry_lock(name, reg.workspace.locks_dir):
        previous = reg.alias_version(name, T.ALIAS_PRODUCTION)
        if previous == target:
            note = f"{name} v{target} is already production"
            return PromotionResult(passed=True, previous_version=previous, note=note, **verdict)
        history = reg.production_history(name)
        if previous is not None:
            history.append(previous)
        event = RegistryEvent(
            action="override" if verdict["forced"] else "promote",
            model_name=name,
            from_version=previous,
            to_version=target,
            reason=reason or ("; ".join(reasons) if reasons else "all required gates passed"),
            tracking_uri=reg.tracking_uri,
            forced=verdict["forced"],
            details={
                "required_verdicts": required,
                "policy": policy,
                "verdicts": verdict["verdicts"],
                "gate_reasons": reasons,
                "overridden": reasons if verdict["forced"] else [],
                "history": history,
                "backtest_thresholds": (info.verdict_states.get("backtest") or {}).get(
                    "thresholds"
                ),
                "threshold_floor": dict(THRESHOLD_FLOOR),
            },
        )
        _apply_production(reg, event, history, _promote_changes(reg, event), store_path)
    return PromotionResult(
        passed=True,
        promoted=True,
        previous_version=previous,
        history=history,
        event=event.to_dict(),
        **verdict,
    )


def _default_version(reg: ModelRegistry, name: str, version: str | int | None) -> str:
    if version is None and reg.alias_version(name, T.ALIAS_STAGING) is None:
        raise NotFoundError(
            f"model '{name}' has no 'staging' version to promote",
            hint="give --version V, or train one: qcli model train --name NAME",
        )
    return reg.candidate_version(name, version)[0]


def _promote_changes(reg: ModelRegistry, event: RegistryEvent) -> Callable[[], None]:
    def apply() -> None:
        name, target, previous = event.model_name, event.to_version, event.from_version
        reg.client.set_registered_model_alias(name, T.ALIAS_PRODUCTION, target)
        reg.set_version_tags(
            name,
            target,
            {
                T.STATUS: T.STATUS_PRODUCTION,
                T.PROMOTED_BY: event.actor,
                T.PROMOTED_AT: event.ts.isoformat(),
                T.PROMOTION_REASON: event.reason or "",
                T.OVERRIDE: "true" if event.forced else "false",
                T.OVERRIDE_DETAIL: {
                    "reason": event.reason,
                    "os_user": event.actor,
                    "at": event.ts.isoformat(),
                    "policy": event.details.get("policy"),
                    "overridden": event.details.get("overridden", []),
                }
                if event.forced
                else "",
                T.LAST_EVENT: event.to_tag(),
            },
        )
        if previous is not None:
            reg.set_version_tags(
                name, previous, {T.STATUS: T.STATUS_ARCHIVED, T.LAST_EVENT: event.to_tag()}
            )

    return apply


# -- rollback ---------------------------------------------------------------------------------
def rollback_version(
    reg: ModelRegistry, name: str, *, reason: str | None = None, store_path: StorePath = None
) -> RollbackResult:
    """Move ``production`` back to the previous production version, in one step.

    Raises :class:`NotFoundError` (exit 2) when there is no previous production version, and
    :class:`IntegrityError` (exit 1) when its artifacts do not verify; nothing changes then.
    """
    check_model_name(name)
    with registry_lock(name, reg.workspace.locks_dir):
        current = reg.alias_version(name, T.ALIAS_PRODUCTION)
        history = reg.production_history(name)
        if not history:
            raise NotFoundError(
                f"model '{name}' has no previous production version to roll back to",
                hint=f"see the history: qcli model list {name}",
            )
        target = history.pop()
        # never roll back onto a modified artifact: serving would refuse it a moment later
        reg.verify_model(name, target)
        event = RegistryEvent(
            action="rollback",
            model_name=name,
            from_version=current,
            to_version=target,
            reason=reason or "manual rollback",
            tracking_uri=reg.tracking_uri,
            details={"history": history},
        )

        def apply() -> None:
            reg.client.set_registered_model_alias(name, T.ALIAS_PRODUCTION, target)
            reg.set_version_tags(
                name, target, {T.STATUS: T.STATUS_PRODUCTION, T.LAST_EVENT: event.to_tag()}
            )
            if current is not None:
                reg.set_version_tags(
                    name, current, {T.STATUS: T.STATUS_ROLLED_BACK, T.LAST_EVENT: event.to_tag()}
                )

        _apply_production(reg, event, history, apply, store_path)
    return RollbackResult(
        passed=True,
        name=name,
        from_version=current,
        to_version=target,
        history=history,
        event=event.to_dict(),
    )


def _apply_production(
    reg: ModelRegistry,
    event: RegistryEvent,
    history: list[str],
    changes: Callable[[], None],
    store_path: StorePath,
) -> None:
    """:func:`apply_event` for a move of ``production``: the alias, tags and the history."""
    name = event.model_name
    before_alias = reg.alias_version(name, T.ALIAS_PRODUCTION)
    before_history = reg.production_history(name)

    def change() -> None:
        changes()
        reg.client.set_registered_model_tag(name, T.PRODUCTION_HISTORY, json.dumps(history))

    def undo() -> None:
        if before_alias is None:
            # the alias may never have been set: restoring "no alias" is best effort
            with contextlib.suppress(Exception):
                reg.client.delete_registered_model_alias(name, T.ALIAS_PRODUCTION)
        else:
            reg.client.set_registered_model_alias(name, T.ALIAS_PRODUCTION, before_alias)
        reg.client.set_registered_model_tag(name, T.PRODUCTION_HISTORY, json.dumps(before_history))

    apply_event(reg, event, change, undo, store_path)


__all__ = [
    "PromotionResult",
    "RollbackResult",
    "ValidationResult",
    "apply_event",
    "promote_version",
    "registry_lock",
    "rollback_version",
    "validate_version",
]
