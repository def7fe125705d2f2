"""The registry against an insider: a config that drops gates, artifacts replaced after their
verdicts, edited verdict tags, and graphs outside the scan's allow-list."""

from __future__ import annotations

import getpass
import json
from pathlib import Path

import numpy as np
import pytest

from quantcli.errors import GateFailedError, IntegrityError
from quantcli.models import tags as T
from quantcli.models.events import list_events
from quantcli.models.registry import ModelRegistry, gate_policy
from quantcli.store.offline import OfflineStore

ONNX_PATH = "onnx/model.fp32.onnx"


def graph_bytes(op: str = "MatMul", scale: float = 0.1, n: int = 3) -> bytes:
    """A one-node graph ``X[N, n] -> Y[N, 1]``: MatMul (allowed) or Einsum / an unknown op."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.full((n, 1), scale, dtype=np.float32), "W")
    if op == "Einsum":
        node = helper.make_node("Einsum", ["X", "W"], ["Y"], equation="ij,jk->ik", name="e")
    else:
        node = helper.make_node(op, ["X", "W"], ["Y"], name="n0")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, n])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 1])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    return model.SerializeToString()


def add_graph(reg, name, version, tmp_path: Path, data: bytes) -> None:
    f = tmp_path / "stage" / Path(ONNX_PATH).name
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_bytes(data)
    reg.add_artifact(name, version, f, ONNX_PATH)


@pytest.fixture
def gated(qcli_home, embedded_uri, model_name, helpers, register_model, tmp_path):
    """A version through the normal flow: train (backtest) -> export (ONNX, parity) -> scan."""
    from quantcli.serving.scan import scan_registered

    reg = ModelRegistry(embedded_uri)
    v = register_model(model_name, tracking_uri=reg.tracking_uri, **helpers.tiny(seed=1)).version
    reg.set_version_tags(model_name, v, {T.FEATURE_NAMES: helpers.FEATURES})
    add_graph(reg, model_name, v, tmp_path, graph_bytes())
    reg.record_verdict(model_name, v, "parity", True, [])  # what `qcli model export` records
    scan = scan_registered(model_name, v)
    assert scan["passed"], scan["findings"]
    assert reg.validate(model_name, v)["passed"]
    return reg, v


def test_the_scan_passes_mlflows_own_note_and_nothing_else_unsigned(gated, qcli_home, model_name):
    """MLflow before 3.18 wrote ``model/registered_model_meta`` on every ``models:/`` load:
    that note about this very version is not a model file; one naming another model is."""
    from quantcli.serving.scan import scan_registered

    reg, v = gated
    run_id = reg.resolve(model_name, v).run_id
    note = qcli_home / "mlartifacts" / run_id / "artifacts" / "model" / "registered_model_meta"
    note.write_text(f"model_name: {model_name}\nmodel_version: '{v}'\n")
    scan = scan_registered(model_name, v)
    assert scan.passed, scan.reasons
    assert "model/registered_model_meta" not in {r.path for r in scan.files}
    note.write_text("model_name: other\nmodel_version: '1'\n")
    scan = scan_registered(model_name, v)
    assert not scan.passed
    assert any(r.startswith("model/registered_model_meta: ") for r in scan.reasons), scan.reasons


def test_the_gate_floor_is_a_minimum_a_config_can_only_raise():
    assert gate_policy({"registry": {"required_verdicts": []}})["required"] == [
        "backtest",
        "parity",
        "scan",
    ]
    assert gate_policy({"registry": {"required_verdicts": ["scan", "risk"]}})["required"] == [
        "backtest",
        "parity",
        "scan",
        "risk",
    ]


@pytest.mark.parametrize("listed", ["[]", '["scan"]'])
def test_a_config_cannot_switch_the_gates_off(
    qcli_home, embedded_uri, model_name, helpers, register_model, qcli, listed
):
    reg = ModelRegistry(embedded_uri)
    v = register_model(
        model_name, tracking_uri=reg.tracking_uri, **helpers.tiny(seed=3, backtest="fail")
    ).version
    for gate in ("parity", "scan"):
        reg.record_verdict(model_name, v, gate, True, [])
    with pytest.raises(GateFailedError):
        reg.validate(model_name, v)  # records the failed backtest verdict
    cfg = qcli_home / "g.toml"
    cfg.write_text(f"[registry]\nrequired_verdicts = {listed}\n")

    code, out, err = qcli("model", "promote", model_name, "--config", str(cfg), "--json")
    assert code == 1, err
    assert json.loads(out)["reasons"] == [
        "verdict 'backtest' is fail: sharpe 0.10 < min_sharpe 1.20"
    ]
    assert reg.alias_version(model_name, "production") is None

    # the override is possible, and recorded as one: reason, OS user, policy
    code, out, err = qcli(
        "model",
        "promote",
        model_name,
        "--config",
        str(cfg),
        "--force",
        "--reason",
        "desk head approved, RISK-7",
        "--json",
    )
    assert code == 0, err
    res = json.loads(out)
    assert res["forced"] is True and res["event"]["action"] == "override"
    assert res["policy"]["requested"] == json.loads(listed)
    assert res["policy"]["required"] == ["backtest", "parity", "scan"]
    with OfflineStore(read_only=True) as store:
        (event,) = list_events(store, model_name)
    assert (event["action"], event["forced"], event["actor"]) == (
        "override",
        True,
        getpass.getuser(),
    )
    assert event["reason"] == "desk head approved, RISK-7"
    assert event["details"]["overridden"] == res["reasons"]
    assert event["details"]["policy"]["required"] == ["backtest", "parity", "scan"]
    code, out, _ = qcli("model", "list", model_name, "--json")
    (listed_v,) = json.loads(out)["versions"]
    assert listed_v["override"] is True
    assert listed_v["override_detail"]["os_user"] == getpass.getuser()
    assert listed_v["override_detail"]["reason"] == "desk head approved, RISK-7"
    code, out, err = qcli("model", "list", model_name)
    assert code == 0 and "forced" in out  # the human table has an override column


def test_a_graph_replaced_after_its_verdicts_voids_them(gated, model_name, tmp_path, qcli):
    reg, v = gated
    states = reg.resolve(model_name, v).verdict_states
    assert {g: s["status"] for g, s in states.items()} == {
        "backtest": "pass",
        "parity": "pass",
        "scan": "pass",
    }
    # the insider re-signs a different graph through the ordinary API
    add_graph(reg, model_name, v, tmp_path, graph_bytes("Einsum", scale=6.4e8))
    states = reg.resolve(model_name, v).verdict_states
    assert states["backtest"]["status"] == "pass"  # the backtest never judged the ONNX graph
    for gate in ("parity", "scan"):
        assert states[gate]["status"] == "stale"
        (why,) = states[gate]["reasons"]
        assert why.startswith(f"{ONNX_PATH} was replaced after the '{gate}' verdict")

    code, out, err = qcli("model", "validate", model_name, "--version", v, "--json")
    assert code == 1
    res = json.loads(out)
    assert res["verdicts"] == {"backtest": "pass", "parity": "stale", "scan": "stale"}
    code, _, err = qcli("model", "validate", model_name, "--version", v)
    assert code == 1 and "stale" in err + _
    code, out, err = qcli("model", "promote", model_name, "--version", v, "--json")
    assert code == 1
    assert any("is stale" in r for r in json.loads(out)["reasons"])
    assert reg.alias_version(model_name, "production") is None

    from quantcli.serving.runtime import InferenceRuntime

    with pytest.raises(IntegrityError, match="is not what the 'parity' verdict judged"):
        InferenceRuntime.from_registry(model_name, v)

    # adding a file to a judged role voids too; the backtest still judged only model + dataset
    extra = tmp_path / "extra" / "notes.txt"
    extra.parent.mkdir()
    extra.write_text("added after the scan")
    reg.add_artifact(model_name, v, extra, "onnx/notes.txt")
    states = reg.resolve(model_name, v).verdict_states
    assert (
        "onnx/notes.txt was added after the 'scan' verdict judged its role"
        in (states["scan"]["reasons"])
    )
    assert states["backtest"]["status"] == "pass"


def test_the_runtime_enforces_the_allow_list_whatever_the_verdicts_say(gated, model_name, tmp_path):
    from quantcli.integrity import sign_file
    from quantcli.serving.runtime import InferenceRuntime

    reg, v = gated
    add_graph(reg, model_name, v, tmp_path, graph_bytes("Einsum", scale=6.4e8))
    for gate in ("parity", "scan"):  # verdicts recorded by hand, fresh and "pass"
        reg.record_verdict(model_name, v, gate, True, [])
    assert reg.resolve(model_name, v).verdict_states["scan"]["status"] == "pass"
    with pytest.raises(IntegrityError, match=r"operator 'Einsum' \(node 'e'\) is not allowed"):
        InferenceRuntime.from_registry(model_name, v)
    # the same graph handed to the runtime directly, properly signed
    f = tmp_path / "einsum.onnx"
    f.write_bytes(graph_bytes("Einsum", scale=6.4e8))
    sha, sig = sign_file(f)
    with pytest.raises(IntegrityError, match="fails the operator allow-list"):
        InferenceRuntime(f, sha, sig, ["f0", "f1", "f2"])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x08\x07garbage that is not protobuf" * 3, "not a valid ONNX graph"),
        (graph_bytes("FooBar"), "operator 'FooBar' (node 'n0') is not allowed"),
    ],
)
def test_a_resigned_unloadable_graph_is_a_clear_error_naming_it(
    gated, model_name, tmp_path, data, message
):
    from quantcli.integrity import sign_file
    from quantcli.serving.runtime import InferenceRuntime

    f = tmp_path / "bad.onnx"
    f.write_bytes(data)
    sha, sig = sign_file(f)
    with pytest.raises(IntegrityError) as exc:
        InferenceRuntime(f, sha, sig, ["f0", "f1", "f2"])
    assert message in exc.value.message and str(f) in exc.value.message


def test_replacing_the_model_file_voids_the_backtest_verdict(gated, model_name, tmp_path):
    reg, v = gated
    info = reg.resolve(model_name, v)
    model_files = sorted(p for p in info.artifacts if p.startswith("model/"))
    target = model_files[0]
    local, _ = reg.download_artifacts(model_name, v, target, tmp_path / "dl")
    swapped = tmp_path / "swap" / Path(target).name
    swapped.parent.mkdir()
    swapped.write_bytes(local.read_bytes() + b"\n")
    reg.add_artifact(model_name, v, swapped, target)
    states = reg.resolve(model_name, v).verdict_states
    assert states["backtest"]["status"] == "stale"
    assert states["backtest"]["reasons"][0].startswith(
        f"{target} was replaced after the 'backtest' verdict"
    )
    # validate binds the backtest verdict to the files registered with the training run:
    # running it again does not launder the replaced file
    with pytest.raises(GateFailedError) as exc:
        reg.validate(model_name, v)
    assert exc.value.result["verdicts"]["backtest"] == "stale"


def test_an_edited_verdict_tag_is_invalid(gated, model_name):
    reg, v = gated
    reg.set_version_tags(model_name, v, {T.judged_tag("scan"): '{"roles":["*"],"artifacts":{}}'})
    state = reg.resolve(model_name, v).verdict_states["scan"]
    assert state["status"] == "invalid" and "does not verify" in state["reasons"][0]
    with pytest.raises(GateFailedError) as exc:
        reg.promote(model_name, v)
    assert exc.value.reasons[0].startswith("verdict 'scan' is invalid")


def test_serving_needs_no_private_key(gated, model_name, qcli_home):
    from quantcli.serving.runtime import InferenceRuntime

    _, v = gated
    (qcli_home / "keys" / "signing.key").unlink()  # a serving host holds the keyring only
    rt = InferenceRuntime.from_registry(model_name, v)
    out = rt.predict(np.ones((2, 3), dtype=np.float32)).predictions
    np.testing.assert_allclose(out, [0.3, 0.3], rtol=1e-6)  # the MatMul graph: 3 x 0.1
    assert not (qcli_home / "keys" / "signing.key").exists()
