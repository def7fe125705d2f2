"""Registered, servable model versions whose predictions name them, and an in-thread service.

A version's ONNX graph is ``prediction = coef * feature_0 + bias`` (MatMul + Add, opset 15): with
``coef = 0`` every prediction *is* the bias, so a response says exactly which version served it.
The graph is signed and registered the way ``qcli model export`` does (``onnx/model.fp32.onnx``
with sha256/signature version tags), so :meth:`InferenceRuntime.from_registry` loads and
verifies it like any exported model.
"""

from __future__ import annotations

import json
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np


def linear_onnx(n_features: int, bias: float, coef: float = 0.0) -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.zeros((n_features, 1), dtype=np.float32)
    w[0, 0] = coef
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "B"], ["variable"]),
        ],
        "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, n_features])],
        [helper.make_tensor_value_info("variable", TensorProto.FLOAT, [None, 1])],
        [
            numpy_helper.from_array(w, "W"),
            numpy_helper.from_array(np.array([bias], dtype=np.float32), "B"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def register_version(
    name: str,
    names: list[str],
    *,
    bias: float,
    coef: float = 0.0,
    tracking_uri: str | None = None,
    graph: bytes | None = None,
) -> str:
    """Register a new version of ``name`` (alias ``staging``) serving ``coef * x0 + bias``;
    ``graph`` replaces the ONNX bytes (e.g. a broken graph, still correctly signed)."""
    from quantcli import config
    from quantcli.models import tags as T
    from quantcli.models.registry import ModelRegistry, is_local_store

    reg = ModelRegistry(tracking_uri)
    exp = reg.client.get_experiment_by_name("deploy-tests")
    if exp is not None:
        exp_id = exp.experiment_id
    elif is_local_store(reg.tracking_uri):
        location = config.mlflow_artifacts_dir().as_uri()
        exp_id = reg.client.create_experiment("deploy-tests", artifact_location=location)
    else:
        exp_id = reg.client.create_experiment("deploy-tests")
    run_id = reg.client.create_run(exp_id).info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        model_dir.mkdir()
        (model_dir / "card.json").write_text(json.dumps({"bias": bias, "coef": coef}))
        reg.client.log_artifacts(run_id, str(model_dir), "model")
        reg.client.set_terminated(run_id)
        info = reg.register_version(
            name,
            run_id,
            model_dir,
            {
                T.MODEL_KIND: "linear",
                T.FEATURE_SET: "technical_v1",
                T.FEATURE_SET_VERSION: "1",
                T.FEATURE_NAMES: json.dumps(names),
            },
        )
        onnx_path = Path(tmp) / "model.fp32.onnx"
        onnx_path.write_bytes(graph if graph is not None else linear_onnx(len(names), bias, coef))
        reg.add_artifact(name, info.version, onnx_path, "onnx/model.fp32.onnx")
    return str(info.version)


def force_promote(name: str, version: str, tracking_uri: str | None = None) -> dict[str, Any]:
    from quantcli.models.registry import ModelRegistry

    return ModelRegistry(tracking_uri).promote(
        name, version, force=True, reason="test: no gate verdicts on a linear test model"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThreadedService:
    """The real app under uvicorn on a loopback port, in a thread of the test process (so the
    test can reach the predictor and the follower)."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(
                app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadedService:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("in-thread service did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
