"""Convert a native model (LightGBM, MLP, or their ensemble) to ONE ONNX graph and validate it.

Conventions
-----------
* One float32 input named ``input`` of shape ``[N, n_features]`` (features in the signature's
  order) and one float32 output named ``variable`` of shape ``[N, 1]`` (the predicted forward
  return, a fraction). No ZipMap.
* LightGBM goes through ``onnxmltools.convert_lightgbm(..., target_opset=15, zipmap=False)``
  (opsets above 15 are refused by that converter); the MLP (a scikit-learn ``MLPRegressor``,
  usually behind a ``StandardScaler`` in a ``Pipeline``) through ``skl2onnx.convert_sklearn``.
* An ensemble becomes one graph: each member's sub-graph reads the shared ``input``, their outputs
  are multiplied by the member weights and summed. One session, one call.

:func:`convert_and_validate_pipeline` is the whole export: FP32 conversion, FP32 parity, optional
INT8 quantization (only where the graph has MatMul/Gemm operators) with INT8 parity, a latency
report, sha256 and Ed25519 signatures of every written file.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from quantcli.errors import InputError

INPUT_NAME = "input"
OUTPUT_NAME = "variable"
TARGET_OPSET = 15
# skl2onnx would pick its newest opset; the composed graph must share one opset per domain.
_SKL_OPSET = {"": TARGET_OPSET, "ai.onnx.ml": 1}

MODEL_KINDS = ("lgbm", "mlp", "ensemble")


# -- what kind of model is this? ----------------------------------------------------------------
def _is_lightgbm(model: Any) -> bool:
    mod = type(model).__module__
    return mod.startswith("lightgbm")


def _is_sklearn(model: Any) -> bool:
    return type(model).__module__.startswith("sklearn")


def _unwrap_member(member: Any) -> Any:
    """The estimator inside a ``(name, estimator)`` pair or a loaded member (``.obj``)."""
    if isinstance(member, tuple) and len(member) == 2 and isinstance(member[0], str):
        member = member[1]
    obj = getattr(member, "obj", None)  # quantcli.models.serialize._Member
    return member if obj is None else obj


def ensemble_members(model: Any) -> list[tuple[Any, float]] | None:
    """The ``(member, weight)`` pairs of an averaging ensemble, or ``None`` for a single model.

    Recognised: an object with a ``members`` list of estimators or ``(name, estimator)`` pairs
    (``quantcli.models`` ``EnsembleRegressor`` and a loaded ``NativeModel``), with optional
    ``weights``; and scikit-learn's ``VotingRegressor``. Weights are normalised to sum to 1;
    no weights means a plain average. A one-member container is that member, not an ensemble.
    """
    members = getattr(model, "members", None)
    if members is None and type(model).__name__ == "VotingRegressor":
        members = getattr(model, "estimators_", None)
    if members is None:
        return None
    members = list(members.values()) if isinstance(members, dict) else list(members)
    if not members:
        raise InputError("the ensemble has no members: nothing to export")
    members = [_unwrap_member(m) for m in members]
    weights = getattr(model, "weights", None)
    w = np.ones(len(members)) if weights is None else np.asarray(weights, dtype=float)
    if w.shape != (len(members),) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise InputError(
            f"ensemble weights must be {len(members)} finite non-negative numbers with a positive "
            f"sum, got weights={list(np.ravel(w))}"
        )
    w = w / w.sum()
    return [(m, float(wi)) for m, wi in zip(members, w, strict=True)]


def _single(model: Any) -> Any:
    """A one-member container (a loaded ``NativeModel`` of kind lgbm/mlp) -> its estimator."""
    members = getattr(model, "members", None)
    if members is not None and not isinstance(members, dict) and len(list(members)) == 1:
        return _unwrap_member(next(iter(members)))
    return model


def model_kind(model: Any) -> str:
    """``"lgbm"``, ``"mlp"`` or ``"ensemble"``; :class:`InputError` for anything else."""
    model = _single(model)
    if ensemble_members(model) is not None:
        return "ensemble"
    if _is_lightgbm(model):
        return "lgbm"
    if _is_sklearn(model):
        return "mlp"
    raise InputError(
        f"cannot export a model of type {type(model).__module__}.{type(model).__name__}",
        hint="export supports lightgbm (Booster or LGBMRegressor), a scikit-learn MLP pipeline, "
        "and an ensemble of them",
    )


def n_features_of(model: Any) -> int | None:
    """The number of input features the native model expects, when it says."""
    model = _single(model)
    members = ensemble_members(model)
    if members is not None:
        return n_features_of(members[0][0])
    if hasattr(model, "num_feature"):  # lightgbm.Booster
        return int(model.num_feature())
    n = getattr(model, "n_features_in_", None)
    return int(n) if n is not None else None


def native_predict(model: Any, X: np.ndarray) -> np.ndarray:
    """Predictions of the native model as a float64 vector (the reference for parity)."""
    members = ensemble_members(model)
    if members is not None and not hasattr(model, "predict"):
        return sum(w * native_predict(m, X) for m, w in members)
    return np.asarray(model.predict(X), dtype=np.float64).reshape(-1)


# -- conversion -------------------------------------------------------------------------------
def _convert_single(model: Any, n_features: int):
    """The ONNX ModelProto of one member (lgbm or mlp), input ``input``, output ``variable``."""
    model = _single(model)
    kind = model_kind(model)
    if kind == "lgbm":
        from onnxmltools import convert_lightgbm
        from onnxmltools.convert.common.data_types import FloatTensorType

        booster = model.booster_ if hasattr(model, "booster_") else model
        onx = convert_lightgbm(
            booster,
            initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
            target_opset=TARGET_OPSET,
            zipmap=False,
        )
        exact_float32_thresholds(onx, booster)
    else:
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import FloatTensorType

        onx = convert_sklearn(
            _registered_sklearn(model),
            initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
            target_opset=_SKL_OPSET,
        )
    outputs = [o.name for o in onx.graph.output]
    if len(outputs) != 1:
        raise InputError(f"the converted {kind} graph has {len(outputs)} outputs, expected 1")
    if outputs[0] != OUTPUT_NAME:
        _rename(onx.graph, outputs[0], OUTPUT_NAME)
    return onx


def exact_float32_thresholds(onx, booster) -> int:
    """Make every ``x <= threshold`` split of the tree graph exact for float32 inputs.

    LightGBM splits on float64 thresholds; the ONNX tree operator holds float32 ones, and
    onnxmltools rounds each to the *nearest* float32. When that rounds up, a float32 feature
    ``x`` with ``t64 < x <= float32(t64)`` goes left in ONNX and right in LightGBM: the whole
    leaf changes (measured: 7.2e-3 on one row in 1,000 of a 300-tree model whose leaves are
    ~1e-2). The largest float32 not above ``t64`` decides every float32 ``x`` exactly as ``t64``
    does, so each rounded-up threshold is moved one float32 step down.

    The ONNX trees are walked beside the booster's dump (true branch = left child), so each
    node gets its own float64 threshold; a node whose feature or rounding does not match is a
    converter change this function does not understand, and raises. Returns the number of
    thresholds moved. ``onx`` is changed in place.
    """
    from onnx import helper

    node = next((n for n in onx.graph.node if n.op_type == "TreeEnsembleRegressor"), None)
    if node is None:
        raise InputError("the converted LightGBM graph has no TreeEnsembleRegressor node")
    attrs = {a.name: a for a in node.attribute}
    get = {k: helper.get_attribute_value(a) for k, a in attrs.items() if k.startswith("nodes_")}
    values = np.asarray(get["nodes_values"], dtype=np.float32)
    ids = zip(get["nodes_treeids"], get["nodes_nodeids"], strict=True)
    index = {(t, n): i for i, (t, n) in enumerate(ids)}
    moved = 0
    for tree_id, info in enumerate(booster.dump_model()["tree_info"]):
        stack = [(info["tree_structure"], 0)]
        while stack:
            split, node_id = stack.pop()
            if "split_index" not in split:
                continue
            i = index[(tree_id, node_id)]
            t64 = float(split["threshold"])
            if (
                get["nodes_modes"][i] != b"BRANCH_LEQ"
                or split["decision_type"] != "<="
                or get["nodes_featureids"][i] != split["split_feature"]
                or values[i] != np.float32(t64)
            ):
                raise InputError(
                    f"tree {tree_id} node {node_id}: the ONNX split does not match LightGBM's",
                    hint="onnxmltools changed how it writes trees; export with a pinned version",
                )
            if float(values[i]) > t64:
                values[i] = np.nextafter(values[i], np.float32(-np.inf))
                moved += 1
            stack.append((split["left_child"], get["nodes_truenodeids"][i]))
            stack.append((split["right_child"], get["nodes_falsenodeids"][i]))
    attrs["nodes_values"].CopyFrom(helper.make_attribute("nodes_values", values.tolist()))
    return moved


def _registered_sklearn(model: Any) -> Any:
    """``model`` with every MLPRegressor subclass replaced by a plain fitted ``MLPRegressor``.

    skl2onnx looks converters up by exact class; quantcli's ``StandardizedTargetMLP`` is, once
    fitted, an ordinary MLP (its target scale is folded into the output layer), so a plain copy
    of its fitted state converts to the same graph.
    """
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import Pipeline

    if isinstance(model, Pipeline):
        return Pipeline([(name, _registered_sklearn(step)) for name, step in model.steps])
    if isinstance(model, MLPRegressor) and type(model) is not MLPRegressor:
        plain = MLPRegressor()
        plain.__dict__.update(model.__dict__)
        return plain
    return model


def _rename(graph, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
    for vi in list(graph.output) + list(graph.input) + list(graph.value_info):
        if vi.name == old:
            vi.name = new


def compose_average(members: list[tuple[Any, float]], n_features: int):
    """One ONNX graph computing ``sum_i w_i * member_i(input)``.

    Every member's node, edge and initializer name gets the prefix ``m<i>_`` except the shared
    ``input``; the opset of each domain is the highest any member needs.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, value_infos, scaled = [], [], [], []
    opsets: dict[str, int] = {}
    for i, (member, weight) in enumerate(members):
        if model_kind(member) == "ensemble":
            raise InputError("nested ensembles are not supported: flatten the members")
        onx = _convert_single(member, n_features)
        for imp in onx.opset_import:
            opsets[imp.domain] = max(opsets.get(imp.domain, 0), imp.version)
        sub = onx.graph
        prefix = f"m{i}_"

        def ren(name: str, prefix: str = prefix) -> str:
            return name if name in ("", INPUT_NAME) else prefix + name

        for node in sub.node:
            node.name = ren(node.name or f"{node.op_type}_{len(nodes)}")
            node.input[:] = [ren(n) for n in node.input]
            node.output[:] = [ren(n) for n in node.output]
            nodes.append(node)
        for init in sub.initializer:
            init.name = ren(init.name)
            inits.append(init)
        for vi in sub.value_info:
            vi.name = ren(vi.name)
            value_infos.append(vi)
        w_name = f"{prefix}weight"
        inits.append(numpy_helper.from_array(np.array([weight], dtype=np.float32), w_name))
        out = ren(OUTPUT_NAME)
        nodes.append(helper.make_node("Mul", [out, w_name], [f"{out}_w"], name=f"{prefix}scale"))
        scaled.append(f"{out}_w")
    nodes.append(helper.make_node("Sum", scaled, [OUTPUT_NAME], name="ensemble_average"))
    graph = helper.make_graph(
        nodes,
        "quantcli_ensemble",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [None, n_features])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [None, 1])],
        initializer=inits,
        value_info=value_infos,
    )
    opsets[""] = max(opsets.get("", 0), TARGET_OPSET)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid(d, v) for d, v in sorted(opsets.items())],
        producer_name="quantcli",
    )
    model.ir_version = min(model.ir_version, 8)  # readable by onnxruntime >= 1.14
    onnx.checker.check_model(model)
    return model


