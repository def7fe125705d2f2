"""The ten stages of ``qcli pipeline run``, each a function of the run's :class:`RunContext`.

A stage returns a :class:`~quantcli.pipeline.stages.StageOutcome` (a one-line summary, the
details of the command it stands for, and its gate verdict if it has one) or raises; the
:class:`~quantcli.pipeline.stages.StageRunner` turns a raise into a failed stage. Stages talk to
each other only through the context: ``train`` sets the registry and the version the later
stages judge, ``promote`` the alias ``predict`` serves from.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl

from quantcli import __version__
from quantcli.backtest.stored import load_backtest_frame, pbo_statement
from quantcli.data.ingest import ingest_files, ingest_sample
from quantcli.data.window import TimestampWindow
from quantcli.errors import GateFailedError, NotFoundError
from quantcli.features import load_feature_set
from quantcli.features.build import build_features
from quantcli.features.expressions import DEFAULT_ENGINE
from quantcli.features.inspect import stored_engine
from quantcli.models import tags as T
from quantcli.models.registry import ModelRegistry
from quantcli.models.trainer import BACKTEST_ARTIFACT_PATH, frame_sha256, train_from_store
from quantcli.monitoring.drift import DriftDetector
from quantcli.monitoring.report import write_drift_report, write_histogram_pngs
from quantcli.online import materialize as materialize_online
from quantcli.pipeline.stages import StageOutcome
from quantcli.results import Result
from quantcli.serving.onnx_export import export_registered
from quantcli.serving.predict import load_predictor
from quantcli.serving.scan import scan_registered
from quantcli.workspace import Workspace

FINGERPRINT_TAG = "quantcli.pipeline.fingerprint"
DRIFT_WINDOW_DAYS = 91  # "the last quarter"
#: drift histograms embedded in the run report (the worst features; drift.html has them all)
DRIFT_PLOTS_IN_RUN_REPORT = 6


@dataclass
class RunContext:
    """What the stages of one run share: its options, and what earlier stages established."""

    workspace: Workspace
    model_name: str
    model_kind: str
    report_dir: Path
    sample: bool = False
    inputs: list[str] = field(default_factory=list)
    symbol: str | None = None
    online_store: str = "sqlite"
    redis_url: str | None = None
    # set by `train`: the registry, the version the later stages judge, a reused version's info
    registry: ModelRegistry | None = None
    version: str | None = None
    reused_info: Any = None
    # set by `promote`: the alias `predict` serves from
    serve_alias: str | None = None

    @property
    def cfg(self) -> dict[str, dict[str, Any]]:
        return self.workspace.config

    @property
    def feature_set(self) -> str:
        return self.cfg["features"]["feature_set"]

    @property
    def label(self) -> str:
        return self.cfg["label"]["name"]


def _plain(res: Any) -> dict[str, Any]:
    """A command's result as the dict its ``--json`` prints (results and records both have
    ``to_dict``; a plain mapping is copied)."""
    return res.to_dict() if hasattr(res, "to_dict") else dict(res)


def _num(x: Any) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _pct(x: Any) -> str:
    return "n/a" if x is None else f"{x:.2%}"


# 1. ingest -----------------------------------------------------------------------------------
def ingest(ctx: RunContext) -> StageOutcome:
    window = TimestampWindow.from_config(ctx.cfg["data"])  # the --config file's [data] window
    if ctx.sample:
        res = ingest_sample(window=window, workspace=ctx.workspace)
    else:
        res = ingest_files(ctx.inputs, symbol=ctx.symbol, window=window, workspace=ctx.workspace)
    d = _plain(res)
    warnings = d.get("quality", {}).get("warnings", [])
    found = ", ".join(
        f"{w['check']} x{w['count']}" for w in warnings if w["check"] != "naive_timestamp"
    )
    naive = sum(w["count"] for w in warnings if w["check"] == "naive_timestamp")
    return StageOutcome(
        f"{d['rows_in']} bars of {len(d['symbols'])} symbols: {d['rows_inserted']} new, "
        f"{d['rows_updated']} updated; quality warnings: {found or 'none'}"
        + (f"; {naive} date-only timestamps read as UTC" if naive else ""),
        d,
    )


# 2. features ---------------------------------------------------------------------------------
def features(ctx: RunContext) -> StageOutcome:
    fs = ctx.feature_set
    # extend the table with the engine its rows were built by (kernel when it is empty)
    res = build_features(
        feature_set=fs,
        engine=stored_engine(fs, workspace=ctx.workspace) or DEFAULT_ENGINE,
        workspace=ctx.workspace,
    )
    d = _plain(res)
    return StageOutcome(
        f"{d.get('rows_written', 0)} rows written to {d.get('table', fs)} "
        f"({d.get('mode', '')}; {d.get('warmup_rows_dropped', 0)} warm-up rows dropped)",
        d,
    )


# 3. train (CPCV backtest inside) -------------------------------------------------------------
def fingerprint(frame_sha: str, cfg: dict[str, Any], model: str, label: str) -> str:
    """What a trained version depends on: the training frame, the config, the model family,
    the label and the quantcli version; an equal fingerprint reuses the version."""
    blob = json.dumps(
        {"data": frame_sha, "config": cfg, "model": model, "label": label, "v": __version__},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def train(ctx: RunContext) -> StageOutcome:
    with ctx.workspace.offline(read_only=True) as store:
        # the frame the trainer fits and backtests (features, label, fwd_return_1d), so
        # the fingerprint covers every column the version depends on
        frame, _ = load_backtest_frame(ctx.feature_set, ctx.label, store)
    fp = fingerprint(frame_sha256(frame), ctx.cfg, ctx.model_kind, ctx.label)
    ctx.registry = ModelRegistry(ctx.workspace)
    try:
        existing = [
            v
            for v in ctx.registry.list_versions(ctx.model_name)
            if v.tags.get(FINGERPRINT_TAG) == fp
        ]
    except NotFoundError:  # no such registered model yet
        existing = []
    if existing:
        return _reuse(ctx, existing[-1], fp)
    return _train_new(ctx, fp)


def _reuse(ctx: RunContext, info: Any, fp: str) -> StageOutcome:
    """The version trained on the same data and config: reported, not retrained."""
    ctx.version, ctx.reused_info = str(info.version), info
    verdict = info.verdicts.get("backtest") or info.tags.get("quantcli.backtest.verdict")
    return StageOutcome(
        f"unchanged data and config: reusing {ctx.model_name} v{info.version} (no new version)",
        {
            "reused": True,
            "version": info.version,
            "fingerprint": fp,
            "backtest_report": _backtest_report(ctx, info.version),
        },
        gate=verdict,
    )


def _train_new(ctx: RunContext, fp: str) -> StageOutcome:
    res = train_from_store(
        ctx.model_name,
        model=ctx.model_kind,
        feature_set=ctx.feature_set,
        label=ctx.label,
        cfg=ctx.cfg,
        workspace=ctx.workspace,
    )
    ctx.registry.set_version_tags(ctx.model_name, res.version, {FINGERPRINT_TAG: fp})
    ctx.version = str(res.version)
    d = _plain(res)
    m = d.get("backtest_metrics", {})
    verdict = T.PASS if res.passed else T.FAIL
    reasons = "; ".join(res.reasons) if res.reasons else "all gates passed"
    return StageOutcome(
        f"{ctx.model_name} v{res.version} @staging; CPCV net of costs: Sharpe "
        f"{_num(m.get('sharpe'))} (gross {_num(m.get('gross_sharpe'))}), "
        f"PSR {_num(m.get('psr'))}, DSR {_num(m.get('dsr'))} "
        f"({int(m.get('n_trials', 1))} trial(s)), {pbo_statement(m)}, "
        f"max DD {_num(m.get('max_drawdown'))}, "
        f"cost drag {_pct(m.get('cost_drag_annual'))} a year, break-even cost "
        f"{_num(m.get('break_even_cost_bps'))} bps; backtest gate {verdict}: {reasons}",
        {
            **d,
            "fingerprint": fp,
            "reused": False,
            "backtest_report": _backtest_report(ctx, res.version),
        },
        gate=verdict,
    )


def _backtest_report(ctx: RunContext, version: str | int) -> str | None:
    """Copy the version's CPCV report (plots, metrics) into ``report_dir/backtest``.

    Returns that folder, or None for a version trained before the report was logged.
    """
    from mlflow.exceptions import MlflowException

    try:
        # plots and metrics are evidence for a reader, not model inputs: they are not signed
        local, _ = ctx.registry.download_artifacts(
            ctx.model_name, version, BACKTEST_ARTIFACT_PATH, ctx.report_dir, verify=False
        )
    except (OSError, MlflowException):  # an older version without a logged report
        return None
    return str(local)


# 4. validate ---------------------------------------------------------------------------------
def validate(ctx: RunContext) -> StageOutcome:
    return _gate_call(
        lambda: ctx.registry.validate(ctx.model_name, ctx.version, required=["backtest"]),
        "backtest verdict recorded on the version",
    )


def _gate_call(fn: Callable[[], Any], summary: str) -> StageOutcome:
    """A gate's call as a stage: a failed gate (raised or returned) is a ``fail`` verdict."""
    try:
        res = fn()
    except GateFailedError as exc:
        return StageOutcome(f"gate failed: {'; '.join(exc.reasons)}", exc.result or {}, gate="fail")
    if isinstance(res, Result) and not res.passed:
        return StageOutcome(f"gate failed: {'; '.join(res.reasons)}", res.to_dict(), gate="fail")
    return StageOutcome(summary + ": pass", _plain(res), gate="pass")


