"""The in-process prediction path shared by ``qcli predict`` and the HTTP service.

One request: symbols -> online features (Feast, offline fallback) -> the verified ONNX runtime ->
one audit-ledger record per symbol -> the response. Per symbol the response carries the prediction
and the audit tags: ``model_version``, ``model_run_id``, ``feature_version``,
``dataset_manifest_id``, ``onnx_model`` (``name``, ``sha256``), ``inference_latency_ms`` (the
ONNX ``session.run`` of the request, milliseconds), ``deployed_at`` (ISO UTC: when the registry
gave the arm its role -- the promote, override or rollback that moved the alias onto a
production version, the rollout that made a version the candidate -- or, if the registry does
not say, when the arm was loaded), plus ``fallback``
(``null`` for an online hit, else ``"missing"``/``"stale"``), ``feature_ts`` and ``arm``
(``production``, or ``candidate`` for the canary's share of request keys).

A service may also score every request with a shadow version on a background thread (ledger
records ``event: "shadow"`` with both predictions), refuse everything while the model is halted
(``event: "refusal"``, :class:`ServiceHalted`), and swap versions while serving
(``event: "swap"``): see :class:`Deployment` and :mod:`quantcli.serving.follow`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from quantcli.audit import AuditLedger, LedgerBrokenError, features_sha256
from quantcli.data.symbols import SYMBOL_RULE, is_valid_symbol, shown
from quantcli.errors import InputError, NotFoundError, QuantCliError
from quantcli.models.deployment import read_state
from quantcli.models.registry import ModelRegistry
from quantcli.online.store import get_feature_store
from quantcli.results import Result
from quantcli.serving.deployment import Arm, Deployment, swap_records
from quantcli.serving.registered import resolve_workspace
from quantcli.serving.runtime import InferenceRuntime
from quantcli.serving.shadow import ShadowScorer
from quantcli.workspace import Workspace

log = logging.getLogger("quantcli.serving")
MAX_SYMBOLS = 100


def check_symbols(symbols: Any, max_symbols: int = MAX_SYMBOLS) -> list[str]:
    """The request's symbols as a list of tickers, or :class:`InputError` saying what is wrong."""
    if isinstance(symbols, str) or not isinstance(symbols, Sequence):
        raise InputError('`symbols` must be a list of tickers, e.g. {"symbols": ["SPY", "QQQ"]}')
    if len(symbols) == 0:
        raise InputError("`symbols` is empty: name at least one ticker")
    if len(symbols) > max_symbols:
        raise InputError(
            f"too many symbols: {len(symbols)} > {max_symbols} per request",
            hint="split the request",
        )
    for s in symbols:
        if not is_valid_symbol(s):  # the ingest's rule: a stored symbol is always servable
            raise InputError(f"invalid ticker {shown(s)}: use {SYMBOL_RULE}")
    return list(symbols)


@dataclass
class PredictorStats:
    """Counts since the predictor was created (read by ``/metrics``)."""

    requests: int = 0
    symbols: int = 0
    refusals: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class ServiceHalted(QuantCliError):
    """The model is halted (the kill switch of ``qcli model halt``): no prediction is served."""

    exit_code = 1


def open_service_ledger(workspace: Workspace | None = None) -> tuple[Any, str | None]:
    """The workspace's audit ledger and ``None``, or a :class:`RefusingLedger` and the reason
    when the ledger is broken: a service then starts and answers 503 saying why."""
    try:
        return AuditLedger(resolve_workspace(workspace).ledger_path), None
    except LedgerBrokenError as exc:
        reason = f"audit ledger broken: {exc.message}"
        return RefusingLedger(reason), reason