def to_onnx(model: Any, n_features: int | None = None):
    """The FP32 ONNX ``ModelProto`` of ``model`` (lgbm, mlp or ensemble), checked by onnx."""
    import onnx

    n = n_features if n_features is not None else n_features_of(model)
    if n is None or n < 1:
        raise InputError(
            f"cannot tell how many features the model takes (got n_features={n})",
            hint="pass n_features, or X_sample with one column per feature",
        )
    model = _single(model)
    members = ensemble_members(model)
    if members is not None:
        return compose_average(members, n)
    onx = _convert_single(model, n)
    # the converters name the graph with a random uuid; a fixed name keeps the bytes (and so the
    # sha256 that signatures and verdicts bind to) equal for the same model
    onx.graph.name = "quantcli"
    onnx.checker.check_model(onx)
    return onx


# -- the whole export ---------------------------------------------------------------------------
@dataclass
class ExportedFile:
    """One written ONNX file: its path, precision, size in bytes, sha256 and signature."""

    path: str
    precision: str  # "fp32" | "int8"
    size_bytes: int
    sha256: str
    signature: str


@dataclass
class ExportResult:
    """Everything :func:`convert_and_validate_pipeline` did, JSON-able via :meth:`to_dict`."""

    model_name: str
    model_kind: str
    n_features: int
    n_sample_rows: int
    fp32: ExportedFile
    fp32_parity: dict[str, Any]
    int8: ExportedFile | None = None
    int8_parity: dict[str, Any] | None = None
    quantization: dict[str, Any] = field(default_factory=dict)
    latency: dict[str, Any] | None = None
    report_json: str | None = None
    report_txt: str | None = None

    @property
    def passed(self) -> bool:
        """True when FP32 parity passed and, if an INT8 file was written, INT8 parity too."""
        ok = bool(self.fp32_parity["passed"])
        if self.int8_parity is not None:
            ok = ok and bool(self.int8_parity["passed"])
        return ok

    @property
    def failures(self) -> list[str]:
        """One line per failed parity gate (empty when :attr:`passed`)."""
        out = []
        for label, par in (("FP32", self.fp32_parity), ("INT8", self.int8_parity)):
            if par is not None and not par["passed"]:
                out.extend(f"{label} parity: {r}" for r in par["reasons"])
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["passed"] = self.passed
        d["failures"] = self.failures
        return d


