"""The whole ONNX export of a model: convert, gate parity, quantize, benchmark, sign, report.

:func:`convert_and_validate_pipeline` exports a fitted model to files: FP32 conversion
(:mod:`quantcli.models.onnx_convert`), FP32 parity (:mod:`quantcli.serving.parity`), optional INT8
quantization (only where the graph has MatMul/Gemm operators, :mod:`quantcli.serving.quantize`)
with INT8 parity, a latency report (:mod:`quantcli.serving.latency`), sha256 and Ed25519
signatures of every written file. :func:`export_registered` does the same for a registered
version and logs the graphs that passed, with the ``parity`` verdict, to the registry.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

from quantcli.config import DEFAULTS, load_config
from quantcli.errors import GateFailedError, InputError
from quantcli.integrity import sign_file
from quantcli.models import tags as T
from quantcli.models.native import as_matrix, export_kind, n_features_of
from quantcli.models.onnx_convert import to_onnx
from quantcli.models.registry import ModelRegistry
from quantcli.results import Result, jsonable
from quantcli.serving.latency import LatencyReport, benchmark_latency, render_latency
from quantcli.serving.parity import ONNXParityTester, ParityResult
from quantcli.serving.quantize import INT8_METHODS, quantize_int8
from quantcli.serving.registered import (
    EXPORT_STEM,
    ONNX_ARTIFACT_DIR,
    TAG_INT8,
    TAG_RECOMMENDED,
    resolve_workspace,
    training_sample,
)
from quantcli.workspace import Workspace

NOT_REQUESTED = {"requested": False, "quantized": False, "reason": "not requested"}


@dataclass
class ExportedFile:
    """One written ONNX file: its path, precision, size in bytes, sha256 and signature."""

    path: str
    precision: str  # "fp32" | "int8"
    size_bytes: int
    sha256: str
    signature: str


@dataclass(frozen=True, kw_only=True)
class ExportResult(Result):
    """Everything :func:`convert_and_validate_pipeline` did.

    ``passed`` when FP32 parity passed and, if an INT8 file was written, INT8 parity too;
    ``reasons`` (also :attr:`failures`) has one line per failed parity criterion.
    """

    model_name: str
    model_kind: str
    n_features: int
    n_sample_rows: int
    fp32: ExportedFile
    fp32_parity: ParityResult
    int8: ExportedFile | None = None
    int8_parity: ParityResult | None = None
    quantization: dict[str, Any] = dataclasses.field(default_factory=lambda: dict(NOT_REQUESTED))
    latency: LatencyReport | None = None
    report_json: str | None = None
    report_txt: str | None = None

    failure_message: ClassVar[str] = "ONNX parity failed"

    @property
    def failures(self) -> list[str]:
        """One line per failed parity gate (empty when :attr:`passed`)."""
        return list(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "model_kind": self.model_kind,
            "n_features": self.n_features,
            "n_sample_rows": self.n_sample_rows,
            "fp32": asdict(self.fp32),
            "fp32_parity": self.fp32_parity.to_dict(),
            "int8": None if self.int8 is None else asdict(self.int8),
            "int8_parity": None if self.int8_parity is None else self.int8_parity.to_dict(),
            "quantization": dict(self.quantization),
            "latency": None if self.latency is None else self.latency.to_dict(),
            "report_json": self.report_json,
            "report_txt": self.report_txt,
            "passed": self.passed,
            "failures": self.failures,
        }


def parity_failures(fp32: ParityResult, int8: ParityResult | None) -> list[str]:
    """The failed criteria of both parity gates, each prefixed with its graph."""
    out = []
    for label, par in (("FP32", fp32), ("INT8", int8)):
        if par is not None and not par.passed:
            out.extend(f"{label} parity: {r}" for r in par.reasons)
    return out


def _write_signed(onx, path: Path, precision: str, keys_dir=None) -> ExportedFile:
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    onnx.save_model(onx, str(tmp))
    os.replace(tmp, path)  # a crash never leaves half a graph under the final name
    return _sign_existing(path, precision, keys_dir)


def _sign_existing(path: Path, precision: str, keys_dir=None) -> ExportedFile:
    digest, sig = sign_file(path, keys_dir)
    return ExportedFile(str(path), precision, path.stat().st_size, digest, sig)


def _check_arguments(quantize: str | None, int8_method: str, model_name: str) -> None:
    if quantize not in (None, "int8"):
        raise InputError(f"`quantize` must be None or 'int8', got quantize={quantize!r}")
    if int8_method not in INT8_METHODS:
        raise InputError(
            f"`int8_method` must be one of {', '.join(INT8_METHODS)}, "
            f"got int8_method={int8_method!r}"
        )
    if not model_name or any(c in model_name for c in "/\\") or model_name.startswith("."):
        raise InputError(f"`model_name` must be a plain file stem, got model_name={model_name!r}")


def convert_and_validate_pipeline(
    model: Any,
    model_name: str,
    X_sample: Any,
    output_dir: str | os.PathLike[str],
    *,
    quantize: str | None = "int8",
    int8_method: str = "dynamic",
    calibration: Any = None,
    parity: dict[str, float] | None = None,
    benchmark: bool = True,
    benchmark_repeats: int = 200,
    keys_dir: str | os.PathLike[str] | None = None,
) -> ExportResult:
    """Export ``model`` to ONNX FP32 (and INT8 where real), check parity, benchmark, sign.

    Parameters
    ----------
    model
        The native model: ``lightgbm.Booster`` / ``LGBMRegressor``, a scikit-learn MLP (pipeline),
        or an averaging ensemble of them (see :func:`ensemble_members`).
    model_name
        File stem of the written graphs: ``<model_name>.fp32.onnx``, ``<model_name>.int8.onnx``.
    X_sample
        Feature rows (rows x features, in the model's feature order) the parity check runs on;
        values are cast to float32 for ONNX, the native model sees them as float64.
    output_dir
        Directory the files and the report (``<model_name>.export.json`` and ``.txt``) go to.
    quantize
        ``"int8"`` (default: quantize where INT8 is real) or ``None`` (FP32 only). A graph
        without MatMul/Gemm operators (a pure tree ensemble) is reported "not quantizable" and
        no INT8 file is written; an ensemble with an MLP member is quantized in its matrix
        operators only.
    int8_method
        ``"dynamic"`` (weights INT8, activations quantized at run time), ``"static"``
        (activation ranges calibrated on ``calibration``) or ``"weight-only"`` (INT8 weights,
        FP32 activations); see :func:`~quantcli.serving.quantize.quantize_int8`.
    calibration
        Rows drawn from the training features for static calibration (default: ``X_sample``).
    parity
        Gate thresholds in percent, ``{"fp32_max_loss_pct": 0.1, "int8_max_loss_pct": 1.0}``
        (default: ``quantcli.config.DEFAULTS["parity"]``). Loss is defined in
        :class:`~quantcli.serving.parity.ONNXParityTester`.
    benchmark
        Measure native vs FP32 vs INT8 latency (single row and 1,000 rows, p50/p99 in
        microseconds) and sizes on disk; the report carries a recommendation.

    Returns
    -------
    ExportResult
        Check :attr:`ExportResult.passed` or call ``raise_if_failed()`` (what the CLI does:
        exit 1). Files are written either way, so a failure can be inspected.

    Examples
    --------
    >>> res = convert_and_validate_pipeline(booster, "demo", X, "out/")  # doctest: +SKIP
    >>> res.passed, res.fp32_parity.relative_error_pct  # doctest: +SKIP
    (True, 3.1e-05)
    """
    _check_arguments(quantize, int8_method, model_name)
    gates = dict(DEFAULTS["parity"])
    gates.update(parity or {})
    X, _ = as_matrix(X_sample)
    kind = export_kind(model)
    expected = n_features_of(model)
    if expected is not None and expected != X.shape[1]:
        raise InputError(
            f"X_sample has {X.shape[1]} columns but the model takes {expected} features",
            hint="pass the feature columns in the model's signature order",
        )
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)

    fp32 = _write_signed(
        to_onnx(model, X.shape[1]), out / f"{model_name}.fp32.onnx", "fp32", keys_dir
    )
    _, fp32_par = ONNXParityTester(max_loss_pct=gates["fp32_max_loss_pct"]).test_parity(
        model, fp32.path, X
    )
    int8 = int8_par = None
    quantization = dict(NOT_REQUESTED)
    if quantize == "int8":
        calib = X if calibration is None else as_matrix(calibration)[0]
        tester = ONNXParityTester(max_loss_pct=gates["int8_max_loss_pct"])
        int8, int8_par, quantization = _export_int8(
            model, fp32, out / f"{model_name}.int8.onnx", X, calib, int8_method, tester, keys_dir
        )
    latency = None
    if benchmark:
        int8_passed = None if int8_par is None else int8_par.passed
        latency = benchmark_latency(
            model,
            fp32.path,
            int8.path if int8 else None,
            X,
            repeats=benchmark_repeats,
            int8_parity_passed=int8_passed,
        )
    failures = parity_failures(fp32_par, int8_par)
    report_json = out / f"{model_name}.export.json"
    report_txt = out / f"{model_name}.export.txt"
    result = ExportResult(
        passed=not failures,
        reasons=failures,
        model_name=model_name,
        model_kind=kind,
        n_features=int(X.shape[1]),
        n_sample_rows=int(X.shape[0]),
        fp32=fp32,
        fp32_parity=fp32_par,
        int8=int8,
        int8_parity=int8_par,
        quantization=quantization,
        latency=latency,
        report_json=str(report_json),
        report_txt=str(report_txt),
    )
    report_json.write_text(json.dumps(jsonable(result.to_dict()), indent=2, sort_keys=True))
    report_txt.write_text(render_report(result))
    return result


def _export_int8(
    model: Any,
    fp32: ExportedFile,
    int8_path: Path,
    X: Any,
    calibration: Any,
    method: str,
    tester: ONNXParityTester,
    keys_dir: Any,
) -> tuple[ExportedFile | None, ParityResult | None, dict[str, Any]]:
    """Quantize the FP32 graph; sign the INT8 file and judge its parity when one was written."""
    q = quantize_int8(fp32.path, int8_path, method=method, calibration=calibration)
    if not q.quantized:
        return None, None, q.to_dict()
    int8 = _sign_existing(int8_path, "int8", keys_dir)
    _, parity = tester.test_parity(model, int8.path, X)
    return int8, parity, q.to_dict()


def render_report(result: ExportResult) -> str:
    """A readable plain-text report of an export (the ``.txt`` beside the JSON)."""
    lines = [
        f"ONNX export of {result.model_name} ({result.model_kind}, {result.n_features} features, "
        f"parity on {result.n_sample_rows} rows)",
        "",
        f"{'graph':<6} {'size (bytes)':>13} {'MAE':>11} {'max |diff|':>11} "
        f"{'rel err %':>10} {'flips %':>8} {'gate %':>7}  verdict",
    ]
    for f, par in ((result.fp32, result.fp32_parity), (result.int8, result.int8_parity)):
        if f is None or par is None:
            continue
        lines.append(
            f"{f.precision:<6} {f.size_bytes:>13,} {par.mae:>11.3e} {par.max_abs_diff:>11.3e} "
            f"{par.relative_error_pct:>10.4f} {par.flipped_pct:>8.3f} "
            f"{par.max_loss_pct:>7.2f}  {'PASS' if par.passed else 'FAIL'}"
        )
    q = result.quantization
    if q.get("requested") and not q.get("quantized"):
        lines += ["", f"INT8: {q.get('reason')}; FP32 kept, no INT8 file written."]
    if result.latency is not None:
        lines += ["", render_latency(result.latency.to_dict())]
    lines += ["", f"overall: {'PASS' if result.passed else 'FAIL'}"]
    lines += [f"  - {r}" for r in result.failures]
    return "\n".join(lines) + "\n"


# -- registered versions (`qcli model export`) -------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class RegisteredExport(Result):
    """:func:`export_registered`'s outcome: the export, what was logged and the verdict.

    :meth:`to_dict` is ``qcli model export --json``: the export's keys (graph paths relative to
    the run's artifacts) plus ``name``, ``version``, ``run_id``, ``feature_names``,
    ``artifacts``, ``recommended``, ``verdict`` and, when the caller chose the version,
    ``version_source``. ``report`` is the plain-text report (not in the JSON).
    """

    export: ExportResult
    name: str
    version: str
    run_id: str
    feature_names: list[str]
    artifacts: dict[str, dict[str, str]]
    recommended: str
    report: str = dataclasses.field(default="", repr=False)
    version_source: str | None = None

    @property
    def verdict(self) -> str:
        return T.PASS if self.passed else T.FAIL

    @property
    def failures(self) -> list[str]:
        return list(self.reasons)

    def message(self) -> str:
        return f"ONNX parity failed for {self.name} v{self.version} (verdict 'parity' = fail)"

    def raise_if_failed(self) -> Self:
        try:
            return super().raise_if_failed()
        except GateFailedError as exc:
            exc.hint = "see the report: onnx/model.export.txt in the version's run artifacts"
            raise

    def to_dict(self) -> dict[str, Any]:
        out = jsonable(self.export.to_dict())
        out.update(
            name=self.name,
            version=self.version,
            run_id=self.run_id,
            feature_names=list(self.feature_names),
            artifacts=self.artifacts,
            recommended=self.recommended,
            verdict=self.verdict,
        )
        for key in ("report_json", "report_txt"):
            out.pop(key, None)
        for f in ("fp32", "int8"):
            if out.get(f):
                out[f]["path"] = f"{ONNX_ARTIFACT_DIR}/{Path(out[f]['path']).name}"
        if self.version_source is not None:
            out["version_source"] = self.version_source
        return out


def export_registered(
    name: str,
    version: str | None = None,
    *,
    quantize: str | None = None,
    int8_method: str = "dynamic",
    sample_rows: int = 2000,
    workspace: Workspace | None = None,
    benchmark: bool = True,
    tracking_uri: str | None = None,
    config_path: str | None = None,
) -> RegisteredExport:
    """Export a registered version: verify and load it, convert, gate, log, record the verdict.

    The native model is loaded through the registry (sha256 + signature verified). Parity runs on
    ``sample_rows`` rows of the version's training features (offline store); static INT8 is
    calibrated on another seeded draw of them. Graphs that pass their parity gate are logged to
    the version's run under ``onnx/`` (signed, sha256 and signature as version tags) with the
    report ``onnx/model.export.json``/``.txt``; the verdict ``parity`` is ``pass`` only when every
    exported graph passed. ``result.raise_if_failed()`` turns a failed gate into exit code 1.

    ``workspace`` gives the registry, the offline store and the ``[parity]`` limits (its config);
    ``tracking_uri`` and ``config_path`` are deprecated aliases of its fields.
    """
    if sample_rows < 10:
        raise InputError(f"`--sample-rows` must be at least 10, got {sample_rows}")
    ws = resolve_workspace(workspace, tracking_uri)
    cfg = load_config(config_path) if config_path is not None else ws.config
    reg = ModelRegistry(ws.tracking_uri)
    model, info = reg.load_native_model(name, version)
    feature_names = list(model.feature_names)

    def sample(seed: int):
        return training_sample(
            info, feature_names, sample_rows, seed=seed, tracking_client=reg.client, workspace=ws
        )

    X = sample(0)
    calib = sample(1) if quantize == "int8" and int8_method == "static" else None
    work = Path(tempfile.mkdtemp(prefix="qcli-export-"))
    try:
        res = convert_and_validate_pipeline(
            model,
            EXPORT_STEM,
            X,
            work,
            quantize=quantize,
            int8_method=int8_method,
            calibration=calib,
            parity=cfg["parity"],
            benchmark=benchmark,
        )
        logged, recommended = _log_export(reg, name, info.version, res)
        reg.record_verdict(name, info.version, "parity", res.passed, res.failures)
        return RegisteredExport(
            passed=res.passed,
            reasons=res.reasons,
            export=res,
            name=name,
            version=info.version,
            run_id=info.run_id,
            feature_names=feature_names,
            artifacts=logged,
            recommended=recommended,
            report=render_report(res),
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _log_export(
    reg: ModelRegistry, name: str, version: str, res: ExportResult
) -> tuple[dict[str, dict[str, str]], str]:
    """Log the graphs that passed parity and the reports; tag the graph to serve.

    Returns the logged artifacts (path -> sha256/signature) and the recommended precision: the
    latency report's, unless that graph was not logged (INT8 that failed parity).
    """
    to_log = []
    if res.fp32_parity.passed:
        to_log.append(Path(res.fp32.path))
    if res.int8 is not None and res.int8_parity is not None and res.int8_parity.passed:
        to_log.append(Path(res.int8.path))
    to_log += [Path(res.report_json), Path(res.report_txt)]
    logged = {}
    for f in to_log:
        art = f"{ONNX_ARTIFACT_DIR}/{f.name}"
        logged[art] = reg.add_artifact(name, version, f, art)
    recommended = res.latency.recommendation if res.latency is not None else "fp32"
    if recommended == "int8" and f"{ONNX_ARTIFACT_DIR}/{EXPORT_STEM}.int8.onnx" not in logged:
        recommended = "fp32"
    reg.set_version_tags(
        name,
        version,
        {TAG_RECOMMENDED: recommended, TAG_INT8: res.quantization.get("reason", "")},
    )
    return logged, recommended


__all__ = [
    "ExportResult",
    "ExportedFile",
    "RegisteredExport",
    "convert_and_validate_pipeline",
    "export_registered",
    "render_report",
    "to_onnx",
]