class RefusingLedger:
    """Stands in for an audit ledger found broken at start-up: every append raises, so a
    service started on it answers 503 with the reason instead of serving unaudited."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def append(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        raise LedgerBrokenError(self.reason)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass(frozen=True, kw_only=True)
class PredictResponse(Result):
    """One answered request: its id, the arm and model that served it, one row per symbol.

    Always ``passed``: a request that cannot be answered raises instead. :meth:`to_dict` is the
    ``/predict`` body and ``qcli predict --json``.
    """

    passed: bool = True
    request_id: str
    alias: str | None
    arm: str
    model_name: str
    predictions: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "alias": self.alias,
            "arm": self.arm,
            "model_name": self.model_name,
            "predictions": self.predictions,
        }


class Predictor:
    """Online features -> ONNX runtime -> audit ledger, for one model alias.

    Parameters
    ----------
    runtime
        A :class:`quantcli.serving.runtime.InferenceRuntime` (verified ONNX session); its
        ``feature_names`` say which online features are read, in order.
    store
        The online feature store wrapper (:func:`quantcli.online.get_feature_store`).
    ledger
        The audit ledger every prediction is appended to (default ``$QCLI_HOME/audit``).
    alias
        The registry alias the runtime was loaded from (recorded in the ledger).
    max_symbols
        Largest number of symbols per request.
    shadow_queue
        Requests that may wait for the shadow model before further ones are dropped.

    The served versions live in :attr:`deployment` (a :class:`Deployment`), which
    :class:`quantcli.serving.follow.RegistryFollower` replaces when the registry changes.
    """

    def __init__(
        self,
        runtime: Any,
        store: Any,
        ledger: AuditLedger | None = None,
        *,
        alias: str | None = None,
        max_symbols: int = MAX_SYMBOLS,
        shadow_queue: int = 10_000,
    ) -> None:
        self.store = store
        self.ledger = ledger if ledger is not None else AuditLedger()
        self.alias = alias
        self.max_symbols = max_symbols
        self.stats = PredictorStats()
        self.deployment = Deployment(self.make_arm(runtime, "production"))
        self.shadow = ShadowScorer(self, shadow_queue)
        self.swaps = 0
        # a broken audit ledger (set at start-up): nothing is served unaudited
        self.unavailable: str | None = None

    # the production arm, for callers that predate arms
    @property
    def runtime(self) -> Any:
        return self.deployment.production.runtime

    @property
    def tags(self) -> dict[str, Any]:
        return self.deployment.production.tags

    @property
    def feature_names(self) -> list[str]:
        return list(self.deployment.production.feature_names)

    def make_arm(self, runtime: Any, role: str, deployed_at: str | None = None) -> Arm:
        """An :class:`Arm` for ``runtime``; InputError if the store lacks one of its features.

        ``deployed_at`` is when the registry gave this arm its role (default: the runtime's
        ``deployed_at``/``promoted_at`` tag, else now).
        """
        names = tuple(runtime.feature_names)
        known = set(self.store.decl.feature_names)
        missing = [f for f in names if f not in known]
        if missing:
            raise InputError(
                f"the model needs feature '{missing[0]}' which feature view "
                f"'{self.store.decl.view_name}' does not have",
                hint="serve a model trained on this feature set",
            )
        tags = audit_tags(runtime.audit_tags, self.store, datetime.now(UTC).isoformat())
        if deployed_at:
            tags["deployed_at"] = deployed_at
        return Arm(role, runtime, tags, names)

    def swap(
        self, deployment: Deployment, *, reason: str, resume_reason: str | None = None
    ) -> list[dict[str, Any]]:
        """Serve ``deployment`` from the next request on, and audit every role that changed.

        Requests already running keep the deployment they read, so they finish on the old
        versions. Returns the audit records (``event: "swap"``, from/to version, reason);
        ``resume_reason`` is the operator's reason recorded when the halt is lifted.
        """
        old = self.deployment
        records = swap_records(
            old, deployment, alias=self.alias, reason=reason, resume_reason=resume_reason
        )
        if records:
            try:
                self.ledger.append(records)  # audited before the first request sees it
            except LedgerBrokenError as exc:  # nothing is served then; the state still follows
                self.unavailable = f"audit ledger broken: {exc.message}"
        self.deployment = deployment
        if any(r["event"] == "swap" for r in records):
            self.swaps += 1
        return records

    def predict(
        self,
        symbols: Sequence[str],
        *,
        source: str = "cli",
        request_id: str | None = None,
        key: str | None = None,
        offline: bool = True,
    ) -> PredictResponse:
        """Predict for ``symbols``; every prediction is appended to the ledger before returning.

        ``key`` (default: the request id) decides the arm during a canary (see
        :func:`assignment_point`). ``offline=False`` raises
        :class:`~quantcli.online.store.OfflineReadNeeded`, before anything is recorded, when a
        symbol would need the offline store. Raises :class:`InputError` (bad symbols, NaN features),
        :class:`NotFoundError` (a symbol with no features anywhere) -- nothing is written to
        the ledger then -- or :class:`ServiceHalted` (the refusal is audited).
        """
        d = self.deployment  # one read: this request stays on these versions
        request_id = request_id or uuid.uuid4().hex
        if d.halted is not None or self.unavailable is not None:
            self._refuse(d, request_id, source)
        syms = check_symbols(symbols, self.max_symbols)
        arm = d.arm_for(key if key is not None else request_id)
        feats = self.store.get_online_features(
            syms, feature_refs=list(arm.feature_names), offline=offline
        )
        X = arm.runtime.validate(feats.values)
        t0 = time.perf_counter()
        preds = arm.runtime.predict_array(X)
        latency_ms = (time.perf_counter() - t0) * 1e3
        now = datetime.now(UTC).isoformat()
        rows = []
        for i, sym in enumerate(syms):
            rows.append(
                {
                    "symbol": sym,
                    "prediction": float(preds[i]),
                    "fallback": feats.fallback[i],
                    "feature_ts": feats.feature_ts[i],
                    **arm.tags,
                    "arm": arm.role,
                    "inference_latency_ms": latency_ms,
                }
            )
        self.ledger.append(
            [
                {
                    "recorded_at": now,
                    "request_id": request_id,
                    "source": source,
                    "alias": self.alias,
                    "features_sha256": features_sha256(feats.values[i]),
                    **row,
                }
                for i, row in enumerate(rows)
            ]
        )
        if d.shadow is not None:
            self.shadow.submit((d.shadow, arm, request_id, syms, feats, X, preds))
        with self.stats._lock:
            self.stats.requests += 1
            self.stats.symbols += len(syms)
        return PredictResponse(
            request_id=request_id,
            alias=self.alias,
            arm=arm.role,
            model_name=arm.tags["model_name"],
            predictions=rows,
        )

    def _refuse(self, d: Deployment, request_id: str, source: str) -> None:
        if self.unavailable is not None:  # a broken ledger cannot take the refusal's record
            reason = self.unavailable
        else:
            reason = f"model halted: {d.halted}"
            self.ledger.append(
                [
                    {
                        "recorded_at": datetime.now(UTC).isoformat(),
                        "event": "refusal",
                        "request_id": request_id,
                        "source": source,
                        "alias": self.alias,
                        "model_name": d.production.tags["model_name"],
                        "model_version": d.production.version,
                        "reason": reason,
                    }
                ]
            )
        with self.stats._lock:
            self.stats.refusals += 1
        raise ServiceHalted(reason)

    def warm_up(self, runtime: Any | None = None) -> None:
        """One online read and one inference, not recorded and not counted.

        The first Feast read opens the registry and the online store (hundreds of ms); doing it
        before the service accepts traffic keeps that cost off the first request. With
        ``runtime`` (a version about to be swapped in) it is also the load check: the output
        must be finite.
        """
        runtime = runtime if runtime is not None else self.runtime
        symbols = self.store.known_symbols()[:1]
        if not symbols:
            return
        saved = self.store.counters.as_dict()
        try:
            feats = self.store.get_online_features(
                symbols, feature_refs=list(runtime.feature_names)
            )
            X = np.nan_to_num(feats.values).astype(np.float32)
            out = runtime.predict_array(X)
        finally:
            c = self.store.counters
            with c._lock:
                c.hits, c.fallback_missing = saved["hits"], saved["fallback_missing"]
                c.fallback_stale = saved["fallback_stale"]
        if not np.isfinite(np.asarray(out, dtype=np.float64)).all():
            raise InputError("the model's output on a live feature row is not finite")

    def describe(self) -> dict[str, Any]:
        """The served model and feature store (for ``/health`` and ``qcli predict``)."""
        return {
            "alias": self.alias,
            **self.tags,
            "deployment": self.deployment.describe(),
            "online_store": self.store.stats(),
        }

    def close(self) -> None:
        self.shadow.close()
        self.ledger.close()


def audit_tags(tags: dict[str, Any], store: Any, loaded_at: str) -> dict[str, Any]:
    """The per-prediction audit tags, read from the runtime's tags (names normalised)."""
    decl = store.decl

    def pick(*keys: str) -> Any:
        for k in keys:
            if tags.get(k) not in (None, ""):
                return tags[k]
        return None

    version = pick("model_version", "version")
    feature_set = pick("feature_set") or decl.feature_set
    feature_version = pick("feature_version", "feature_set_version") or decl.version
    return {
        "model_name": pick("model_name", "name"),
        "model_version": None if version is None else str(version),
        "model_run_id": pick("model_run_id", "run_id"),
        "feature_version": f"{feature_set}@{feature_version}"
        if "@" not in str(feature_version)
        else str(feature_version),
        "dataset_manifest_id": pick("dataset_manifest_id", "dataset_sha256"),
        "onnx_model": {"name": pick("onnx_name", "onnx_model_name"), "sha256": pick("onnx_sha256")},
        "deployed_at": pick("deployed_at", "promoted_at") or loaded_at,
    }


