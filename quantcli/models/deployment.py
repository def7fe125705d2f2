"""What every running service must serve, stored in the registry so that every replica agrees.

The deployment of a registered model is its ``production`` alias plus two registered-model tags:

``quantcli.rollout``
    JSON ``{"version", "share", "mode", "set_at", "deployed_at", "by", "reason", "override"}``:
    a candidate version and the share of live traffic it serves (``mode="canary"``), or a
    candidate scored on every request off the hot path without answering any
    (``mode="shadow"``, share 0). ``deployed_at`` is when this candidate first got its role
    (kept across share steps); ``override`` is ``None`` or the recorded governance override
    (``{"reason", "by", "at", "overridden"}``) of a candidate whose gates do not pass.
``quantcli.halt``
    JSON ``{"reason", "at", "by"}`` while the kill switch is on: every service answers 503.
``quantcli.resume``
    JSON ``{"reason", "at", "by"}`` of the last ``resume``, so that a service records the
    operator's reason when it lifts the halt.

A canary that answers live traffic (share > 0) must pass the same required verdicts as a
promotion (the floor plus the config's gates, :func:`~quantcli.models.verdicts.with_floor`),
checked at every share step, unless ``force`` with a ``reason`` records an override (as
``promote`` does). A canary moves through :data:`SHARE_STEPS` (0.1 -> 0.5 -> 1.0), one step at a
time, then :func:`promote_rollout` promotes the candidate through the gated
:meth:`~quantcli.models.registry.ModelRegistry.promote` and clears the rollout; share 0 aborts.
Every change is also a row of ``registry_events`` (actions ``rollout``, ``halt``, ``resume``).
A service reads all of it with one registry call per poll (:func:`read_state`).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from quantcli.errors import InputError, NotFoundError
from quantcli.models import tags as T
from quantcli.models.events import RegistryEvent, current_actor
from quantcli.models.lifecycle import PromotionResult, apply_event, registry_lock
from quantcli.models.verdicts import GATE_FLOOR, required_verdicts, with_floor
from quantcli.models.versions import check_model_name
from quantcli.results import Result

ROLLOUT_TAG = "quantcli.rollout"
HALT_TAG = "quantcli.halt"
RESUME_TAG = "quantcli.resume"
#: The canary's traffic shares, in order; 0 aborts the rollout.
SHARE_STEPS = (0.1, 0.5, 1.0)
MODES = ("canary", "shadow")


@dataclass(frozen=True)
class DeploymentState:
    """One read of a model's deployment (see the module docstring).

    ``candidate``/``share``/``mode`` describe the rollout (``None``/0.0/``None`` without one),
    ``deployed_at`` when the candidate got its role and ``override`` its recorded gate override
    (``None`` when its gates passed); ``halt`` and ``resumed`` are ``None`` or
    ``{"reason", "at", "by"}`` (the kill switch, and the last time it was lifted).
    """

    name: str
    aliases: dict[str, str]
    candidate: str | None = None
    share: float = 0.0
    mode: str | None = None
    halt: dict[str, Any] | None = None
    deployed_at: str | None = None
    override: dict[str, Any] | None = None
    resumed: dict[str, Any] | None = None

    @property
    def production(self) -> str | None:
        return self.aliases.get(T.ALIAS_PRODUCTION)

    @property
    def halted(self) -> bool:
        return self.halt is not None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["production"] = self.production
        d["halted"] = self.halted
        return d


@dataclass(frozen=True, kw_only=True)
class RolloutResult(Result):
    """``qcli model rollout``: the candidate stored with its share, or the rollout aborted."""

    name: str
    aborted: bool
    candidate: str | None = None  # the aborted candidate
    version: str | None = None
    share: float = 0.0
    mode: str | None = None
    set_at: str | None = None
    deployed_at: str | None = None
    by: str | None = None
    reason: str | None = None
    event: dict[str, Any] | None = None
    required_verdicts: list[str] | None = None
    override: dict[str, Any] | None = None

    failure_message: ClassVar[str] = "rollout refused: the candidate's gates do not pass"

    def failure_hint(self) -> str | None:
        return (
            "a canary answers live traffic: record the gates (qcli model validate / export / "
            "scan), or record an override (qcli model rollout ... --force --reason TEXT)"
        )

    def to_dict(self) -> dict[str, Any]:
        if self.aborted:
            return {"name": self.name, "aborted": True, "candidate": self.candidate, "share": 0.0}
        return {
            "name": self.name,
            "aborted": False,
            "passed": self.passed,
            "reasons": list(self.reasons),
            "event": self.event,
            "version": self.version,
            "share": self.share,
            "mode": self.mode,
            "set_at": self.set_at,
            "deployed_at": self.deployed_at,
            "by": self.by,
            "reason": self.reason,
            "required_verdicts": self.required_verdicts,
            "override": self.override,
        }


@dataclass(frozen=True, kw_only=True)
class CanaryPromotion(Result):
    """``qcli model rollout --promote``: the canary promoted through the gated promote."""

    name: str
    candidate: str
    promote: PromotionResult

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "candidate": self.candidate, "promote": self.promote.to_dict()}


@dataclass(frozen=True, kw_only=True)
class KillSwitch(Result):
    """``qcli model halt`` / ``resume``: the kill switch set (with when and by whom) or lifted."""

    name: str
    halted: bool
    reason: str
    at: str | None = None
    by: str | None = None
    event: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "halted": self.halted, "reason": self.reason}
        if self.halted:
            out.update(at=self.at, by=self.by)
        out["event"] = self.event
        return out


def _parse_tag(raw: str | None, tag: str) -> dict[str, Any] | None:
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        # a hand-edited tag must not silently disable the kill switch or a rollout
        raise InputError(f"registry tag {tag} is not a JSON object: {raw[:80]!r}")
    return value


def read_state(registry: Any, name: str) -> DeploymentState:
    """The deployment of ``name`` in one registry call (NotFoundError if the model is unknown)."""
    from mlflow.exceptions import MlflowException

    try:
        rm = registry.client.get_registered_model(name)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            raise NotFoundError(
                f"no registered model '{name}' in {registry.tracking_uri}"
            ) from None
        raise
    tags = dict(rm.tags or {})
    aliases = {a: str(v) for a, v in (rm.aliases or {}).items()}
    rollout = _parse_tag(tags.get(ROLLOUT_TAG), ROLLOUT_TAG)
    halt = _parse_tag(tags.get(HALT_TAG), HALT_TAG)
    resumed = _parse_tag(tags.get(RESUME_TAG), RESUME_TAG)
    if rollout is None:
        return DeploymentState(name, aliases, halt=halt, resumed=resumed)
    override = rollout.get("override")
    return DeploymentState(
        name,
        aliases,
        candidate=str(rollout.get("version")),
        share=float(rollout.get("share", 0.0)),
        mode=str(rollout.get("mode", "canary")),
        halt=halt,
        deployed_at=rollout.get("deployed_at") or rollout.get("set_at"),
        override=override if isinstance(override, dict) else None,
        resumed=resumed,
    )


def _record(
    registry: Any,
    event: RegistryEvent,
    tag: str,
    value: dict[str, Any] | None,
    store_path: str | os.PathLike[str] | None,
    also: dict[str, dict[str, Any] | None] | None = None,
) -> None:
    """Insert ``event`` and set (or delete, ``value=None``) the tag -- and the ``also`` tags the
    same way -- all or nothing."""
    client, name = registry.client, event.model_name
    values = {tag: value, **(also or {})}
    tags = client.get_registered_model(name).tags or {}
    before = {t: tags.get(t) for t in values}
    new = {t: None if v is None else json.dumps(v, sort_keys=True) for t, v in values.items()}

    def put(texts: dict[str, str | None]) -> None:
        for t, text in texts.items():
            if text is not None:
                client.set_registered_model_tag(name, t, text)
            elif before[t] is not None or values[t] is not None:
                client.delete_registered_model_tag(name, t)  # MLflow refuses a missing tag

    apply_event(registry, event, lambda: put(new), lambda: put(before), store_path)


def _reason(reason: str | None, option: str = "--reason") -> str:
    if reason is None or not reason.strip():
        raise InputError(f"{option} is required: say why (it is recorded)")
    if len(reason) > 1000:
        raise InputError(f"{option} is {len(reason)} characters long; at most 1000")
    return reason.strip()


def rollout(
    registry: Any,
    name: str,
    version: str | int,
    share: float,
    *,
    mode: str = "canary",
    reason: str | None = None,
    force: bool = False,
    required: list[str] | None = None,
    store_path: str | os.PathLike[str] | None = None,
) -> RolloutResult:
    """Store ``version`` as the candidate of ``name`` with traffic ``share``; 0 aborts.

    A canary's share moves one step of :data:`SHARE_STEPS` at a time (repeating the current
    step is a no-op); ``mode="shadow"`` scores every request off the hot path (share 0).

    A canary answers live traffic, so every step with a share above 0 requires the verdicts a
    promotion requires (``required`` raised to the floor; default the workspace's policy). A
    refusal raises :class:`~quantcli.errors.GateFailedError` (exit 1) and changes nothing;
    ``force`` with a ``reason`` stores the step with the override recorded (who, when, why,
    which gates), which services then honour. A shadow answers nothing and is not gated.
    """
    check_model_name(name)
    if mode not in MODES:
        raise InputError(f"--mode must be one of {', '.join(MODES)}, got --mode {mode!r}")
    if isinstance(share, bool) or not isinstance(share, int | float) or not math.isfinite(share):
        raise InputError(f"--share must be a number, got --share {share!r}")
    if force and not (reason and reason.strip()):
        raise InputError(
            "--force needs --reason: a governance override must say why",
            hint='e.g. --force --reason "risk committee approved, ticket RISK-123"',
        )
    share = float(share)
    with registry_lock(name, registry.workspace.locks_dir):
        state = read_state(registry, name)
        if share == 0.0 and mode == "canary":
            return _abort(registry, state, reason, store_path)
        info = registry.resolve(name, version)  # exists (NotFoundError otherwise)
        version = str(info.version)
        if version == state.production:
            raise InputError(f"{name} v{version} is already production: nothing to roll out")
        share = 0.0 if mode == "shadow" else _next_step(state, version, share)
        gates, override = _gate_canary(registry, info, share, force, reason, required)
        if gates["reasons"] and override is None:
            return RolloutResult(
                passed=False,
                reasons=gates["reasons"],
                name=name,
                aborted=False,
                version=version,
                share=share,
                mode=mode,
                required_verdicts=gates["required"],
            ).raise_if_failed()
        now = datetime.now(UTC).isoformat()
        same_role = state.candidate == version and state.mode == mode
        value = {
            "version": version,
            "share": share,
            "mode": mode,
            "set_at": now,
            # when the candidate got its role: a share step does not redeploy it
            "deployed_at": (state.deployed_at if same_role else None) or now,
            "by": current_actor(),
            "reason": reason or "",
            "override": override,
        }
        event = RegistryEvent(
            action="rollout",
            model_name=name,
            from_version=state.production,
            to_version=state.production,
            reason=reason or f"{mode} of v{version} at share {share:g}",
            tracking_uri=registry.tracking_uri,
            forced=override is not None,
            details={
                "candidate": version,
                "share": share,
                "mode": mode,
                "required_verdicts": gates["required"],
                "gate_reasons": gates["reasons"],
                "overridden": gates["reasons"] if override is not None else [],
            },
        )
        _record(registry, event, ROLLOUT_TAG, value, store_path)
    return RolloutResult(
        passed=True,
        name=name,
        aborted=False,
        event=event.to_dict(),
        required_verdicts=gates["required"],
        **value,
    )


def _abort(
    registry: Any,
    state: DeploymentState,
    reason: str | None,
    store_path: str | os.PathLike[str] | None,
) -> RolloutResult:
    """End the rollout of ``state`` (NotFoundError when there is none)."""
    if state.candidate is None:
        raise NotFoundError(f"model '{state.name}' has no rollout to abort")
    event = RegistryEvent(
        action="rollout",
        model_name=state.name,
        from_version=state.production,
        to_version=state.production,
        reason=reason or "rollout aborted",
        tracking_uri=registry.tracking_uri,
        details={"aborted": state.candidate, "share": 0.0, "mode": state.mode},
    )
    _record(registry, event, ROLLOUT_TAG, None, store_path)
    return RolloutResult(passed=True, name=state.name, aborted=True, candidate=state.candidate)


def _next_step(state: DeploymentState, version: str, share: float) -> float:
    """``share`` when it is the canary's next step of :data:`SHARE_STEPS` (or its current one),
    else InputError naming the step to take."""
    current = state.share if state.candidate == version and state.mode == "canary" else 0.0
    following = [s for s in SHARE_STEPS if s > current][:1]
    if share not in following + ([current] if current else []):
        step = f"--share {following[0]:g}" if following else "--promote"
        raise InputError(
            f"--share {share:g}: the canary of v{version} is at {current:g}; "
            f"the next step is {step}",
            hint="steps are 0.1 -> 0.5 -> 1.0, then qcli model rollout NAME --promote; "
            "--share 0 aborts",
        )
    return share


def _gate_canary(
    registry: Any,
    info: Any,
    share: float,
    force: bool,
    reason: str | None,
    required: list[str] | None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``({"required", "reasons"}, override)`` of a rollout step: the promotion's gates when the
    step answers live traffic (none for a shadow), and the override record when ``force``
    lifts failing gates."""
    if share <= 0.0:
        return {"required": [], "reasons": []}, None
    requested = list(required) if required is not None else _policy(registry)
    gates = with_floor(requested)
    reasons = list(registry.gate_reasons(info, gates))
    override = None
    if reasons and force:
        override = {
            "reason": (reason or "").strip(),
            "by": current_actor(),
            "at": datetime.now(UTC).isoformat(),
            "overridden": reasons,
            "policy": {"floor": list(GATE_FLOOR), "requested": requested, "required": gates},
        }
    return {"required": gates, "reasons": reasons}, override


def _policy(registry: Any) -> list[str]:
    """The workspace's required verdicts (the floor when the registry has no workspace)."""
    workspace = getattr(registry, "workspace", None)
    return required_verdicts(workspace.config if workspace is not None else None)


def promote_rollout(
    registry: Any,
    name: str,
    *,
    reason: str | None = None,
    required: list[str] | None = None,
    store_path: str | os.PathLike[str] | None = None,
) -> CanaryPromotion:
    """Promote the canary at share 1.0 through the gated promote, then clear the rollout."""
    state = read_state(registry, name)
    if state.candidate is None or state.mode != "canary" or state.share != 1.0:
        raise InputError(
            f"model '{name}' has no canary at share 1.0 to promote "
            f"(candidate {state.candidate or 'none'}, share {state.share:g})",
            hint="step the canary first: qcli model rollout NAME --version V --share 1.0",
        )
    result = registry.promote(
        name, state.candidate, reason=reason, required=required, store_path=store_path
    )
    clear = RegistryEvent(
        action="rollout",
        model_name=name,
        from_version=result.get("previous_version"),
        to_version=state.candidate,
        reason="canary promoted",
        tracking_uri=registry.tracking_uri,
        details={"promoted": state.candidate},
    )
    _record(registry, clear, ROLLOUT_TAG, None, store_path)
    return CanaryPromotion(passed=True, name=name, candidate=state.candidate, promote=result)


def halt(
    registry: Any,
    name: str,
    *,
    reason: str | None,
    store_path: str | os.PathLike[str] | None = None,
) -> KillSwitch:
    """Turn the kill switch on: every service of ``name`` answers 503 with ``reason``."""
    check_model_name(name)
    why = _reason(reason)
    value = {"reason": why, "at": datetime.now(UTC).isoformat(), "by": current_actor()}
    event = _switch(registry, name, "halt", why, value, store_path)
    return KillSwitch(passed=True, name=name, halted=True, event=event.to_dict(), **value)


def resume(
    registry: Any,
    name: str,
    *,
    reason: str | None,
    store_path: str | os.PathLike[str] | None = None,
) -> KillSwitch:
    """Turn the kill switch off (NotFoundError when ``name`` is not halted)."""
    check_model_name(name)
    why = _reason(reason)
    value = {"reason": why, "at": datetime.now(UTC).isoformat(), "by": current_actor()}
    # the lift's reason stays readable after the halt tag is gone: services record it
    also = {RESUME_TAG: value}
    event = _switch(registry, name, "resume", why, None, store_path, also)
    return KillSwitch(passed=True, name=name, halted=False, reason=why, event=event.to_dict())


def _switch(
    registry: Any,
    name: str,
    action: str,
    why: str,
    value: dict[str, Any] | None,
    store_path: str | os.PathLike[str] | None,
    also: dict[str, dict[str, Any] | None] | None = None,
) -> RegistryEvent:
    """Set (``halt``) or clear (``resume``) the kill switch tag under the model's lock."""
    with registry_lock(name, registry.workspace.locks_dir):
        state = read_state(registry, name)
        if action == "resume" and not state.halted:
            raise NotFoundError(f"model '{name}' is not halted: nothing to resume")
        details = {"already_halted": state.halted} if action == "halt" else {"halt": state.halt}
        event = RegistryEvent(
            action=action,
            model_name=name,
            from_version=state.production,
            to_version=state.production,
            reason=why,
            tracking_uri=registry.tracking_uri,
            details=details,
        )
        _record(registry, event, HALT_TAG, value, store_path, also)
    return event