# 5. export, 6. scan --------------------------------------------------------------------------
def _recorded(ctx: RunContext, gate: str) -> StageOutcome | None:
    """On a reused version, a verdict already recorded is reported, not recomputed."""
    info = ctx.reused_info
    verdict = info.verdicts.get(gate) if info is not None else None
    if verdict is None:
        return None
    return StageOutcome(
        f"already recorded on v{info.version}: {gate} {verdict}",
        {"reused": True, "verdict": verdict},
        gate=verdict,
    )


def _judged(d: dict[str, Any], summary: str, failures: str) -> StageOutcome:
    """A stage that records a verdict: ``summary`` and the verdict, and on a fail the list
    under ``failures`` in ``d`` (the command's JSON)."""
    verdict = "pass" if d["passed"] else "fail"
    why = "" if d["passed"] else ": " + "; ".join(map(str, d.get(failures, [])))
    return StageOutcome(f"{summary} {verdict}{why}", d, gate=verdict)


def export(ctx: RunContext) -> StageOutcome:
    if (done := _recorded(ctx, "parity")) is not None:
        return done
    res = export_registered(ctx.model_name, ctx.version, workspace=ctx.workspace, benchmark=True)
    # the JSON of `qcli model export` (no text report)
    return _judged(_plain(res), "ONNX FP32 exported; parity", "failures")


