"""The live shadow: what a running ``qcli serve`` predicted with its shadow model, compared.

A service started with a shadow (``qcli serve --shadow-alias staging``, or a ``qcli model
rollout --mode shadow``) writes one ``event: "shadow"`` record per scored request to the audit
ledger: the shadow's and production's predictions of the same feature row. This module reads
them back and compares the two models with :func:`quantcli.monitoring.shadow.shadow_compare`'s
conventions, on the records whose forward return is known by now.
"""

from __future__ import annotations

import dataclasses
import json
import os
from datetime import date, datetime
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl

from quantcli.audit._export import parse_since
from quantcli.errors import InputError
from quantcli.features.definitions import load_feature_set
from quantcli.features.labels import compute_labels
from quantcli.monitoring.alerts import Alert, AlertConfig, AlertSink
from quantcli.monitoring.shadow import ShadowComparison, record_shadow_run, shadow_compare
from quantcli.results import Result
from quantcli.store.offline import OfflineStore
from quantcli.workspace import Workspace


@dataclasses.dataclass(frozen=True, kw_only=True)
class LiveShadowResult(Result):
    """The live shadow of one model against production (:func:`run_live_shadow`).

    ``comparison`` is None until some forward returns are known (``pnl_divergence`` is then
    None and ``passed`` true); ``run_id`` is the recorded run's, None when not recorded.
    """

    model: str
    since: str | None
    label: str
    n_records: int
    n_realized: int
    shadow_versions: list[str]
    production_versions: list[str]
    prediction: dict[str, float]
    max_pnl_divergence: float
    comparison: ShadowComparison | None = None
    run_id: str | None = None

    mode: ClassVar[str] = "live"

    def message(self) -> str:
        return (
            f"live shadow P&L divergence {self.comparison.pnl_divergence:.2%} beyond "
            f"{self.max_pnl_divergence:.0%}"
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": self.model,
            "mode": self.mode,
            "since": self.since,
            "label": self.label,
            "n_records": self.n_records,
            "n_realized": self.n_realized,
            "shadow_versions": self.shadow_versions,
            "production_versions": self.production_versions,
            "prediction": self.prediction,
            "max_pnl_divergence": self.max_pnl_divergence,
            "pnl_divergence": None,
            "passed": self.passed,
        }
        if self.comparison is not None:
            cmp = self.comparison
            out.update(
                pnl_divergence=cmp.pnl_divergence,
                n_periods=cmp.n_periods,
                candidate=cmp.candidate,
                against=cmp.production,
                conventions=cmp.conventions,
            )
        if self.run_id is not None:
            out.update(candidate_alias="shadow", run_id=self.run_id)
        return out


def read_live_shadow(
    name: str,
    *,
    since: str | date | datetime | None = None,
    ledger: str | os.PathLike[str] | None = None,
    workspace: Workspace | None = None,
) -> list[dict[str, Any]]:
    """The live shadow records of model ``name`` in the audit ledger (``event: "shadow"``,
    written by ``qcli serve`` for every request it scored with a shadow), recorded at or
    after ``since``; one per ``(symbol, feature_ts, shadow and production versions)``, the
    latest, so a feature row requested many times counts once.

    ``ledger`` defaults to the workspace's (``$QCLI_HOME/audit/ledger.jsonl``)."""
    path = Path(ledger) if ledger is not None else (workspace or Workspace.from_env()).ledger_path
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


def _records_frame(recs: list[dict[str, Any]]) -> pl.DataFrame:
    """``symbol``, ``ts`` (the feature row's, UTC), ``shadow``, ``production`` per record."""
    return pl.DataFrame(
        {
            "symbol": [r["symbol"] for r in recs],
            "ts": [r.get("feature_ts") for r in recs],
            "shadow": [r["shadow_prediction"] for r in recs],
            "production": [r["production_prediction"] for r in recs],
        },
        schema={
            "symbol": pl.String,
            "ts": pl.String,
            "shadow": pl.Float64,
            "production": pl.Float64,
        },
    ).with_columns(pl.col("ts").str.to_datetime(time_zone="UTC", strict=False))