def load_predictor(
    model: str | None = None,
    alias: str = "production",
    *,
    feature_set: str | None = None,
    workspace: Workspace | None = None,
    ledger: AuditLedger | None = None,
    shadow_queue: int = 10_000,
    tracking_uri: str | None = None,
) -> Predictor:
    """Build a :class:`Predictor` from the registry: ``model@alias`` and its feature set.

    ``tracking_uri`` is a deprecated alias of ``workspace``.
    """
    ws = resolve_workspace(workspace, tracking_uri)
    name = model or default_model_name(ws)
    runtime = InferenceRuntime.from_registry(name, alias, workspace=ws)
    runtime.audit_tags.setdefault("model_name", name)
    fs_name = feature_set or runtime.audit_tags.get("feature_set") or "technical_v1"
    if ledger is None:
        ledger = AuditLedger(ws.ledger_path)
    return Predictor(
        runtime,
        get_feature_store(fs_name, workspace=ws),
        ledger,
        alias=alias,
        shadow_queue=shadow_queue,
    )


def apply_halt(
    predictor: Predictor,
    workspace: Workspace | str | None = None,
    *,
    tracking_uri: str | None = None,
) -> None:
    """Refuse predictions from ``predictor`` while its model is halted in the registry (the
    one-shot ``qcli predict``; a service follows the halt flag through its poll).

    A string ``workspace`` (or ``tracking_uri``) is the deprecated tracking URI form."""
    if isinstance(workspace, str):
        workspace, tracking_uri = None, workspace
    ws = resolve_workspace(workspace, tracking_uri)
    state = read_state(ModelRegistry(ws.tracking_uri), predictor.tags["model_name"])
    if state.halt is not None:
        reason = state.halt.get("reason", "halted")
        predictor.deployment = dataclasses.replace(predictor.deployment, halted=reason)


