"""A running service follows the registry: alias moves, canary shares, shadows and the kill switch.

:class:`RegistryFollower` re-reads the model's deployment (:func:`quantcli.models.deployment
.read_state`: one registry call) every ``poll_interval_s`` seconds on a background thread, and
on demand (the service's authenticated ``POST /admin/reload``). When a version to serve changes
it is loaded and verified off the request path -- signature and sha256
(:class:`~quantcli.serving.runtime.InferenceRuntime`), the features it needs exist in the
store, and one live feature row gives a finite prediction -- and only then swapped in, as one
new :class:`~quantcli.serving.deployment.Deployment` (requests in flight finish on the old one).

A canary candidate answers live traffic only when its required verdicts pass (the floor plus the
config's gates, as for a promotion) or the rollout records a governance override
(:func:`quantcli.models.deployment.rollout` with ``force`` and a ``reason``): the rollout
checks this, and the service checks it again before routing a request to the candidate, and
again every ``retry_after_s`` while it does.

A version that fails to load or verify is never served: the old one keeps serving, an alert is
raised through the ``alert`` callable the caller passes in (CRITICAL for the production arm,
WARNING for a candidate or shadow) and an audit record ``event: "swap_refused"`` names the
version and the error. The load is retried after ``retry_after_s``; the alert is raised once
per version. A registry that cannot be read keeps the last deployment (a service never stops
serving because the registry is down). The last ``RUNTIME_CACHE`` verified runtimes stay
loaded, so going back to one of them (a rollback, a canary aborted) swaps without loading anything.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from quantcli.config import DEFAULTS
from quantcli.errors import InputError
from quantcli.models.deployment import read_state
from quantcli.models.registry import ModelRegistry
from quantcli.models.verdicts import required_verdicts, with_floor
from quantcli.serving.deployment import Deployment
from quantcli.serving.registered import production_deployed_at, resolve_workspace
from quantcli.serving.runtime import InferenceRuntime
from quantcli.workspace import Workspace

log = logging.getLogger("quantcli.serving")
# alert(severity, title, details): CRITICAL or WARNING, a one-line title, a JSON-able dict
AlertFn = Callable[[str, str, dict[str, Any]], None]
_S = DEFAULTS["serving"]
RUNTIME_CACHE = 4


@dataclass(frozen=True)
class ServingConfig:
    """The ``[serving]`` section; InputError naming the key for a bad value."""

    poll_interval_s: float = _S["poll_interval_s"]
    max_body_bytes: int = _S["max_body_bytes"]
    shadow_queue: int = _S["shadow_queue"]

    def __post_init__(self) -> None:
        p = self.poll_interval_s
        if isinstance(p, bool) or not isinstance(p, int | float) or not math.isfinite(p):
            raise InputError(f"[serving] poll_interval_s must be seconds, got {p!r}")
        if not 0.05 <= p <= 300:
            raise InputError(f"[serving] poll_interval_s must be in [0.05, 300] s, got {p}")
        for key, lo, hi in (("max_body_bytes", 1024, 1 << 30), ("shadow_queue", 1, 1_000_000)):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise InputError(
                    f"[serving] {key} must be a whole number in [{lo}, {hi}], got {v!r}"
                )

    @classmethod
    def from_config(cls, cfg: dict[str, dict[str, Any]]) -> ServingConfig:
        return cls(**cfg["serving"])


class RegistryFollower:
    """Keeps ``predictor`` serving what the registry says for model ``name``.

    Parameters
    ----------
    predictor
        The service's :class:`~quantcli.serving.predict.Predictor`.
    name, alias
        The registered model and the alias the service follows (``production`` or
        ``staging``); canary shares apply to ``production`` only.
    shadow_alias
        Score every request with the version of this alias too (``--shadow-alias``); without
        it, a shadow stored by ``qcli model rollout --mode shadow`` is used.
    interval_s
        Seconds between polls.
    alert
        Called as ``alert(severity, title, details)`` for a version that fails to load and for
        an unreadable registry; ``qcli serve`` passes one that delivers through the
        ``[alerts]`` routes. Default: log only.
    workspace
        Where the registry is (default :meth:`Workspace.from_env`); ``tracking_uri`` is a
        deprecated alias.
    """

    def __init__(
        self,
        predictor: Any,
        name: str,
        *,
        alias: str = "production",
        shadow_alias: str | None = None,
        workspace: Workspace | None = None,
        interval_s: float = _S["poll_interval_s"],
        alert: AlertFn | None = None,
        registry: Any = None,
        retry_after_s: float = 30.0,
        tracking_uri: str | None = None,
    ) -> None:
        ServingConfig(poll_interval_s=interval_s)
        self.predictor = predictor
        self.name = name
        self.alias = alias
        self.shadow_alias = shadow_alias
        self.workspace = resolve_workspace(workspace, tracking_uri)
        self.interval_s = float(interval_s)
        self.retry_after_s = retry_after_s
        self._registry = registry
        self._send_alert = alert
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed: dict[tuple[str, str], tuple[float, str]] = {}
        # the last verified runtimes by version: rolling back to one of them is instant
        self._runtimes: OrderedDict[str, Any] = OrderedDict()
        served = predictor.deployment.production
        if served.version is not None:
            self._runtimes[str(served.version)] = served.runtime
        self._alerted: set[tuple[str, str]] = set()
        # the candidate's last gate check: (version, share, override) -> (when, refusal or None)
        self._gate_check: tuple[tuple[str, float, str], float, str | None] | None = None
        self._registry_down = False
        self.polls = 0
        self.last_sync: dict[str, Any] | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="qcli-follow", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.sync("poll")
            except Exception:  # the loop must survive anything; sync reports what it can
                log.exception("registry follow: poll failed")

    @property
    def registry(self) -> Any:
        if self._registry is None:
            self._registry = ModelRegistry(self.workspace.tracking_uri)
        return self._registry

    # -- one synchronisation ------------------------------------------------------------------
    def sync(self, reason: str = "poll") -> dict[str, Any]:
        """Read the registry once and swap in whatever changed; returns what is served.

        ``reason`` is recorded on every swap (``poll``, ``admin reload``, ``startup``).
        """
        with self._lock:
            self.polls += 1
            try:
                state = read_state(self.registry, self.name)
            except Exception as exc:
                if not self._registry_down:
                    self._registry_down = True
                    self._alert("WARNING", f"registry unreadable, serving the last state: {exc}")
                return self._result(errors=[f"registry: {exc}"])
            self._registry_down = False
            d = self.predictor.deployment
            errors: list[str] = []
            why = self._why(state, reason)

            target = state.aliases.get(self.alias)
            production = d.production
            if target is not None and target != production.version:
                production = self._load(target, "production", errors) or production

            candidate, share = None, 0.0
            canary = (
                self.alias == "production"
                and state.mode == "canary"
                and state.candidate not in (None, production.version)
                and state.share > 0
            )
            if canary:
                refusal = self._candidate_gates(state)
                if refusal is not None:  # never routes live traffic to an ungated version
                    errors.append(f"candidate v{state.candidate}: {refusal}")
                else:
                    candidate = self._reuse(d.candidate, state.candidate) or self._load(
                        state.candidate, "candidate", errors, state.deployed_at
                    )
                share = state.share if candidate is not None else 0.0

            stored_shadow = state.candidate if state.mode == "shadow" else None
            shadow_version = (
                state.aliases.get(self.shadow_alias) if self.shadow_alias else stored_shadow
            )
            shadow = None
            if shadow_version is not None and shadow_version != production.version:
                since = state.deployed_at if shadow_version == stored_shadow else None
                shadow = self._reuse(d.shadow, shadow_version) or self._load(
                    shadow_version, "shadow", errors, since
                )

            halted = state.halt.get("reason", "halted") if state.halt else None
            new = Deployment(production, candidate, share, shadow, halted)
            if new != d:
                lifted = d.halted is not None and halted is None and state.resumed is not None
                resume_reason = state.resumed.get("reason") if lifted else None
                self.predictor.swap(new, reason=why, resume_reason=resume_reason)
            return self._result(errors=errors, state=state.to_dict())

    def _candidate_gates(self, state: Any) -> str | None:
        """Why the canary candidate may not answer live traffic, or ``None`` when it may.

        It may when every verdict the promotion policy requires passes, or when the rollout
        records a governance override with its reason. The answer is kept for
        ``retry_after_s`` (verdicts are signed registry tags, re-read that often); a new
        refusal is audited (``swap_refused``) and alerted once per version.
        """
        version = str(state.candidate)
        key = (version, state.share, json.dumps(state.override, sort_keys=True, default=str))
        now = time.monotonic()
        last = self._gate_check
        if last is not None and last[0] == key and now - last[1] < self.retry_after_s:
            return last[2]
        override = state.override or {}
        if str(override.get("reason") or "").strip():
            refusal = None
        else:
            try:
                info = self.registry.resolve(self.name, version)
                required = with_floor(required_verdicts(self.workspace.config))
                reasons = list(self.registry.gate_reasons(info, required))
            except Exception as exc:  # unreadable verdicts are no verdicts
                reasons = [f"verdicts unreadable: {type(exc).__name__}: {exc}"]
            refusal = (
                "required verdicts do not pass (" + "; ".join(reasons) + "); no production "
                "traffic goes to it without a recorded override"
                if reasons
                else None
            )
        self._gate_check = (key, now, refusal)
        if refusal is not None and (last is None or last[0][0] != version or last[2] != refusal):
            self._refused("candidate", version, refusal, what="gets no traffic: its gates")
        return refusal

    def _why(self, state: Any, reason: str) -> str:
        return f"{reason}: registry {self.name}@{self.alias}"

    @staticmethod
    def _reuse(arm: Any, version: str | None) -> Any:
        return arm if arm is not None and arm.version == version else None

    def _load(
        self, version: str, role: str, errors: list[str], deployed_at: str | None = None
    ) -> Any:
        """The verified :class:`Arm` of ``version``, or ``None`` (error recorded and alerted).

        ``deployed_at`` is when the registry gave the arm its role; for ``production`` it is
        read from the version (the event that moved the alias onto it), for a shadow of
        ``--shadow-alias`` it is now.
        """
        key = (role, str(version))
        if deployed_at is None and role != "production":
            deployed_at = datetime.now(UTC).isoformat()
        cached = self._runtimes.get(str(version))
        if cached is not None:  # verified when it was loaded; a version's bytes never change
            self._runtimes.move_to_end(str(version))
            if role == "production":
                deployed_at = self._production_deployed_at(str(version))
            return self.predictor.make_arm(cached, role, deployed_at)
        failed = self._failed.get(key)
        if failed is not None and time.monotonic() - failed[0] < self.retry_after_s:
            errors.append(f"{role} v{version}: {failed[1]} (retry pending)")
            return None
        try:
            runtime = InferenceRuntime.from_registry(
                self.name, str(version), workspace=self.workspace
            )
            runtime.audit_tags.setdefault("model_name", self.name)
            runtime.audit_tags.setdefault("model_version", str(version))
            arm = self.predictor.make_arm(runtime, role, deployed_at)
            self.predictor.warm_up(runtime)
        except Exception as exc:
            message = f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}"
            self._failed[key] = (time.monotonic(), message)
            errors.append(f"{role} v{version}: {message}")
            self._refused(role, str(version), message)
            return None
        self._failed.pop(key, None)
        self._alerted.discard(key)
        self._runtimes[str(version)] = runtime
        while len(self._runtimes) > RUNTIME_CACHE:
            self._runtimes.popitem(last=False)
        return arm

    def _production_deployed_at(self, version: str) -> str | None:
        """When the registry last moved production onto ``version`` (``None``: unreadable, the
        arm then says when it was loaded)."""
        try:
            mv = self.registry.client.get_model_version(self.name, version)
        except Exception:  # the swap does not wait for a timestamp
            log.warning("registry follow: cannot read v%s's deployment time", version)
            return None
        return production_deployed_at(dict(mv.tags or {}), version)

    def _refused(
        self, role: str, version: str, message: str, what: str = "failed to load or verify"
    ) -> None:
        d = self.predictor.deployment
        current = getattr(d, role)
        self.predictor.ledger.append(
            [
                {
                    "recorded_at": datetime.now(UTC).isoformat(),
                    "event": "swap_refused",
                    "source": "service",
                    "alias": self.alias,
                    "model_name": self.name,
                    "arm": role,
                    "from_version": current.version if current is not None else None,
                    "to_version": version,
                    "reason": message,
                }
            ]
        )
        if (role, version) not in self._alerted:
            self._alerted.add((role, version))
            severity = "CRITICAL" if role == "production" else "WARNING"
            serving = (
                f"still serving v{current.version}"
                if current is not None
                else ("production keeps all traffic" if role == "candidate" else "serving none")
            )
            self._alert(severity, f"{self.name} v{version} ({role}) {what}; {serving}: {message}")

    def _alert(self, severity: str, title: str) -> None:
        log.warning("%s", title)
        if self._send_alert is None:
            return
        try:
            self._send_alert(severity, title, {"model": self.name})
        except Exception:  # a broken alert route must not stop the follower
            log.exception("alert delivery could not start")

    def _result(self, *, errors: list[str], state: dict[str, Any] | None = None) -> dict[str, Any]:
        d = self.predictor.deployment
        self.last_sync = {
            "at": datetime.now(UTC).isoformat(),
            "serving": d.describe(),
            "registry": state,
            "errors": errors,
        }
        return self.last_sync

    def request_sync(self) -> None:
        """Wake the poll thread now (non-blocking)."""
        self._wake.set()