def _realized(frame: pl.DataFrame, feature_set: str, label: str, store_path: Path) -> pl.DataFrame:
    """The records whose forward return ``label`` is known from the stored bars, with it as
    ``label``, sorted by ``ts`` then ``symbol``."""
    horizon = load_feature_set(feature_set).label(label).horizon
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
    return (
        frame.join(labels, on=["symbol", "ts"], how="inner")
        .filter(pl.col("label").is_not_null())
        .sort("ts", "symbol")
    )


def run_live_shadow(
    name: str,
    *,
    since: str | date | datetime | None = None,
    feature_set: str = "technical_v1",
    label: str = "fwd_return_5d",
    max_pnl_divergence: float | None = None,
    ledger: str | os.PathLike[str] | None = None,
    record: bool = True,
    alerts: AlertSink | None = None,
    workspace: Workspace | None = None,
) -> LiveShadowResult:
    """Compare the live shadow with production from what the service recorded.

    **Prediction divergence** (every shadow record): mean and max ``|shadow - production|``
    and sign agreement. **Realized P&L divergence** (:func:`shadow_compare`'s
    ``|W_shadow / W_production - 1|``) over the records whose forward return is known by now:
    the label of ``feature_ts`` computed from the stored bars (``label`` of ``feature_set``,
    e.g. the 5-bar forward return). ``passed`` is false when that divergence exceeds
    ``max_pnl_divergence`` (default ``[shadow] max_pnl_divergence`` of the workspace's
    config); ``pnl_divergence`` is ``None`` (and ``passed`` true) until some returns are known.

    A failed comparison is also sent as a WARNING through ``alerts`` (default: the
    ``[alerts]`` section of the workspace's config).
    """
    ws = workspace or Workspace.from_env()
    limit = max_pnl_divergence
    if limit is None:
        limit = ws.section("shadow")["max_pnl_divergence"]
    # a bad [alerts] section fails here, not after the comparison has been recorded
    sink = alerts if alerts is not None else AlertSink(AlertConfig.from_config(ws.config))
    sink.config.check_dead_letter()
    recs = read_live_shadow(name, since=since, ledger=ledger, workspace=ws)
    if not recs:
        raise InputError(
            f"no live shadow records of model '{name}' in the audit ledger"
            + (f" since {since}" if since else ""),
            hint="serve with a shadow: qcli serve --shadow-alias staging, or "
            "qcli model rollout NAME --version V --mode shadow",
        )
    frame = _records_frame(recs)
    shadow, prod = frame["shadow"].to_numpy(), frame["production"].to_numpy()
    diff = np.abs(shadow - prod)
    known = _realized(frame, feature_set, label, ws.offline_path)
    cmp = None
    if known.height:
        cmp = shadow_compare(
            known["ts"].to_list(),
            known["shadow"].to_numpy(),
            known["production"].to_numpy(),
            known["label"].to_numpy(),
            limit,
        )
    result = LiveShadowResult(
        passed=cmp is None or cmp.passed,
        model=name,
        since=None if since is None else str(since),
        label=label,
        n_records=len(recs),
        n_realized=known.height,
        shadow_versions=sorted({str(r.get("shadow_version")) for r in recs}),
        production_versions=sorted({str(r.get("production_version")) for r in recs}),
        prediction={
            "mean_abs_diff": float(diff.mean()),
            "max_abs_diff": float(diff.max()),
            "sign_agreement": float(np.mean(np.sign(shadow) == np.sign(prod))),
        },
        max_pnl_divergence=limit,
        comparison=cmp,
    )
    if not result.passed:
        result = dataclasses.replace(result, reasons=[result.message()])
    if record:
        result = dataclasses.replace(result, run_id=_record(result, ws))
    if not result.passed:
        sink.send(
            Alert("WARNING", result.message(), source="qcli model shadow", details={"model": name})
        )
    return result


def _record(result: LiveShadowResult, ws: Workspace) -> str:
    """Record the live comparison in ``monitor_shadow_runs`` as shadow vs production."""
    d = result.to_dict()
    return record_shadow_run(
        {
            **d,
            "candidate_alias": "shadow",
            "candidate": {"alias": "live-shadow", **d.get("candidate", {})},
            "against": {"alias": "production", **d.get("against", {})},
            "since": d["since"] or "",
        },
        ws,
    )
