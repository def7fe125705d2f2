"""Shadow evaluation: replay stored features through a candidate and the production model.

Both models see the same rows (the stored features since a date whose forward-return label is
known) and are compared on

* **predictions** -- mean and max absolute difference, Pearson correlation, and the share of
  rows where the two predictions have the same sign (the same trade);
* **strategy P&L** -- the monitor's convention: each model takes ``sign(prediction)`` of the
  realised forward return, predictions sharing a timestamp average into one period, and wealth
  compounds from 1. With overlapping multi-day labels this is a P&L *proxy*, identical for both
  models, which is what a comparison needs.

**P&L divergence** = ``|W_candidate / W_production - 1|``, the relative difference of the two
ending wealths (0.05 = the candidate would have ended 5 % richer or poorer). The shadow check
fails beyond ``max_pnl_divergence`` (default 0.05, config ``[shadow] max_pnl_divergence``).
"""

from __future__ import annotations

import json
import math
import os
import uuid
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np

from quantcli.errors import InputError
from quantcli.monitoring.performance import rolling_metrics
from quantcli.monitoring.state import monitoring_store, utc_now


def _none_if_nan(x: float) -> float | None:
    return None if not math.isfinite(x) else float(x)


def shadow_compare(
    ts: list[Any] | np.ndarray,
    candidate: np.ndarray,
    production: np.ndarray,
    realized: np.ndarray,
    max_pnl_divergence: float = 0.05,
) -> dict[str, Any]:
    """Compare two prediction vectors on the same rows (a pure function).

    Parameters
    ----------
    ts
        Row timestamps, sorted ascending (equal timestamps form one period).
    candidate, production
        The two models' predictions, one per row.
    realized
        The realised forward returns (fractions), one per row.
    max_pnl_divergence
        The largest acceptable ``|W_candidate / W_production - 1|``.
    """
    c = np.asarray(candidate, dtype=np.float64)
    p = np.asarray(production, dtype=np.float64)
    r = np.asarray(realized, dtype=np.float64)
    if not (c.shape == p.shape == r.shape) or c.ndim != 1:
        raise InputError(
            f"shadow_compare: candidate, production and realized must be 1-D of one length, "
            f"got {c.shape}, {p.shape}, {r.shape}"
        )
    if c.size == 0:
        raise InputError("shadow_compare: no rows to compare")
    if not (math.isfinite(max_pnl_divergence) and max_pnl_divergence >= 0):
        raise InputError(
            f"`max_pnl_divergence` must be a fraction >= 0 (0.05 = 5 %), "
            f"got `max_pnl_divergence={max_pnl_divergence}`"
        )
    diff = np.abs(c - p)
    corr = (
        float(np.corrcoef(c, p)[0, 1])
        if c.size >= 2 and np.std(c) > 0 and np.std(p) > 0
        else float("nan")
    )
    mc = rolling_metrics(ts, c, r)
    mp = rolling_metrics(ts, p, r)
    w_c, w_p = 1.0 + mc["cumulative_return"], 1.0 + mp["cumulative_return"]
    divergence = abs(w_c / w_p - 1.0) if w_p > 0 else float("inf")
    passed = bool(divergence <= max_pnl_divergence)
    return {
        "n_rows": int(c.size),
        "n_periods": int(mc["n_periods"]),
        "prediction": {
            "mean_abs_diff": float(diff.mean()),
            "max_abs_diff": float(diff.max()),
            "correlation": _none_if_nan(corr),
            "sign_agreement": float(np.mean(np.sign(c) == np.sign(p))),
        },
        "candidate": {k: _none_if_nan(float(v)) for k, v in mc.items()},
        "production": {k: _none_if_nan(float(v)) for k, v in mp.items()},
        "pnl_divergence": _none_if_nan(divergence),
        "max_pnl_divergence": max_pnl_divergence,
        "passed": passed,
        "conventions": {
            "strategy": "sign(prediction) * realised forward return; same-ts rows average",
            "pnl_divergence": "|W_candidate / W_production - 1|, W = compounded wealth from 1",
        },
    }


