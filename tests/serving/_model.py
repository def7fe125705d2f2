"""A tiny signed ONNX model for the serving tests (LightGBM -> onnxmltools -> Ed25519 signature)."""

from __future__ import annotations

import json
from pathlib import Path


def make_signed_model(home: Path, frame) -> dict:
    """Train a 20-tree LightGBM on ``frame``, export ONNX, sign it; write ``model.json``."""
    import lightgbm as lgb
    import numpy as np
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    from quantcli.integrity import sign_file
    from quantcli.online import load_declaration

    names = load_declaration().feature_names
    data = frame.drop_nulls()
    X = data.select(names).to_numpy().astype(np.float32)
    y = np.sin(X[:, 0]) + 0.1 * X[:, 1]
    booster = lgb.train(
        {"objective": "regression", "num_leaves": 7, "verbose": -1, "seed": 1, "num_threads": 1},
        lgb.Dataset(X, y),
        num_boost_round=20,
    )
    onx = onnxmltools.convert_lightgbm(
        booster,
        initial_types=[("input", FloatTensorType([None, len(names)]))],
        target_opset=15,
        zipmap=False,
    )
    d = home / "test_model"
    d.mkdir(exist_ok=True)
    path = d / "model.onnx"
    path.write_bytes(onx.SerializeToString())
    sha, sig = sign_file(path)
    meta = {
        "onnx_path": str(path),
        "sha256": sha,
        "signature": sig,
        "feature_names": names,
        "audit_tags": {
            "model_name": "momentum",
            "model_version": "3",
            "model_run_id": "run-abc",
            "feature_set": "technical_v1",
            "feature_version": 1,
            "dataset_manifest_id": "manifest-123",
            "deployed_at": "2026-01-02T03:04:05+00:00",
        },
    }
    (d / "model.json").write_text(json.dumps(meta))
    meta["booster"] = booster
    return meta


def load_runtime(home: Path):
    from quantcli.serving.runtime import InferenceRuntime

    meta = json.loads((home / "test_model" / "model.json").read_text())
    return InferenceRuntime(
        meta["onnx_path"],
        meta["sha256"],
        meta["signature"],
        meta["feature_names"],
        meta["audit_tags"],
    )
