"""The in-process prediction path shared by ``qcli predict`` and the HTTP service.

One request: symbols -> online features (Feast, offline fallback) -> the verified ONNX runtime ->
one audit-ledger record per symbol -> the response. Per symbol the response carries the prediction
and the audit tags: ``model_version``, ``model_run_id``, ``feature_version``,
``dataset_manifest_id``, ``onnx_model`` (``name``, ``sha256``), ``inference_latency_ms`` (the
ONNX ``session.run`` of the request, milliseconds), ``deployed_at`` (when the alias was set, ISO
UTC, or when this process loaded the model if the registry does not say), plus ``fallback``
(``null`` for an online hit, else ``"missing"``/``"stale"``) and ``feature_ts``.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from quantcli.audit import AuditLedger, features_sha256
from quantcli.data.symbols import SYMBOL_RULE, is_valid_symbol, shown
from quantcli.errors import InputError, NotFoundError

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
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class Predictor:
    """Online features -> ONNX runtime -> audit ledger, for one model alias.

    Parameters
    ----------
    runtime
        A :class:`quantcli.serving.runtime.InferenceRuntime` (verified ONNX session); its
        ``feature_names`` say which online features are read, in order.
    store
        The online feature store wrapper (:func:`quantcli.store.feast_store.get_feature_store`).
    ledger
        The audit ledger every prediction is appended to (default ``$QCLI_HOME/audit``).
    alias
        The registry alias the runtime was loaded from (recorded in the ledger).
    max_symbols
        Largest number of symbols per request.
    """

    def __init__(
        self,
        runtime: Any,
        store: Any,
        ledger: AuditLedger | None = None,
        *,
        alias: str | None = None,
        max_symbols: int = MAX_SYMBOLS,
    ) -> None:
        self.runtime = runtime
        self.store = store
        self.ledger = ledger if ledger is not None else AuditLedger()
        self.alias = alias
        self.max_symbols = max_symbols
        self.stats = PredictorStats()
        self.loaded_at = datetime.now(UTC).isoformat()
        self.feature_names = list(runtime.feature_names)
        known = set(store.decl.feature_names)
        missing = [f for f in self.feature_names if f not in known]
        if missing:
            raise InputError(
                f"the model needs feature '{missing[0]}' which feature view "
                f"'{store.decl.view_name}' does not have",
                hint="serve a model trained on this feature set",
            )
        self.tags = audit_tags(runtime.audit_tags, store, self.loaded_at)

    def predict(
        self, symbols: Sequence[str], *, source: str = "cli", request_id: str | None = None
    ) -> dict[str, Any]:
        """Predict for ``symbols``; every prediction is appended to the ledger before returning.

        Raises :class:`InputError` (bad symbols, NaN features) or :class:`NotFoundError`
        (a symbol with no features anywhere); nothing is written to the ledger then.
        """
        syms = check_symbols(symbols, self.max_symbols)
        feats = self.store.get_online_features(syms, feature_refs=self.feature_names)
        X = self.runtime.validate(feats.values)
        t0 = time.perf_counter()
        preds = self.runtime.predict_array(X)
        latency_ms = (time.perf_counter() - t0) * 1e3
        request_id = request_id or uuid.uuid4().hex
        now = datetime.now(UTC).isoformat()
        rows = []
        for i, sym in enumerate(syms):
            rows.append(
                {
                    "symbol": sym,
                    "prediction": float(preds[i]),
                    "fallback": feats.fallback[i],
                    "feature_ts": feats.feature_ts[i],
                    **self.tags,
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
        with self.stats._lock:
            self.stats.requests += 1
            self.stats.symbols += len(syms)
        return {
            "request_id": request_id,
            "alias": self.alias,
            "model_name": self.tags["model_name"],
            "predictions": rows,
        }

    def warm_up(self) -> None:
        """One online read and one inference, not recorded and not counted.

        The first Feast read opens the registry and the online store (hundreds of ms); doing it
        before the service accepts traffic keeps that cost off the first request.
        """
        symbols = self.store.known_symbols()[:1]
        if not symbols:
            return
        saved = self.store.counters.as_dict()
        feats = self.store.get_online_features(symbols, feature_refs=self.feature_names)
        X = np.nan_to_num(feats.values).astype(np.float32)
        self.runtime.predict_array(X)
        c = self.store.counters
        with c._lock:
            c.hits, c.fallback_missing = saved["hits"], saved["fallback_missing"]
            c.fallback_stale = saved["fallback_stale"]

    def describe(self) -> dict[str, Any]:
        """The served model and feature store (for ``/health`` and ``qcli predict``)."""
        return {"alias": self.alias, **self.tags, "online_store": self.store.stats()}

    def close(self) -> None:
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
    tracking_uri: str | None = None,
    ledger: AuditLedger | None = None,
) -> Predictor:
    """Build a :class:`Predictor` from the registry: ``model@alias`` and its feature set."""
    from quantcli.serving.runtime import InferenceRuntime
    from quantcli.store.feast_store import get_feature_store

    name = model or default_model_name(tracking_uri)
    runtime = InferenceRuntime.from_registry(name, alias, tracking_uri=tracking_uri)
    runtime.audit_tags.setdefault("model_name", name)
    fs_name = feature_set or runtime.audit_tags.get("feature_set") or "technical_v1"
    return Predictor(runtime, get_feature_store(fs_name), ledger, alias=alias)


def default_model_name(tracking_uri: str | None = None) -> str:
    """The only registered model, when ``--model`` is not given."""
    import os

    env = os.environ.get("QCLI_MODEL")
    if env:
        return env
    from quantcli.models.registry import ModelRegistry

    names = sorted(m.name for m in ModelRegistry(tracking_uri).client.search_registered_models())
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