def run_shadow(
    name: str,
    *,
    candidate: str = "staging",
    against: str = "production",
    since: str | date | datetime,
    feature_set: str = "technical_v1",
    label: str = "fwd_return_5d",
    max_pnl_divergence: float = 0.05,
    tracking_uri: str | None = None,
    record: bool = True,
    store_path: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Replay the stored features since ``since`` through ``name@candidate`` and
    ``name@against`` (aliases or version numbers) with the real ONNX runtimes, compare, record.
    """
    from quantcli.features.dataset import load_training_frame
    from quantcli.serving.runtime import InferenceRuntime
    from quantcli.store.offline import OfflineStore

    with OfflineStore(store_path, read_only=True) as store:
        frame = load_training_frame(store, feature_set=feature_set, label=label, since=since)
    if frame.height == 0:
        raise InputError(
            f"--since {since}: no stored features with a known label from that date",
            hint="pick an earlier date; the last bars of each symbol have no label yet",
        )
    runtimes = {}
    for role, alias in (("candidate", candidate), ("against", against)):
        runtimes[role] = InferenceRuntime.from_registry(name, alias, tracking_uri=tracking_uri)
    preds = {
        role: rt.predict(frame.select(list(rt.feature_names))).predictions
        for role, rt in runtimes.items()
    }
    result = shadow_compare(
        frame["ts"].to_list(),
        preds["candidate"],
        preds["against"],
        frame["label"].to_numpy(),
        max_pnl_divergence,
    )
    result = {
        "model": name,
        "candidate": {
            "alias": candidate,
            **_model_ref(runtimes["candidate"]),
            **result["candidate"],
        },
        "against": {"alias": against, **_model_ref(runtimes["against"]), **result["production"]},
        "since": str(since),
        "label": label,
        **{k: v for k, v in result.items() if k not in ("candidate", "production")},
    }
    if record:
        result["run_id"] = _record(result, store_path)
    return result


def _model_ref(rt: Any) -> dict[str, Any]:
    return {
        "version": rt.audit_tags.get("model_version"),
        "onnx_sha256": rt.audit_tags.get("onnx_sha256"),
    }


def _record(result: dict[str, Any], store_path: str | os.PathLike[str] | None) -> str:
    run_id = uuid.uuid4().hex[:16]
    with monitoring_store(store_path) as store, store.transaction() as con:
        con.execute(
            "INSERT INTO monitor_shadow_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                run_id,
                utc_now(),
                f"{result['model']}@{result['candidate']['alias']}",
                f"{result['model']}@{result['against']['alias']}",
                result["since"],
                result["pnl_divergence"],
                result["passed"],
                json.dumps(result, default=str),
            ],
        )
    return run_id


def read_live_shadow(
    name: str,
    *,
    since: str | date | datetime | None = None,
    ledger: str | os.PathLike[str] | None = None,
) -> list[dict[str, Any]]:
    """The live shadow records of model ``name`` in the audit ledger (``event: "shadow"``,
    written by ``qcli serve`` for every request it scored with a shadow), recorded at or
    after ``since``; one per ``(symbol, feature_ts, shadow and production versions)``, the
    latest, so a feature row requested many times counts once."""
    from quantcli.audit import ledger_path
    from quantcli.audit._export import parse_since

    path = Path(ledger) if ledger is not None else ledger_path()
    if not path.is_file():
        raise InputError(
            f"no audit ledger at {path}",
            hint="serve with a shadow first: qcli serve --shadow-alias staging",
        )
    since_dt = parse_since(since)
    latest: dict[tuple, dict[str, Any]] = {}
    with open(path, "rb") as fh:
        for raw in fh:
            if b'"event":"shadow"' not in raw:
                continue  # most records are predictions: skip them unparsed
            try:
                rec = json.loads(raw)
            except (ValueError, RecursionError):
                continue  # `qcli audit verify` reports broken records; here they are skipped
            if rec.get("event") != "shadow" or rec.get("model_name") != name:
                continue
            if since_dt is not None and datetime.fromisoformat(rec["recorded_at"]) < since_dt:
                continue
            key = (
                rec["symbol"],
                rec.get("feature_ts"),
                rec.get("shadow_version"),
                rec.get("production_version"),
            )
            latest[key] = rec
    return sorted(latest.values(), key=lambda r: (str(r.get("feature_ts")), r["symbol"]))


def run_live_shadow(
    name: str,
    *,
    since: str | date | datetime | None = None,
    feature_set: str = "technical_v1",
    label: str = "fwd_return_5d",
    max_pnl_divergence: float = 0.05,
    ledger: str | os.PathLike[str] | None = None,
    store_path: str | os.PathLike[str] | None = None,
    record: bool = True,
) -> dict[str, Any]:
    """Compare the live shadow with production from what the service recorded.

    **Prediction divergence** (every shadow record): mean and max ``|shadow - production|``
    and sign agreement. **Realized P&L divergence** (:func:`shadow_compare`'s
    ``|W_shadow / W_production - 1|``) over the records whose forward return is known by now:
    the label of ``feature_ts`` computed from the stored bars (``label`` of ``feature_set``,
    e.g. the 5-bar forward return). ``passed`` is false when that divergence exceeds
    ``max_pnl_divergence``; ``pnl_divergence`` is ``None`` (and ``passed`` true) until some
    returns are known.
    """
    import polars as pl

    from quantcli.features.definitions import load_feature_set
    from quantcli.features.labels import compute_labels
    from quantcli.store.offline import OfflineStore

    recs = read_live_shadow(name, since=since, ledger=ledger)
    if not recs:
        raise InputError(
            f"no live shadow records of model '{name}' in the audit ledger"
            + (f" since {since}" if since else ""),
            hint="serve with a shadow: qcli serve --shadow-alias staging, or "
            "qcli model rollout NAME --version V --mode shadow",
        )
    shadow = np.array([r["shadow_prediction"] for r in recs], dtype=np.float64)
    prod = np.array([r["production_prediction"] for r in recs], dtype=np.float64)
    diff = np.abs(shadow - prod)
    horizon = load_feature_set(feature_set).label(label).horizon
    frame = pl.DataFrame(
        {
            "symbol": [r["symbol"] for r in recs],
            "ts": [r.get("feature_ts") for r in recs],
            "shadow": shadow,
            "production": prod,
        },
        schema={
            "symbol": pl.String,
            "ts": pl.String,
            "shadow": pl.Float64,
            "production": pl.Float64,
        },
    ).with_columns(pl.col("ts").str.to_datetime(time_zone="UTC", strict=False))
    with OfflineStore(store_path, read_only=True) as store:
        store.require_table("bars", hint="run `qcli data ingest PATH` first")
        symbols = sorted(set(frame["symbol"].to_list()))
        bars = (
            store.con.cursor()
            .sql(
                "SELECT symbol, ts, close FROM bars WHERE symbol IN (SELECT unnest(?))",
                params=[symbols],
            )
            .pl()
            .with_columns(pl.col("ts").dt.convert_time_zone("UTC"))
        )
    labels = compute_labels(bars, horizon).collect()
    known = (
        frame.join(labels, on=["symbol", "ts"], how="inner")
        .filter(pl.col("label").is_not_null())
        .sort("ts", "symbol")
    )
    result: dict[str, Any] = {
        "model": name,
        "mode": "live",
        "since": None if since is None else str(since),
        "label": label,
        "n_records": len(recs),
        "n_realized": known.height,
        "shadow_versions": sorted({str(r.get("shadow_version")) for r in recs}),
        "production_versions": sorted({str(r.get("production_version")) for r in recs}),
        "prediction": {
            "mean_abs_diff": float(diff.mean()),
            "max_abs_diff": float(diff.max()),
            "sign_agreement": float(np.mean(np.sign(shadow) == np.sign(prod))),
        },
        "max_pnl_divergence": max_pnl_divergence,
        "pnl_divergence": None,
        "passed": True,
    }
    if known.height:
        cmp = shadow_compare(
            known["ts"].to_list(),
            known["shadow"].to_numpy(),
            known["production"].to_numpy(),
            known["label"].to_numpy(),
            max_pnl_divergence,
        )
        result.update(
            pnl_divergence=cmp["pnl_divergence"],
            passed=cmp["passed"],
            n_periods=cmp["n_periods"],
            candidate=cmp["candidate"],
            against=cmp["production"],
            conventions=cmp["conventions"],
        )
    if record:
        result["candidate_alias"] = "shadow"
        result["run_id"] = _record(
            {
                **result,
                "candidate": {"alias": "live-shadow", **result.get("candidate", {})},
                "against": {"alias": "production", **result.get("against", {})},
                "since": result["since"] or "",
            },
            store_path,
        )
    return result
