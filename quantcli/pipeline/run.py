"""``qcli pipeline run``: the whole flow, stage by stage, on the bundled sample or your files.

Stages (each one is also a ``qcli`` command; the stage functions are in
:mod:`quantcli.pipeline.steps`):

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
passes; ``strict=True`` (``--strict``) makes a failed gate fail the run. Re-running is
idempotent: bars and features are upserted (no duplicate rows), and a new model version is
trained only when the training data or the configuration changed (a fingerprint tag on the
version).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from quantcli import __version__
from quantcli.data.reader import check_bar_file
from quantcli.errors import InputError
from quantcli.models.estimators import check_model_kind
from quantcli.models.versions import check_model_name
from quantcli.pipeline.report import write_report
from quantcli.pipeline.stages import StageResult, StageRunner
from quantcli.pipeline.steps import (
    DRIFT_PLOTS_IN_RUN_REPORT,
    DRIFT_WINDOW_DAYS,
    FINGERPRINT_TAG,
    STAGES,
    RunContext,
)
from quantcli.results import Result
from quantcli.workspace import Workspace

DEFAULT_MODEL_NAME = "qcli_sample"


@dataclasses.dataclass(frozen=True)
class PipelineResult(Result):
    """One pipeline run: its stages, the gate verdicts, the alias predictions came from.

    ``ok``: every stage ran. ``gates_passed``: every stage ran and every gate judged passed (a
    run cut short passed no gate). ``passed`` is ``ok``, and with ``strict`` also
    ``gates_passed``; ``reasons`` name the failed stage or the failed gates.
    """

    run_id: str
    stages: list[StageResult]
    model_name: str
    report_dir: Path
    gates: dict[str, str | None] = dataclasses.field(default_factory=dict)
    served_alias: str | None = None
    strict: bool = dataclasses.field(default=False, kw_only=True)
    passed: bool = dataclasses.field(default=False, kw_only=True)  # derived, see __post_init__

    def __post_init__(self) -> None:
        failed = [s for s in self.stages if s.status == "failed"]
        reasons = [f"{s.title} failed: {s.error}" for s in failed]
        if not failed and self.strict and not self.gates_passed:
            reasons = [f"gate {name}: {v}" for name, v in self.gates.items() if v != "pass"]
            reasons = reasons or ["no gate was judged"]
        object.__setattr__(self, "passed", self.ok and (self.gates_passed or not self.strict))
        object.__setattr__(self, "reasons", tuple(reasons))

    @property
    def ok(self) -> bool:
        return all(s.status == "ok" for s in self.stages)

    @property
    def gates_passed(self) -> bool:
        """Every stage ran and every gate judged passed: a run cut short passed no gate."""
        return self.ok and bool(self.gates) and all(v == "pass" for v in self.gates.values())

    @property
    def crashed(self) -> bool:
        """A stage raised something other than a quantcli error (its traceback is kept)."""
        return any(s.status == "failed" and "traceback" in s.details for s in self.stages)

    def message(self) -> str:
        if not self.ok:
            return "the pipeline stopped: a stage failed"
        return "the pipeline ran, but its gates did not all pass (--strict)"

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


def run_pipeline(
    *,
    sample: bool = False,
    inputs: Sequence[str | os.PathLike[str]] = (),
    symbol: str | None = None,
    model_name: str = DEFAULT_MODEL_NAME,
    model_kind: str = "lgbm",
    online_store: str = "sqlite",
    redis_url: str | None = None,
    strict: bool = False,
    on_stage: Callable[[str], None] | None = None,
    debug: bool = False,
    workspace: Workspace | None = None,
    config_path: str | os.PathLike[str] | None = None,
    tracking_uri: str | None = None,
) -> PipelineResult:
    """Run every stage; see the module docstring. Writes the run report and returns it.

    ``workspace`` (default :meth:`Workspace.from_env`) gives the stores, the registry and the
    config (``[features] feature_set``, ``[label] name``, ...). ``config_path`` and
    ``tracking_uri`` are deprecated aliases of its fields. ``on_stage`` hears each stage's
    title as it starts; ``debug`` re-raises a failed stage's exception.
    """
    if sample == bool(inputs):
        raise InputError("give either --sample or --input PATH (one of them, not both)")
    # bad input is refused before any stage writes (a stage's InputError is a failed stage)
    check_model_name(model_name)
    check_model_kind(model_kind)
    for path in inputs:
        check_bar_file(path, f"--input {path}")
    ws = workspace or Workspace.from_env(tracking_uri=tracking_uri, config=config_path)
    if workspace is not None and (tracking_uri is not None or config_path is not None):
        ws = dataclasses.replace(
            ws,
            tracking_uri=tracking_uri or ws.tracking_uri,
            config_path=Path(config_path) if config_path is not None else ws.config_path,
        )
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    ctx = RunContext(
        workspace=ws,
        model_name=model_name,
        model_kind=model_kind,
        report_dir=ws.reports_dir / f"pipeline-{run_id}",
        sample=sample,
        inputs=[str(p) for p in inputs],
        symbol=symbol,
        online_store=online_store,
        redis_url=redis_url,
    )
    _ = ws.config  # a bad --config is bad input (exit 2), before any stage runs
    runner = StageRunner(on_start=on_stage, debug=debug)
    for name, title, stage in STAGES:
        runner.run(name, title, partial(stage, ctx))
    result = PipelineResult(
        run_id=run_id,
        stages=runner.results,
        model_name=model_name,
        report_dir=ctx.report_dir,
        gates={s.name: s.gate for s in runner.results if s.gate is not None},
        served_alias=ctx.serve_alias,
        strict=strict,
    )
    write_report(result)
    return result


__all__ = [
    "DEFAULT_MODEL_NAME",
    "DRIFT_PLOTS_IN_RUN_REPORT",
    "DRIFT_WINDOW_DAYS",
    "FINGERPRINT_TAG",
    "PipelineResult",
    "run_pipeline",
]
