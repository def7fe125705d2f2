"""``qcli pipeline run``: the whole flow, stage by stage, on the bundled sample or your files.

Stages (each one is also a ``qcli`` command):

1. ``ingest``      -- validate and upsert bars (``qcli data ingest``)
2. ``features``    -- build the feature set, incrementally (``qcli features build``)
3. ``train``       -- CPCV backtest with gates, then refit, log lineage to MLflow, register the
                      version with alias ``staging`` (``qcli model train``)
4. ``validate``    -- record the backtest verdict on the version (``qcli model validate``)
5. ``export``      -- ONNX export and the parity gate (``qcli model export``)
6. ``scan``        -- the model security scan (``qcli model scan``)
7. ``promote``     -- move ``production`` when every verdict passes; otherwise leave the version
                      in ``staging`` and say why (``qcli model promote``)
8. ``materialize`` -- Feast online store from the same declaration (``qcli features materialize``)
9. ``predict``     -- predictions for the latest bars through the ONNX runtime, written to the
                      audit ledger, from ``production`` -- or from ``staging``, labelled as such,
                      when the gates refused promotion (``qcli predict``)
10. ``drift``      -- the last quarter against the training window (``qcli monitor drift``)

Gate verdicts are reported honestly and do not make the pipeline fail: the pipeline ran, so it
exits 0; ``strict=True`` (``--strict``) turns a failed gate into exit 1. Re-running is
idempotent: bars and features are upserted (no duplicate rows), and a new model version is
trained only when the training data or the configuration changed (a fingerprint tag on the
version).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from quantcli import __version__, config
from quantcli.pipeline.stages import StageOutcome, StageResult, StageRunner

DEFAULT_MODEL_NAME = "qcli_sample"
FINGERPRINT_TAG = "quantcli.pipeline.fingerprint"
DRIFT_WINDOW_DAYS = 91  # "the last quarter"
#: drift histograms embedded in the run report (the worst features; drift.html has them all)
DRIFT_PLOTS_IN_RUN_REPORT = 6


@dataclass
class PipelineResult:
    run_id: str
    stages: list[StageResult]
    model_name: str
    report_dir: Path
    gates: dict[str, str | None] = field(default_factory=dict)
    served_alias: str | None = None

    @property
    def ok(self) -> bool:
        return all(s.status == "ok" for s in self.stages)

    @property
    def gates_passed(self) -> bool:
        """Every stage ran and every gate judged passed: a run cut short passed no gate."""
        return self.ok and bool(self.gates) and all(v == "pass" for v in self.gates.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "ok": self.ok,
            "gates_passed": self.gates_passed,
            "gates": self.gates,
            "model_name": self.model_name,
            "served_alias": self.served_alias,
            "report_dir": str(self.report_dir),
            "report_html": str(self.report_dir / "report.html"),
            "quantcli_version": __version__,
            "stages": [s.to_dict() for s in self.stages],
        }


def _fingerprint(frame_sha: str, cfg: dict[str, Any], model: str, label: str) -> str:
    blob = json.dumps(
        {"data": frame_sha, "config": cfg, "model": model, "label": label, "v": __version__},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def run_pipeline(
    *,
    sample: bool = False,
    inputs: Sequence[str | os.PathLike[str]] = (),
    symbol: str | None = None,
    config_path: str | os.PathLike[str] | None = None,
    model_name: str = DEFAULT_MODEL_NAME,
    model_kind: str = "lgbm",
    tracking_uri: str | None = None,
    online_store: str = "sqlite",
    redis_url: str | None = None,
    on_stage: Callable[[str], None] | None = None,
    debug: bool = False,
) -> PipelineResult:
    """Run every stage; see the module docstring. Returns a :class:`PipelineResult`."""
    from quantcli.errors import InputError

    if sample == bool(inputs):
        raise InputError("give either --sample or --input PATH (one of them, not both)")
    cfg = config.load_config(config_path)
    feature_set = cfg["features"]["feature_set"]
    label = cfg["label"]["name"]
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    report_dir = config.reports_dir() / f"pipeline-{run_id}"
    runner = StageRunner(on_start=on_stage, debug=debug)
    state: dict[str, Any] = {}

    # 1. ingest -------------------------------------------------------------------------------
    def ingest() -> StageOutcome:
        from quantcli.data.ingest import ingest_files, ingest_sample
        from quantcli.data.window import TimestampWindow

        window = TimestampWindow.from_config(cfg["data"])  # the --config file's [data] window
        res = (
            ingest_sample(window=window)
            if sample
            else ingest_files(list(inputs), symbol=symbol, window=window)
        )
        d = res.to_dict()
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

    # 2. features -----------------------------------------------------------------------------
    def features() -> StageOutcome:
        from quantcli.features.build import DEFAULT_ENGINE, build_features
        from quantcli.features.inspect import stored_engine

        # extend the table with the engine its rows were built by (kernel when it is empty)
        res = build_features(
            feature_set=feature_set, engine=stored_engine(feature_set) or DEFAULT_ENGINE
        )
        d = res.to_dict()
        return StageOutcome(
            f"{d.get('rows_written', 0)} rows written to {d.get('table', feature_set)} "
            f"({d.get('mode', '')}; {d.get('warmup_rows_dropped', 0)} warm-up rows dropped)",
            d,
        )

    # 3. train (CPCV backtest inside) ---------------------------------------------------------
    def train() -> StageOutcome:
        from quantcli.backtest.stored import load_backtest_frame
        from quantcli.models import tags as T
        from quantcli.models.registry import ModelRegistry
        from quantcli.models.trainer import frame_sha256, train_from_store
        from quantcli.store.offline import OfflineStore

        with OfflineStore(read_only=True) as store:
            # the frame the trainer fits and backtests (features, label, fwd_return_1d), so
            # the fingerprint covers every column the version depends on
            frame, _ = load_backtest_frame(feature_set, label, store)
        fp = _fingerprint(frame_sha256(frame), cfg, model_kind, label)
        state["train_start"], state["train_end"] = frame["ts"].min(), frame["ts"].max()
        registry = ModelRegistry(tracking_uri)
        state["registry"] = registry
        try:
            existing = [
                v for v in registry.list_versions(model_name) if v.tags.get(FINGERPRINT_TAG) == fp
            ]
        except Exception:  # no such registered model yet
            existing = []
        if existing:
            info = existing[-1]
            state["version"] = str(info.version)
            state["reused_info"] = info
            verdict = info.verdicts.get("backtest") or info.tags.get("quantcli.backtest.verdict")
            return StageOutcome(
                f"unchanged data and config: reusing {model_name} v{info.version} (no new version)",
                {
                    "reused": True,
                    "version": info.version,
                    "fingerprint": fp,
                    "backtest_report": _backtest_report(
                        registry, model_name, info.version, report_dir
                    ),
                },
                gate=verdict,
            )
        res = train_from_store(
            model_name,
            model=model_kind,
            feature_set=feature_set,
            label=label,
            tracking_uri=tracking_uri,
            cfg=cfg,
        )
        registry.set_version_tags(model_name, res.version, {FINGERPRINT_TAG: fp})
        state["version"] = str(res.version)
        from quantcli.backtest.stored import pbo_statement

        d = res.to_dict()
        m = d.get("backtest_metrics", {})
        verdict = T.PASS if res.passed else T.FAIL
        reasons = "; ".join(res.reasons) if res.reasons else "all gates passed"
        return StageOutcome(
            f"{model_name} v{res.version} @staging; CPCV net of costs: Sharpe "
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
                "backtest_report": _backtest_report(registry, model_name, res.version, report_dir),
            },
            gate=verdict,
        )

    # 4. validate -----------------------------------------------------------------------------
    def validate() -> StageOutcome:
        return _gate_call(
            lambda: state["registry"].validate(model_name, state["version"], required=["backtest"]),
            "backtest verdict recorded on the version",
        )

    # 5. export -------------------------------------------------------------------------------
    def recorded(gate: str) -> StageOutcome | None:
        """On a reused version, a verdict already recorded is reported, not recomputed."""
        info = state.get("reused_info")
        verdict = info.verdicts.get(gate) if info is not None else None
        if verdict is None:
            return None
        return StageOutcome(
            f"already recorded on v{info.version}: {gate} {verdict}",
            {"reused": True, "verdict": verdict},
            gate=verdict,
        )

    def export() -> StageOutcome:
        from quantcli.serving.onnx_export import export_registered

        if (done := recorded("parity")) is not None:
            return done

        res = export_registered(
            model_name,
            state["version"],
            tracking_uri=tracking_uri,
            config_path=config_path,
            benchmark=True,
        )
        res.pop("report", None)
        verdict = "pass" if res["passed"] else "fail"
        return StageOutcome(
            f"ONNX FP32 exported; parity {verdict}"
            + ("" if res["passed"] else f": {'; '.join(res.get('failures', []))}"),
            res,
            gate=verdict,
        )

    # 6. scan ---------------------------------------------------------------------------------
    def scan() -> StageOutcome:
        from quantcli.serving.scan import scan_registered

        if (done := recorded("scan")) is not None:
            return done

        res = scan_registered(model_name, state["version"], tracking_uri=tracking_uri)
        verdict = "pass" if res["passed"] else "fail"
        return StageOutcome(
            f"security scan {verdict}"
            + ("" if res["passed"] else f": {'; '.join(map(str, res.get('findings', [])))}"),
            res,
            gate=verdict,
        )

    # 7. promote ------------------------------------------------------------------------------
    def promote() -> StageOutcome:
        from quantcli.errors import GateFailedError

        registry = state["registry"]
        try:
            res = registry.promote(model_name, state["version"])
        except GateFailedError as exc:
            state["serve_alias"] = "staging"
            return StageOutcome(
                f"promotion refused, {model_name} v{state['version']} stays in staging: "
                + "; ".join(exc.reasons),
                {"promoted": False, "reasons": exc.reasons},
                gate="fail",
            )
        state["serve_alias"] = "production"
        return StageOutcome(
            f"{model_name} v{state['version']} promoted to production",
            {"promoted": True, **res},
            gate="pass",
        )

    # 8. materialize --------------------------------------------------------------------------
    def materialize() -> StageOutcome:
        from quantcli.online import materialize as do_materialize

        res = do_materialize(feature_set, online_store=online_store, redis_url=redis_url)
        return StageOutcome(
            f"{res['symbols']} symbols x {res['features']} features -> {res['online_store']} "
            f"({'incremental' if res['incremental'] else 'full'})",
            res.to_dict(),
        )

    # 9. predict ------------------------------------------------------------------------------
    def predict() -> StageOutcome:
        from quantcli.serving.predict import load_predictor

        alias = state.get("serve_alias", "staging")
        predictor = load_predictor(
            model_name, alias, feature_set=feature_set, tracking_uri=tracking_uri
        )
        try:
            symbols = _symbols()
            res = predictor.predict(symbols, source="pipeline")
        finally:
            predictor.close()
        label_txt = "" if alias == "production" else " (from STAGING: gates not passed, demo only)"
        preds = ", ".join(
            f"{p['symbol']} {p['prediction']:+.5f}" for p in res.get("predictions", [])
        )
        return StageOutcome(
            f"{preds}{label_txt}; written to the audit ledger", {"alias": alias, **res}
        )

    # 10. drift -------------------------------------------------------------------------------
    def drift() -> StageOutcome:
        res, html = _drift_report(feature_set, report_dir)
        n = res["n_drifted"]
        return StageOutcome(
            f"last {DRIFT_WINDOW_DAYS} days vs the training window: {n} of {res['n_features']} "
            f"features drifted ({len(res['significant_features'])} significant); report {html}",
            {**res, "report": str(html), "report_plots": str(report_dir / "drift")},
        )

    for name, title, fn in [
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
    ]:
        runner.run(name, title, fn)

    gates = {s.name: s.gate for s in runner.results if s.gate is not None}
    result = PipelineResult(
        run_id=run_id,
        stages=runner.results,
        model_name=model_name,
        report_dir=report_dir,
        gates=gates,
        served_alias=state.get("serve_alias"),
    )
    from quantcli.pipeline.report import write_report

    write_report(result)
    return result


def _gate_call(fn: Callable[[], dict[str, Any]], summary: str) -> StageOutcome:
    from quantcli.errors import GateFailedError

    try:
        res = fn()
    except GateFailedError as exc:
        return StageOutcome(f"gate failed: {'; '.join(exc.reasons)}", exc.result or {}, gate="fail")
    return StageOutcome(summary + ": pass", res, gate="pass")


def _symbols() -> list[str]:
    from quantcli.store.offline import OfflineStore

    with OfflineStore(read_only=True) as store:
        return [r[0] for r in store.con.execute("SELECT DISTINCT symbol FROM bars").fetchall()]


def _backtest_report(registry: Any, name: str, version: str | int, report_dir: Path) -> str | None:
    """Copy the version's CPCV report (plots, metrics) into ``report_dir/backtest``.

    Returns that folder, or None for a version trained before the report was logged.
    """
    from mlflow.exceptions import MlflowException

    from quantcli.models.trainer import BACKTEST_ARTIFACT_PATH

    try:
        # plots and metrics are evidence for a reader, not model inputs: they are not signed
        local, _ = registry.download_artifacts(
            name, version, BACKTEST_ARTIFACT_PATH, report_dir, verify=False
        )
    except (OSError, MlflowException):  # an older version without a logged report
        return None
    return str(local)


def _num(x: Any) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _pct(x: Any) -> str:
    return "n/a" if x is None else f"{x:.2%}"


def _drift_report(feature_set: str, report_dir: Path) -> tuple[dict[str, Any], Path]:
    """Drift of the last quarter of stored features against everything before it."""
    import polars as pl

    from quantcli.features import load_feature_set
    from quantcli.monitoring.drift import DriftDetector
    from quantcli.store.offline import OfflineStore

    decl = load_feature_set(feature_set)
    with OfflineStore(read_only=True) as store:
        frame = store.con.sql(f'SELECT * FROM "{decl.table}"').pl()
    last = frame["ts"].max()
    cut = last - timedelta(days=DRIFT_WINDOW_DAYS)
    baseline = frame.filter(pl.col("ts") <= cut)
    current = frame.filter(pl.col("ts") > cut)
    res = DriftDetector().detect_feature_drift(baseline, current, decl.feature_names)
    d = res.to_dict()
    report_dir.mkdir(parents=True, exist_ok=True)
    html = report_dir / "drift.html"
    from quantcli.monitoring.report import write_drift_report, write_histogram_pngs

    write_drift_report(res, html)
    # the worst features' histograms also go into the run report itself
    write_histogram_pngs(res, report_dir / "drift", max_plots=DRIFT_PLOTS_IN_RUN_REPORT)
    return d, html