def scan(ctx: RunContext) -> StageOutcome:
    if (done := _recorded(ctx, "scan")) is not None:
        return done
    res = scan_registered(ctx.model_name, ctx.version, workspace=ctx.workspace)
    return _judged(_plain(res), "security scan", "findings")


# 7. promote ----------------------------------------------------------------------------------
def promote(ctx: RunContext) -> StageOutcome:
    try:
        res = ctx.registry.promote(ctx.model_name, ctx.version)
        refused = list(res.reasons) if isinstance(res, Result) and not res.passed else None
    except GateFailedError as exc:
        refused = exc.reasons
    if refused is not None:
        ctx.serve_alias = "staging"
        return StageOutcome(
            f"promotion refused, {ctx.model_name} v{ctx.version} stays in staging: "
            + "; ".join(refused),
            {"promoted": False, "reasons": refused},
            gate="fail",
        )
    ctx.serve_alias = "production"
    return StageOutcome(
        f"{ctx.model_name} v{ctx.version} promoted to production",
        {"promoted": True, **_plain(res)},
        gate="pass",
    )


# 8. materialize ------------------------------------------------------------------------------
def materialize(ctx: RunContext) -> StageOutcome:
    d = _plain(
        materialize_online(
            ctx.feature_set,
            online_store=ctx.online_store,
            redis_url=ctx.redis_url,
            workspace=ctx.workspace,
        )
    )
    return StageOutcome(
        f"{d['symbols']} symbols x {d['features']} features -> {d['online_store']} "
        f"({'incremental' if d['incremental'] else 'full'})",
        d,
    )