def _as_matrix(X_sample: Any) -> tuple[np.ndarray, list[str] | None]:
    """``X_sample`` (NumPy, Polars or pandas) as a float64 matrix, and its column names."""
    names = None
    if hasattr(X_sample, "columns") and hasattr(X_sample, "to_numpy"):
        names = [str(c) for c in X_sample.columns]
        X = X_sample.to_numpy()
    else:
        X = np.asarray(X_sample)
    if X.ndim != 2 or X.shape[0] == 0:
        raise InputError(
            f"X_sample must be a non-empty 2-D table (rows x features), got shape {X.shape}"
        )
    try:
        X = X.astype(np.float64)
    except (TypeError, ValueError):
        raise InputError("X_sample must be numeric (float features)") from None
    return X, names


def _write_signed(onx, path: Path, precision: str, keys_dir=None) -> ExportedFile:
    import onnx

    from quantcli.integrity import sign_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    onnx.save_model(onx, str(tmp))
    os.replace(tmp, path)  # a crash never leaves half a graph under the final name
    digest, sig = sign_file(path, keys_dir)
    return ExportedFile(str(path), precision, path.stat().st_size, digest, sig)


def _sign_existing(path: Path, precision: str, keys_dir=None) -> ExportedFile:
    from quantcli.integrity import sign_file

    digest, sig = sign_file(path, keys_dir)
    return ExportedFile(str(path), precision, path.stat().st_size, digest, sig)


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
        Check :attr:`ExportResult.passed`; the caller decides what a failure means (the CLI
        exits 1). Files are written either way, so a failure can be inspected.

    Examples
    --------
    >>> res = convert_and_validate_pipeline(booster, "demo", X, "out/")  # doctest: +SKIP
    >>> res.passed, res.fp32_parity["relative_error_pct"]  # doctest: +SKIP
    (True, 3.1e-05)
    """
    from quantcli.config import DEFAULTS
    from quantcli.serving.parity import ONNXParityTester
    from quantcli.serving.quantize import INT8_METHODS, quantize_int8

    if quantize not in (None, "int8"):
        raise InputError(f"`quantize` must be None or 'int8', got quantize={quantize!r}")
    if int8_method not in INT8_METHODS:
        raise InputError(
            f"`int8_method` must be one of {', '.join(INT8_METHODS)}, "
            f"got int8_method={int8_method!r}"
        )
    if not model_name or any(c in model_name for c in "/\\") or model_name.startswith("."):
        raise InputError(f"`model_name` must be a plain file stem, got model_name={model_name!r}")
    gates = dict(DEFAULTS["parity"])
    gates.update(parity or {})
    X, _ = _as_matrix(X_sample)
    kind = model_kind(model)
    expected = n_features_of(model)
    if expected is not None and expected != X.shape[1]:
        raise InputError(
            f"X_sample has {X.shape[1]} columns but the model takes {expected} features",
            hint="pass the feature columns in the model's signature order",
        )
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)

    onx = to_onnx(model, X.shape[1])
    fp32 = _write_signed(onx, out / f"{model_name}.fp32.onnx", "fp32", keys_dir)
    _, fp32_par = ONNXParityTester(max_loss_pct=gates["fp32_max_loss_pct"]).test_parity(
        model, fp32.path, X
    )
    result = ExportResult(
        model_name=model_name,
        model_kind=kind,
        n_features=int(X.shape[1]),
        n_sample_rows=int(X.shape[0]),
        fp32=fp32,
        fp32_parity=fp32_par,
    )

    if quantize == "int8":
        calib = X if calibration is None else _as_matrix(calibration)[0]
        int8_path = out / f"{model_name}.int8.onnx"
        q = quantize_int8(fp32.path, int8_path, method=int8_method, calibration=calib)
        result.quantization = q.to_dict()
        if q.quantized:
            result.int8 = _sign_existing(int8_path, "int8", keys_dir)
            _, result.int8_parity = ONNXParityTester(
                max_loss_pct=gates["int8_max_loss_pct"]
            ).test_parity(model, result.int8.path, X)
    else:
        result.quantization = {"requested": False, "quantized": False, "reason": "not requested"}

    if benchmark:
        from quantcli.serving.latency import benchmark_latency

        report = benchmark_latency(
            model,
            fp32.path,
            result.int8.path if result.int8 else None,
            X,
            repeats=benchmark_repeats,
            int8_parity_passed=None if result.int8_parity is None else result.int8_parity["passed"],
        )
        result.latency = report.to_dict()

    report_json = out / f"{model_name}.export.json"
    report_txt = out / f"{model_name}.export.txt"
    result.report_json, result.report_txt = str(report_json), str(report_txt)
    report_json.write_text(json.dumps(_jsonable(result.to_dict()), indent=2, sort_keys=True))
    report_txt.write_text(render_report(result))
    return result


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


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
            f"{f.precision:<6} {f.size_bytes:>13,} {par['mae']:>11.3e} "
            f"{par['max_abs_diff']:>11.3e} "
            f"{par['relative_error_pct']:>10.4f} {par['flipped_pct']:>8.3f} "
            f"{par['max_loss_pct']:>7.2f}  {'PASS' if par['passed'] else 'FAIL'}"
        )
    q = result.quantization
    if q.get("requested") and not q.get("quantized"):
        lines += ["", f"INT8: {q.get('reason')}; FP32 kept, no INT8 file written."]
    if result.latency:
        from quantcli.serving.latency import render_latency

        lines += ["", render_latency(result.latency)]
    lines += ["", f"overall: {'PASS' if result.passed else 'FAIL'}"]
    lines += [f"  - {r}" for r in result.failures]
    return "\n".join(lines) + "\n"


# -- registered versions (used by `qcli model export` and `qcli model scan`) ------------------
ONNX_ARTIFACT_DIR = "onnx"
EXPORT_STEM = "model"
TAG_RECOMMENDED = "quantcli.onnx.recommended"  # fp32 | int8: the graph the runtime loads
TAG_INT8 = "quantcli.onnx.int8"  # what happened to INT8 (quantized / not quantizable / ...)


def training_sample(
    info: Any,
    feature_names: list[str],
    n_rows: int,
    *,
    seed: int = 0,
    tracking_client: Any = None,
) -> np.ndarray:
    """``n_rows`` feature rows drawn (seeded, in time order) from the version's training data.

    The rows come from the offline store's feature table of the version's feature set, within
    the time range of its dataset manifest; rows with a non-finite feature (warm-up) are skipped.
    """
    import json as _json

    from quantcli.features.dataset import load_training_frame
    from quantcli.models import tags as T

    tags = dict(info.tags)
    start = end = None
    if tracking_client is not None:
        run_tags = tracking_client.get_run(info.run_id).data.tags
        manifest = _json.loads(run_tags.get("quantcli.dataset.manifest", "{}"))
        start, end = manifest.get("start"), manifest.get("end")
    frame = load_training_frame(
        feature_set=tags.get(T.FEATURE_SET, "technical_v1"),
        label=tags.get(T.LABEL, "fwd_return_5d"),
        since=start,
        until=end,
    )
    missing = [f for f in feature_names if f not in frame.columns]
    if missing:
        raise InputError(
            f"the offline store's feature table lacks feature '{missing[0]}' of the model signature"
        )
    X = frame.select(feature_names).to_numpy().astype(np.float64)
    X = X[np.isfinite(X).all(axis=1)]
    if X.shape[0] == 0:
        raise InputError("no training rows with finite features in the offline store")
    if X.shape[0] > n_rows:
        idx = np.sort(np.random.default_rng(seed).choice(X.shape[0], n_rows, replace=False))
        X = X[idx]
    return X


def export_registered(
    name: str,
    version: str | None = None,
    *,
    quantize: str | None = None,
    int8_method: str = "dynamic",
    sample_rows: int = 2000,
    tracking_uri: str | None = None,
    config_path: str | None = None,
    benchmark: bool = True,
) -> dict[str, Any]:
    """Export a registered version: verify and load it, convert, gate, log, record the verdict.

    The native model is loaded through the registry (sha256 + signature verified). Parity runs on
    ``sample_rows`` rows of the version's training features (offline store); static INT8 is
    calibrated on another seeded draw of them. Graphs that pass their parity gate are logged to
    the version's run under ``onnx/`` (signed, sha256 and signature as version tags) with the
    report ``onnx/model.export.json``/``.txt``; the verdict ``parity`` is ``pass`` only when every
    exported graph passed. Returns the result dict (``passed`` tells whether to exit 1).
    """
    import shutil
    import tempfile

    from quantcli.config import load_config
    from quantcli.models import tags as T
    from quantcli.models.registry import ModelRegistry

    if sample_rows < 10:
        raise InputError(f"`--sample-rows` must be at least 10, got {sample_rows}")
    cfg = load_config(config_path)
    reg = ModelRegistry(tracking_uri)
    model, info = reg.load_native_model(name, version)
    feature_names = list(model.feature_names)
    X = training_sample(info, feature_names, sample_rows, seed=0, tracking_client=reg.client)
    calib = None
    if quantize == "int8" and int8_method == "static":
        calib = training_sample(
            info, feature_names, sample_rows, seed=1, tracking_client=reg.client
        )
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
        logged: dict[str, dict[str, str]] = {}
        to_log = []
        if res.fp32_parity["passed"]:
            to_log.append(Path(res.fp32.path))
        if res.int8 is not None and res.int8_parity and res.int8_parity["passed"]:
            to_log.append(Path(res.int8.path))
        to_log += [Path(res.report_json), Path(res.report_txt)]
        for f in to_log:
            art = f"{ONNX_ARTIFACT_DIR}/{f.name}"
            logged[art] = reg.add_artifact(name, info.version, f, art)
        recommended = (res.latency or {}).get("recommendation", "fp32")
        if recommended == "int8" and f"{ONNX_ARTIFACT_DIR}/{EXPORT_STEM}.int8.onnx" not in logged:
            recommended = "fp32"
        reg.set_version_tags(
            name,
            info.version,
            {TAG_RECOMMENDED: recommended, TAG_INT8: res.quantization.get("reason", "")},
        )
        reg.record_verdict(name, info.version, "parity", res.passed, res.failures)
        out = _jsonable(res.to_dict())
        out.update(
            name=name,
            version=info.version,
            run_id=info.run_id,
            feature_names=feature_names,
            artifacts=logged,
            recommended=recommended,
            verdict=T.PASS if res.passed else T.FAIL,
            report=render_report(res),
        )
        for key in ("report_json", "report_txt"):
            out.pop(key, None)
        for f in ("fp32", "int8"):
            if out.get(f):
                out[f]["path"] = f"{ONNX_ARTIFACT_DIR}/{Path(out[f]['path']).name}"
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)
