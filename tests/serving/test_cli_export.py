"""`qcli model export` and `qcli model scan` on a real registry (embedded MLflow store), end to end:
bars -> offline store -> features -> registered model -> export -> scan -> runtime."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from quantcli.errors import IntegrityError

pytestmark = pytest.mark.integration


def run_json(qcli, *args: str) -> tuple[int, dict]:
    """``qcli ARGS --json`` through the root in-process runner: exit code and the JSON object."""
    r = qcli(*args, "--json")
    return r.code, (r.json if r.out.strip() else {})


def test_export_scan_and_serve_an_ensemble(home, qcli, register_model):
    from quantcli.models.registry import ModelRegistry
    from quantcli.serving.runtime import InferenceRuntime

    version = register_model("ens", kind="ensemble").version
    code, res = run_json(qcli, "model", "export", "ens", "--sample-rows", "300")
    assert code == 0, res
    assert res["verdict"] == "pass" and res["fp32_parity"]["relative_error_pct"] < 0.1
    assert set(res["artifacts"]) == {
        "onnx/model.fp32.onnx",
        "onnx/model.export.json",
        "onnx/model.export.txt",
    }
    assert res["recommended"] == "fp32" and res["latency"]["engines"][0]["engine"] == "native"
    reg = ModelRegistry()
    info = reg.resolve("ens", version)
    assert info.verdicts["parity"] == "pass"
    assert "onnx/model.fp32.onnx" in info.artifacts

    code, scan = run_json(qcli, "model", "scan", "ens")
    assert code == 0, scan["findings"]
    assert reg.resolve("ens", version).verdicts["scan"] == "pass"
    scanned = {f["path"]: f["format"] for f in scan["files"]}
    assert scanned["model/lgbm.txt"] == "lightgbm_text"
    assert scanned["onnx/model.fp32.onnx"] == "onnx"
    assert scanned["model/mlp.npz"] == "npz"
    assert scan["probe_bounds"] == "training features"

    rt = InferenceRuntime.from_registry("ens", alias="staging")
    model, _ = reg.load_native_model("ens", version)
    from quantcli.features.dataset import load_training_frame

    X = load_training_frame().select(rt.feature_names).to_numpy()[:100]
    out = rt.predict(X)
    np.testing.assert_allclose(out.predictions, model.predict(X), rtol=1e-4, atol=1e-6)
    assert out.audit["model_version"] == version and out.audit["model_name"] == "ens"
    assert out.audit["onnx_sha256"] == info.artifacts["onnx/model.fp32.onnx"]["sha256"]
    assert out.audit["dataset_manifest_id"] == info.tags["quantcli.dataset_sha256"]

    # tamper with the stored ONNX artifact: the runtime refuses it, the scan fails (exit 1)
    stored = next((home / "mlartifacts").rglob("model.fp32.onnx"))
    data = bytearray(stored.read_bytes())
    data[len(data) // 3] ^= 0xFF
    stored.write_bytes(bytes(data))
    shutil.rmtree(home / "cache", ignore_errors=True)
    with pytest.raises(IntegrityError):
        InferenceRuntime.from_registry("ens", alias=version)
    code, scan = run_json(qcli, "model", "scan", "ens")
    assert code == 1
    assert any("onnx/model.fp32.onnx: integrity:" in f for f in scan["findings"])
    assert reg.resolve("ens", version).verdicts["scan"] == "fail"


def test_tree_model_int8_request_keeps_fp32(home, qcli, register_model):
    from quantcli.models.registry import ModelRegistry

    version = register_model("trees").version
    code, res = run_json(
        qcli,
        "model",
        "export",
        "trees",
        "--quantize",
        "int8",
        "--sample-rows",
        "300",
        "--no-benchmark",
    )
    assert code == 0, res
    assert res["quantization"]["reason"] == "not quantizable: no MatMul/Gemm operators"
    assert res["int8"] is None
    info = ModelRegistry().resolve("trees", version)
    assert "onnx/model.int8.onnx" not in info.artifacts
    assert info.tags["quantcli.onnx.int8"] == "not quantizable: no MatMul/Gemm operators"


def test_failed_int8_parity_exits_1_and_records_fail(home, qcli, register_model):
    """Dynamic INT8 of an MLP fitted on raw returns breaks parity: exit 1, verdict fail."""
    from quantcli.models.registry import ModelRegistry

    version = register_model("raw_mlp", kind="mlp").version
    code, res = run_json(
        qcli,
        "model",
        "export",
        "raw_mlp",
        "--quantize",
        "int8",
        "--sample-rows",
        "300",
        "--no-benchmark",
    )
    assert code == 1
    assert res["fp32_parity"]["passed"] and not res["int8_parity"]["passed"]
    info = ModelRegistry().resolve("raw_mlp", version)
    assert info.verdicts["parity"] == "fail"
    assert "onnx/model.int8.onnx" not in info.artifacts  # a failed graph is never published


def test_bad_option_is_exit_2(home, qcli):
    code, _ = run_json(qcli, "model", "export", "nope", "--quantize", "int4")
    assert code == 2
    code, _ = run_json(qcli, "model", "export", "no_such_model")
    assert code == 2
