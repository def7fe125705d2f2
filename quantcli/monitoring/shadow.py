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
The live shadow a running service records is compared in :mod:`quantcli.monitoring.shadow_live`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import uuid
from datetime import date, datetime
from typing import Any

import numpy as np

from quantcli.errors import InputError
from quantcli.features.dataset import load_training_frame
from quantcli.monitoring.performance import rolling_metrics
from quantcli.monitoring.state import monitoring_store, store_file, utc_now
from quantcli.results import Result
from quantcli.serving.runtime import InferenceRuntime
from quantcli.store.offline import OfflineStore
from quantcli.workspace import Workspace

CONVENTIONS = {
    "strategy": "sign(prediction) * realised forward return; same-ts rows average",
    "pnl_divergence": "|W_candidate / W_production - 1|, W = compounded wealth from 1",
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class ShadowComparison(Result):
    """Two prediction vectors compared on the same rows (:func:`shadow_compare`); ``passed``
    is false when the P&L divergence exceeds ``max_pnl_divergence``."""

    n_rows: int
    n_periods: int
    prediction: dict[str, float | None]
    candidate: dict[str, float | None]
    production: dict[str, float | None]
    pnl_divergence: float | None
    max_pnl_divergence: float
    conventions: dict[str, str] = dataclasses.field(default_factory=lambda: dict(CONVENTIONS))

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_rows": self.n_rows,
            "n_periods": self.n_periods,
            "prediction": self.prediction,
            "candidate": self.candidate,
            "production": self.production,
            "pnl_divergence": self.pnl_divergence,
            "max_pnl_divergence": self.max_pnl_divergence,
            "passed": self.passed,
            "conventions": self.conventions,
        }


@dataclasses.dataclass(frozen=True, kw_only=True)
class ShadowResult(Result):
    """A replay of stored features through ``model@candidate`` and ``model@against``
    (:func:`run_shadow`); ``run_id`` is the recorded run's, None when not recorded."""

    model: str
    candidate: dict[str, Any]
    against: dict[str, Any]
    since: str
    label: str
    comparison: ShadowComparison
    run_id: str | None = None

    def message(self) -> str:
        return (
            f"shadow: P&L divergence {_pct(self.comparison.pnl_divergence)} beyond "
            f"{self.comparison.max_pnl_divergence:.0%}"
        )

    def to_dict(self) -> dict[str, Any]:
        out = {
            "model": self.model,
            "candidate": self.candidate,
            "against": self.against,
            "since": self.since,
            "label": self.label,
            **{
                k: v
                for k, v in self.comparison.to_dict().items()
                if k not in ("candidate", "production")
            },
        }
        if self.run_id is not None:
            out["run_id"] = self.run_id
        return out


def _pct(x: float | None) -> str:
    """A divergence in percent; ``None`` is an unbounded one (the reference wealth hit 0)."""
    return "inf" if x is None else f"{x:.2%}"


def _none_if_nan(x: float) -> float | None:
    return None if not math.isfinite(x) else float(x)


def shadow_compare(
    ts: list[Any] | np.ndarray,
    candidate: np.ndarray,
    production: np.ndarray,
    realized: np.ndarray,
    max_pnl_divergence: float = 0.05,
) -> ShadowComparison:
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
    why = f"P&L divergence {divergence:.2%} beyond {max_pnl_divergence:.0%}"
    return ShadowComparison(
        passed=passed,
        reasons=[] if passed else [why],
        n_rows=int(c.size),
        n_periods=int(mc["n_periods"]),
        prediction={
            "mean_abs_diff": float(diff.mean()),
            "max_abs_diff": float(diff.max()),
            "correlation": _none_if_nan(corr),
            "sign_agreement": float(np.mean(np.sign(c) == np.sign(p))),
        },
        candidate={k: _none_if_nan(float(v)) for k, v in mc.items()},
        production={k: _none_if_nan(float(v)) for k, v in mp.items()},
        pnl_divergence=_none_if_nan(divergence),
        max_pnl_divergence=max_pnl_divergence,
    )


def run_shadow(
    name: str,
    *,
    candidate: str = "staging",
    against: str = "production",
    since: str | date | datetime,
    feature_set: str = "technical_v1",
    label: str = "fwd_return_5d",
    max_pnl_divergence: float | None = None,
    record: bool = True,
    workspace: Workspace | None = None,
    tracking_uri: str | None = None,
) -> ShadowResult:
    """Replay the stored features since ``since`` through ``name@candidate`` and
    ``name@against`` (aliases or version numbers) with the real ONNX runtimes, compare, record.

    ``max_pnl_divergence`` defaults to ``[shadow] max_pnl_divergence`` of the workspace's
    config; ``tracking_uri`` is deprecated (the workspace's registry is used).
    """
    ws = workspace or Workspace.from_env()
    if tracking_uri is not None:
        ws = dataclasses.replace(ws, tracking_uri=tracking_uri)
    limit = _limit(max_pnl_divergence, ws)
    with OfflineStore(ws.offline_path, read_only=True) as store:
        frame = load_training_frame(store, feature_set=feature_set, label=label, since=since)
    if frame.height == 0:
        raise InputError(
            f"--since {since}: no stored features with a known label from that date",
            hint="pick an earlier date; the last bars of each symbol have no label yet",
        )
    runtimes = {
        role: InferenceRuntime.from_registry(name, alias, workspace=ws)
        for role, alias in (("candidate", candidate), ("against", against))
    }
    preds = {
        role: rt.predict(frame.select(list(rt.feature_names))).predictions
        for role, rt in runtimes.items()
    }
    cmp = shadow_compare(
        frame["ts"].to_list(),
        preds["candidate"],
        preds["against"],
        frame["label"].to_numpy(),
        limit,
    )
    result = ShadowResult(
        passed=cmp.passed,
        reasons=[
            f"candidate cumulative return {cmp.candidate['cumulative_return']:.2%} vs "
            f"{cmp.production['cumulative_return']:.2%}"
        ]
        if not cmp.passed
        else [],
        model=name,
        candidate={"alias": candidate, **_model_ref(runtimes["candidate"]), **cmp.candidate},
        against={"alias": against, **_model_ref(runtimes["against"]), **cmp.production},
        since=str(since),
        label=label,
        comparison=cmp,
    )
    if record:
        result = dataclasses.replace(result, run_id=record_shadow_run(result.to_dict(), ws))
    return result


def _limit(max_pnl_divergence: float | None, ws: Workspace) -> float:
    """The P&L divergence limit: given, or the workspace config's ``[shadow]`` one."""
    if max_pnl_divergence is None:
        return ws.section("shadow")["max_pnl_divergence"]
    return max_pnl_divergence


def _model_ref(rt: Any) -> dict[str, Any]:
    return {
        "version": rt.audit_tags.get("model_version"),
        "onnx_sha256": rt.audit_tags.get("onnx_sha256"),
    }


def record_shadow_run(result: dict[str, Any], workspace: Workspace | None = None) -> str:
    """Append one shadow comparison (its JSON) to ``monitor_shadow_runs``; returns its id."""
    run_id = uuid.uuid4().hex[:16]
    with monitoring_store(store_file(workspace)) as store, store.transaction() as con:
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
