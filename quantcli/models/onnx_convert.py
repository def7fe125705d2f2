"""Convert a native model (LightGBM, MLP, or their ensemble) to ONE ONNX graph.

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
"""

from __future__ import annotations

from typing import Any

import numpy as np

from quantcli.errors import InputError
from quantcli.models.native import ensemble_members, export_kind, n_features_of, single_model

INPUT_NAME = "input"
OUTPUT_NAME = "variable"
TARGET_OPSET = 15
# skl2onnx would pick its newest opset; the composed graph must share one opset per domain.
_SKL_OPSET = {"": TARGET_OPSET, "ai.onnx.ml": 1}


def _convert_single(model: Any, n_features: int):
    """The ONNX ModelProto of one member (lgbm or mlp), input ``input``, output ``variable``."""
    model = single_model(model)
    kind = export_kind(model)
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
    leaf changes, an error of the size of a leaf value on that row. The largest float32 not
    above ``t64`` decides every float32 ``x`` exactly as ``t64`` does, so each rounded-up
    threshold is moved one float32 step down.

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
        if export_kind(member) == "ensemble":
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
    model = single_model(model)
    members = ensemble_members(model)
    if members is not None:
        return compose_average(members, n)
    onx = _convert_single(model, n)
    # the converters name the graph with a random uuid; a fixed name keeps the bytes (and so the
    # sha256 that signatures and verdicts bind to) equal for the same model
    onx.graph.name = "quantcli"
    onnx.checker.check_model(onx)
    return onx


__all__ = [
    "INPUT_NAME",
    "OUTPUT_NAME",
    "TARGET_OPSET",
    "compose_average",
    "exact_float32_thresholds",
    "to_onnx",
]
