"""Honest INT8: quantize the matrix operators of a graph, or say plainly that there are none.

onnxruntime's quantizers rewrite only MatMul/Gemm-like operators (weights to INT8, activations
quantized dynamically at run time or statically from calibrated ranges). A LightGBM tree ensemble
(``TreeEnsembleRegressor``) has none, so it would come out unchanged -- same size, same speed --
and labelling that file INT8 would be a lie. :func:`quantize_int8` therefore checks the graph
first: no MatMul/Gemm, no INT8 file, and the reason "not quantizable: no MatMul/Gemm operators".
For an ensemble only the MLP member's MatMul/Gemm nodes change; the trees stay FP32.

It also checks the result: an output whose graph has no INT8 operator is deleted and reported
as not quantized.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from quantcli.errors import InputError
from quantcli.results import Result

QUANTIZABLE_OPS = ("MatMul", "Gemm")
INT8_METHODS = ("dynamic", "static", "weight-only")
# Operators that prove a quantized graph: dynamic (QOperator) and static (QDQ) formats.
INT8_OPS = frozenset(
    {
        "MatMulInteger",
        "DynamicQuantizeLinear",
        "DynamicQuantizeMatMul",
        "MatMulIntegerToFloat",
        "QLinearMatMul",
        "QGemm",
        "QuantizeLinear",
        "DequantizeLinear",
    }
)
NOT_QUANTIZABLE = "not quantizable: no MatMul/Gemm operators"


@dataclass(frozen=True, kw_only=True)
class QuantizationResult(Result):
    """What :func:`quantize_int8` did. ``quantized`` is False when no INT8 file exists.

    Not a gate: a graph that is not quantizable is a fact, not a failure (``passed`` is True).
    """

    passed: bool = True
    requested: bool
    quantized: bool
    method: str
    reason: str
    quantizable_nodes: int
    int8_nodes: int
    output_path: str | None
    fp32_size_bytes: int
    int8_size_bytes: int | None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        del d["passed"], d["reasons"]
        return d


def count_ops(model, ops) -> int:
    """Number of nodes of ``model`` (an ONNX ModelProto) whose op_type is in ``ops``."""
    return sum(1 for n in model.graph.node if n.op_type in ops)


class _Calibration:
    """A CalibrationDataReader over a float matrix, in batches of 64 rows."""

    def __init__(self, input_name: str, X: np.ndarray, batch: int = 64) -> None:
        Xf = np.ascontiguousarray(X, dtype=np.float32)
        # equal batches: onnxruntime's histogram calibrators refuse a ragged last batch
        n = max(Xf.shape[0] // batch, 1) * batch
        self._batches = iter([{input_name: Xf[i : i + batch]} for i in range(0, n, batch)])

    def get_next(self):
        return next(self._batches, None)

    def rewind(self) -> None:  # pragma: no cover - onnxruntime >= 1.17 may call it
        pass


def quantize_int8(
    fp32_path: str | os.PathLike[str],
    int8_path: str | os.PathLike[str],
    *,
    method: str = "dynamic",
    calibration: np.ndarray | None = None,
    max_calibration_rows: int = 2000,
    seed: int = 0,
) -> QuantizationResult:
    """Quantize the MatMul/Gemm operators of ``fp32_path`` to INT8 into ``int8_path``.

    Parameters
    ----------
    method
        ``"dynamic"``: INT8 weights, activations quantized per call (``quantize_dynamic``,
        QOperator format). Note: the activation range is taken over the whole batch of each
        call, so a row's prediction depends slightly on the other rows of its batch.
        ``"static"``: activation ranges calibrated (MinMax) on ``calibration`` rows, QDQ format
        (``quantize_static``), per-channel weights; a row's prediction depends on that row only.
        ``"weight-only"``: W8A32 -- MatMul/Gemm weights stored as per-output-channel symmetric
        INT8 with a ``DequantizeLinear`` in front, activations stay FP32. Smaller file, the
        smallest error, no speed gain (onnxruntime dequantizes the weights in float).
    calibration
        Required for ``"static"``: rows drawn from the training features (rows x features).
        At most ``max_calibration_rows`` are used, sampled with ``seed`` (deterministic).

    Returns
    -------
    QuantizationResult
        ``quantized=False`` with the reason when the graph has nothing to quantize; then no
        file is written at ``int8_path``.
    """
    import onnx

    fp32_path, int8_path = Path(fp32_path), Path(int8_path)
    if method not in INT8_METHODS:
        raise InputError(
            f"`method` must be one of {', '.join(INT8_METHODS)}, got method={method!r}"
        )
    model = onnx.load(str(fp32_path))
    n_q = count_ops(model, QUANTIZABLE_OPS)
    base = dict(
        requested=True,
        method=method,
        quantizable_nodes=n_q,
        fp32_size_bytes=fp32_path.stat().st_size,
    )
    if n_q == 0:
        int8_path.unlink(missing_ok=True)  # a stale INT8 file from an older export must not stay
        return QuantizationResult(
            quantized=False,
            reason=NOT_QUANTIZABLE,
            int8_nodes=0,
            output_path=None,
            int8_size_bytes=None,
            **base,
        )
    tmp = int8_path.with_suffix(f".tmp{os.getpid()}")
    try:
        _run_quantizer(fp32_path, tmp, model, method, calibration, max_calibration_rows, seed)
        q = onnx.load(str(tmp))
        n_int8 = count_ops(q, INT8_OPS)
        if n_int8 == 0:
            tmp.unlink()
            int8_path.unlink(missing_ok=True)
            return QuantizationResult(
                quantized=False,
                reason="the quantizer changed no operator; FP32 kept",
                int8_nodes=0,
                output_path=None,
                int8_size_bytes=None,
                **base,
            )
        os.replace(tmp, int8_path)
    finally:
        tmp.unlink(missing_ok=True)
    return QuantizationResult(
        quantized=True,
        reason=f"{n_q} MatMul/Gemm operators quantized ({method}); other operators stay FP32",
        int8_nodes=n_int8,
        output_path=str(int8_path),
        int8_size_bytes=int8_path.stat().st_size,
        **base,
    )


def _weight_only(model, out: Path, exclude: frozenset[str] = frozenset()) -> None:
    """Rewrite every MatMul/Gemm whose weight is an initializer as DequantizeLinear(INT8) -> op.

    Per output channel ``j``: ``scale_j = max_i |W[i, j]| / 127`` and ``Wq = round(W / scale)``
    in int8 (symmetric, zero point 0). Gemm with ``transB=1`` stores ``W`` transposed, so its
    channel axis is 0.
    """
    import onnx
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    consumers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    new_nodes = []
    for node in model.graph.node:
        w_name = node.input[1] if node.op_type in QUANTIZABLE_OPS and len(node.input) > 1 else None
        if node.name in exclude:
            w_name = None
        if w_name is None or w_name not in inits or consumers.get(w_name, 0) != 1:
            new_nodes.append(node)
            continue
        W = numpy_helper.to_array(inits[w_name]).astype(np.float64)
        if W.ndim != 2:
            new_nodes.append(node)
            continue
        trans_b = any(a.name == "transB" and a.i == 1 for a in node.attribute)
        axis = 0 if (node.op_type == "Gemm" and trans_b) else 1
        amax = np.abs(W).max(axis=1 - axis)
        scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
        shape = (1, -1) if axis == 1 else (-1, 1)
        Wq = np.clip(np.round(W / scale.reshape(shape)), -127, 127).astype(np.int8)
        model.graph.initializer.remove(inits[w_name])
        model.graph.initializer.extend(
            [
                numpy_helper.from_array(Wq, f"{w_name}_int8"),
                numpy_helper.from_array(scale, f"{w_name}_scale"),
                numpy_helper.from_array(np.zeros_like(scale, dtype=np.int8), f"{w_name}_zero"),
            ]
        )
        new_nodes.append(
            helper.make_node(
                "DequantizeLinear",
                [f"{w_name}_int8", f"{w_name}_scale", f"{w_name}_zero"],
                [f"{w_name}_dq"],
                name=f"{node.name or w_name}_dequantize",
                axis=axis,
            )
        )
        node.input[1] = f"{w_name}_dq"
        new_nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    onnx.checker.check_model(model)
    onnx.save_model(model, str(out))


def _run_quantizer(fp32_path, out, model, method, calibration, max_rows, seed) -> None:
    if method == "weight-only":
        _weight_only(model, Path(out))
        return
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    # The quantizer logs "Please consider to run pre-processing before quantization" through
    # the logging module; our graphs come straight from the converters with shapes inferred.
    qlog = logging.getLogger("root")
    level = qlog.level
    qlog.setLevel(logging.ERROR)
    try:
        if method == "dynamic":
            quantize_dynamic(
                str(fp32_path),
                str(out),
                op_types_to_quantize=list(QUANTIZABLE_OPS),
                weight_type=QuantType.QInt8,
            )
            return
        if calibration is None or len(calibration) == 0:
            raise InputError(
                "static INT8 quantization needs a calibration sample (rows of training features)",
                hint="pass calibration=..., or use method='dynamic'",
            )
        X = np.asarray(calibration, dtype=np.float32)
        if X.shape[0] > max_rows:
            idx = np.sort(np.random.default_rng(seed).choice(X.shape[0], max_rows, replace=False))
            X = X[idx]
        quantize_static(
            str(fp32_path),
            str(out),
            _Calibration(model.graph.input[0].name, X),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTIZABLE_OPS),
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
        )
    finally:
        qlog.setLevel(level)