# 9. predict ----------------------------------------------------------------------------------
def predict(ctx: RunContext) -> StageOutcome:
    alias = ctx.serve_alias or "staging"
    predictor = load_predictor(
        ctx.model_name, alias, feature_set=ctx.feature_set, workspace=ctx.workspace
    )
    try:
        with ctx.workspace.offline(read_only=True) as store:
            symbols = [
                r[0] for r in store.con.execute("SELECT DISTINCT symbol FROM bars").fetchall()
            ]
        res = _plain(predictor.predict(symbols, source="pipeline"))
    finally:
        predictor.close()
    label_txt = "" if alias == "production" else " (from STAGING: gates not passed, demo only)"
    preds = ", ".join(f"{p['symbol']} {p['prediction']:+.5f}" for p in res.get("predictions", []))
    return StageOutcome(f"{preds}{label_txt}; written to the audit ledger", {"alias": alias, **res})


# 10. drift -----------------------------------------------------------------------------------
def drift(ctx: RunContext) -> StageOutcome:
    """Drift of the last quarter of stored features against everything before it."""
    decl = load_feature_set(ctx.feature_set)
    with ctx.workspace.offline(read_only=True) as store:
        frame = store.con.sql(f'SELECT * FROM "{decl.table}"').pl()
    cut = frame["ts"].max() - timedelta(days=DRIFT_WINDOW_DAYS)
    res = DriftDetector().detect_feature_drift(
        frame.filter(pl.col("ts") <= cut), frame.filter(pl.col("ts") > cut), decl.feature_names
    )
    ctx.report_dir.mkdir(parents=True, exist_ok=True)
    html = ctx.report_dir / "drift.html"
    write_drift_report(res, html)
    # the worst features' histograms also go into the run report itself
    plots = ctx.report_dir / "drift"
    write_histogram_pngs(res, plots, max_plots=DRIFT_PLOTS_IN_RUN_REPORT)
    d = res.to_dict()
    return StageOutcome(
        f"last {DRIFT_WINDOW_DAYS} days vs the training window: {d['n_drifted']} of "
        f"{d['n_features']} features drifted ({len(d['significant_features'])} significant); "
        f"report {html}",
        {**d, "report": str(html), "report_plots": str(plots)},
    )


#: ``(name, title, stage)`` in run order.
STAGES: tuple[tuple[str, str, Callable[[RunContext], StageOutcome]], ...] = (
    ("ingest", "Ingest and validate bars", ingest),
    ("features", "Build features", features),
    ("train", "CPCV backtest, train, register", train),
    ("validate", "Validate (backtest gate)", validate),
    ("export", "ONNX export and parity", export),
    ("scan", "Model security scan", scan),
    ("promote", "Promote (gated)", promote),
    ("materialize", "Materialize online features", materialize),
    ("predict", "Predict the latest bars", predict),
    ("drift", "Drift: last quarter vs training", drift),
)
