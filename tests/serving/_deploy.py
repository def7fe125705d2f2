"""Registered, servable model versions whose predictions name them, and an in-thread service.

A version's ONNX graph is ``prediction = coef * feature_0 + bias`` (MatMul + Add, opset 15): with
``coef = 0`` every prediction *is* the bias, so a response says exactly which version served it.
:func:`linear` gives the options of ``register_model`` (tests/_registration.py), which signs and
registers the graph the way ``qcli model export`` does (``onnx/model.fp32.onnx`` with
sha256/signature version tags), so :meth:`InferenceRuntime.from_registry` loads and verifies it
like any exported model.
"""

from __future__ import annotations

import socket
import threading
import time
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


def linear(names: list[str], *, bias: float, coef: float = 0.0, graph: bytes | None = None) -> dict:
    """``register_model`` options for an ONNX-only version serving ``coef * x0 + bias``;
    ``graph`` replaces the ONNX bytes (e.g. a broken graph, still correctly signed)."""
    from quantcli.models import tags as T

    return {
        "kind": "onnx",
        "features": names,
        "params": {"bias": bias, "coef": coef},
        "onnx": graph if graph is not None else linear_onnx(len(names), bias, coef),
        "tags": {T.MODEL_KIND: "linear"},
    }


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