def default_model_name(workspace: Workspace | str | None = None) -> str:
    """The only registered model, when ``--model`` is not given (``$QCLI_MODEL`` first).

    A string ``workspace`` is the deprecated tracking URI form."""
    env = os.environ.get("QCLI_MODEL")
    if env:
        return env
    if isinstance(workspace, str):
        workspace = resolve_workspace(None, workspace)
    ws = resolve_workspace(workspace)
    names = sorted(m.name for m in ModelRegistry(ws.tracking_uri).client.search_registered_models())
    if len(names) == 1:
        return names[0]
    if not names:
        raise NotFoundError(
            "no registered model to serve",
            hint="train and promote one: qcli model train --name NAME",
        )
    raise InputError(
        f"{len(names)} registered models: choose one with --model",
        hint=f"registered: {', '.join(names)}",
    )


def predict_once(
    symbols: Sequence[str],
    model: str | None = None,
    alias: str = "production",
    *,
    workspace: Workspace | None = None,
    source: str = "cli",
) -> PredictResponse:
    """One in-process request (``qcli predict``): load ``model@alias``, refuse it while it is
    halted, predict ``symbols`` into the audit ledger, close the ledger."""
    ws = resolve_workspace(workspace)
    predictor = load_predictor(model, alias, workspace=ws)
    try:
        apply_halt(predictor, ws)
        return predictor.predict(symbols, source=source)
    finally:
        predictor.close()
