"""The operator allow-list: which ONNX operators and domains a served graph may hold.

The scan (:mod:`quantcli.serving.scan`) reports every graph outside the list, and the runtime
(:func:`quantcli.serving.session.check_graph`) refuses to load one whatever the stored verdicts
say, so the rule lives here, below both.
"""

from __future__ import annotations

from typing import Any

ALLOWED_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft"})
# What quantcli's converters and quantizers emit, plus a few harmless shape/arith operators.
ALLOWED_OPS = frozenset(
    {
        # trees and sklearn preprocessing (ai.onnx.ml)
        "TreeEnsembleRegressor",
        "TreeEnsembleClassifier",
        "TreeEnsemble",
        "Scaler",
        "Normalizer",
        # dense layers and activations
        "MatMul",
        "Gemm",
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Sum",
        "Mean",
        "Relu",
        "Tanh",
        "Sigmoid",
        "Softmax",
        "LeakyRelu",
        "Clip",
        "Abs",
        "Neg",
        "Identity",
        "Cast",
        "Reshape",
        "Flatten",
        "Squeeze",
        "Unsqueeze",
        "Concat",
        "Transpose",
        "ReduceMean",
        "ReduceSum",
        "Constant",
        # INT8 (dynamic QOperator, static QDQ, onnxruntime fused kernels)
        "DynamicQuantizeLinear",
        "MatMulInteger",
        "QuantizeLinear",
        "DequantizeLinear",
        "QLinearMatMul",
        "QGemm",
        "DynamicQuantizeMatMul",
        "MatMulIntegerToFloat",
    }
)


def operator_findings(model: Any) -> tuple[list[str], dict[str, int]]:
    """``(findings, op counts)`` of an ONNX ``ModelProto`` against the operator allow-list.

    A finding for every opset domain or node domain outside :data:`ALLOWED_DOMAINS`, every
    operator outside :data:`ALLOWED_OPS`, model-local functions and sub-graphs (control flow).
    The runtime applies the same rule to every graph it loads, whatever the stored verdicts say.
    """
    import onnx

    findings = []
    for imp in model.opset_import:
        if imp.domain not in ALLOWED_DOMAINS:
            findings.append(f"opset domain '{imp.domain}' is not allowed")
    if len(model.functions):
        findings.append(f"{len(model.functions)} model-local functions (not allowed)")
    ops: dict[str, int] = {}
    for node in model.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
        if node.domain not in ALLOWED_DOMAINS:
            findings.append(f"node '{node.name}' uses domain '{node.domain}'")
        elif node.op_type not in ALLOWED_OPS:
            findings.append(f"operator '{node.op_type}' (node '{node.name}') is not allowed")
        if any(
            a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
            for a in node.attribute
        ):
            findings.append(f"node '{node.name}' carries a sub-graph (control flow not allowed)")
    return findings, ops


__all__ = ["ALLOWED_DOMAINS", "ALLOWED_OPS", "operator_findings"]
