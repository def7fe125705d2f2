"""The model security scan: each check finds what it must, and a clean model passes."""

from __future__ import annotations

import pickle

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantcli.integrity import sign_file
from quantcli.models.onnx_convert import to_onnx
from quantcli.serving.scan import scan_artifact, sniff_format

CHECKS = ["format", "integrity", "operators", "external_data", "shapes", "robustness"]


def _graph(nodes, inits, n=3, opsets=(("", 15),)):
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, n])],
        [helper.make_tensor_value_info("variable", TensorProto.FLOAT, [None, 1])],
        initializer=inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    m.ir_version = 8
    return m


def _save_signed(model, path):
    onnx.save(model, str(path))
    return sign_file(path)


def test_clean_ensemble_passes_every_check(models, synthetic_data, qcli_home, tmp_path):
    path = tmp_path / "m.onnx"
    sha, sig = _save_signed(to_onnx(models[("synthetic", "ensemble")], 29), path)
    rep = scan_artifact(
        path, sha256=sha, signature=sig, n_features=29, reference_X=synthetic_data.X
    )
    assert rep.format == "onnx"
    assert [c.name for c in rep.checks] == CHECKS
    assert rep.passed, rep.findings
    ops = next(c for c in rep.checks if c.name == "operators").detail["ops"]
    assert ops["TreeEnsembleRegressor"] == 1 and ops["MatMul"] == 3


def test_lightgbm_text_passes_and_unsigned_is_a_finding(
    models, synthetic_data, qcli_home, tmp_path
):
    path = tmp_path / "lgbm.txt"
    path.write_text(models[("synthetic", "lgbm")].booster_.model_to_string())
    sha, sig = sign_file(path)
    rep = scan_artifact(
        path, sha256=sha, signature=sig, n_features=29, reference_X=synthetic_data.X
    )
    assert rep.format == "lightgbm_text" and rep.passed, rep.findings
    unsigned = scan_artifact(path, n_features=29)
    assert not unsigned.passed
    # an unverified file is never executed: the robustness probe does not run
    assert unsigned.findings == [
        "integrity: no recorded sha256/signature: the file is unsigned",
        "robustness: not probed: earlier checks failed",
    ]


def test_pickle_is_refused_unopened(qcli_home, tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(pickle.dumps({"weights": [1, 2, 3]}, protocol=4))
    sha, sig = sign_file(path)
    rep = scan_artifact(path, sha256=sha, signature=sig)
    assert rep.format == "pickle" and not rep.passed
    assert [c.name for c in rep.checks] == ["format"]  # nothing else touched the bytes
    assert "a Python pickle" in rep.findings[0]
    assert sniff_format(pickle.dumps([1], protocol=0)) == "pickle"
    assert sniff_format(b"PK\x03\x04") == "zip"


def test_custom_operator_and_domain_are_flagged(qcli_home, tmp_path):
    w = numpy_helper.from_array(np.ones((3, 1), dtype=np.float32), "w")
    nodes = [
        helper.make_node("MatMul", ["input", "w"], ["h"], name="mm"),
        helper.make_node("RunShell", ["h"], ["variable"], name="evil", domain="com.evil"),
    ]
    path = tmp_path / "m.onnx"
    sha, sig = _save_signed(_graph(nodes, [w], opsets=(("", 15), ("com.evil", 1))), path)
    rep = scan_artifact(path, sha256=sha, signature=sig, n_features=3)
    assert not rep.passed
    assert "operators: opset domain 'com.evil' is not allowed" in rep.findings
    assert "operators: node 'evil' uses domain 'com.evil'" in rep.findings
    assert rep.checks[-1].name == "robustness" and not rep.checks[-1].passed  # never run


def test_disallowed_standard_operator_is_flagged(qcli_home, tmp_path):
    nodes = [
        helper.make_node("ReduceSum", ["input"], ["s"], name="rs", keepdims=1),
        helper.make_node("Hardmax", ["s"], ["variable"], name="hm"),
    ]
    path = tmp_path / "m.onnx"
    sha, sig = _save_signed(_graph(nodes, []), path)
    rep = scan_artifact(path, sha256=sha, signature=sig)
    assert "operators: operator 'Hardmax' (node 'hm') is not allowed" in rep.findings


def test_external_data_outside_the_artifact_dir_is_flagged(qcli_home, tmp_path):
    w = numpy_helper.from_array(np.ones((3, 1), dtype=np.float32), "w")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "../../etc/passwd"), ("offset", "0"), ("length", "12")):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    path = tmp_path / "art" / "m.onnx"
    path.parent.mkdir()
    sha, sig = _save_signed(
        _graph([helper.make_node("MatMul", ["input", "w"], ["variable"])], [w]), path
    )
    rep = scan_artifact(path, sha256=sha, signature=sig)
    assert (
        "external_data: initializer 'w' points outside the artifact dir: '../../etc/passwd'"
        in rep.findings
    )


def test_unbounded_or_mismatched_shapes_are_flagged(qcli_home, tmp_path):
    w = numpy_helper.from_array(np.ones((3, 1), dtype=np.float32), "w")
    path = tmp_path / "m.onnx"
    sha, sig = _save_signed(
        _graph([helper.make_node("MatMul", ["input", "w"], ["variable"])], [w]), path
    )
    rep = scan_artifact(path, sha256=sha, signature=sig, n_features=29)
    assert "shapes: input takes 3 features, the signature names 29" in rep.findings


def test_robustness_probe_catches_overflow(qcli_home, tmp_path):
    """Weights of 1e38 overflow float32 to inf on extreme (but valid) inputs."""
    w = numpy_helper.from_array(np.full((3, 1), 1e38, dtype=np.float32), "w")
    path = tmp_path / "m.onnx"
    sha, sig = _save_signed(
        _graph([helper.make_node("MatMul", ["input", "w"], ["variable"])], [w]), path
    )
    ref = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    rep = scan_artifact(path, sha256=sha, signature=sig, n_features=3, reference_X=ref)
    rob = rep.checks[-1]
    assert rob.name == "robustness" and not rob.passed
    assert rob.findings[0].endswith("probe rows gave a non-finite prediction")
    assert all(c.passed for c in rep.checks[:-1])


def test_tampered_file_fails_integrity(models, synthetic_data, qcli_home, tmp_path):
    path = tmp_path / "m.onnx"
    sha, sig = _save_signed(to_onnx(models[("synthetic", "lgbm")], 29), path)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0x01
    path.write_bytes(bytes(data))
    rep = scan_artifact(path, sha256=sha, signature=sig, n_features=29)
    assert not rep.passed
    assert any(f.startswith("integrity:") and "sha256 mismatch" in f for f in rep.findings)


@pytest.mark.parametrize("content", [b"", b"hello world", b"\x00\x01\x02"])
def test_unknown_files_are_refused(content, qcli_home, tmp_path):
    path = tmp_path / "x.onnx"
    path.write_bytes(content)
    rep = scan_artifact(path, require_signature=False)
    assert rep.format == "unknown" and not rep.passed
