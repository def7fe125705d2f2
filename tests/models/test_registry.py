"""The registry facade against the embedded SQLite store AND a real `mlflow server` process.

Tests taking the ``tracking`` fixture run on both backends; the others exercise backend-neutral
logic on the embedded store only (the server costs seconds per test on a 2-core machine).
"""

from __future__ import annotations

import getpass
import json

import numpy as np
import pytest

from quantcli.errors import GateFailedError, InputError, IntegrityError, NotFoundError
from quantcli.integrity import sha256_file
from quantcli.models import tags as T
from quantcli.models.events import list_events
from quantcli.models.lifecycle import validate_version
from quantcli.models.registry import ModelRegistry
from quantcli.store.offline import OfflineStore

# MLflow's SQLAlchemy store uses the deprecated `noload` loader strategy (SQLAlchemy 2.x warns)
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")


def test_register_signs_every_artifact_and_sets_staging(
    tracking, model_name, helpers, register_model
):
    uri, artifacts = tracking
    reg = ModelRegistry(uri)
    version = register_model(model_name, tracking_uri=reg.tracking_uri, **helpers.tiny()).version
    info = reg.resolve(model_name, alias="staging")
    assert (info.version, info.aliases, info.status) == (version, ["staging"], "staging")
    assert set(info.artifacts) == {"model/lgbm.txt", "model/model.json"}
    stored = helpers.artifact_file(artifacts, info.run_id, "model/lgbm.txt")
    assert info.artifacts["model/lgbm.txt"]["sha256"] == sha256_file(stored)
    assert all(rec["signature"] for rec in info.artifacts.values())


def test_load_native_model_verifies_and_predicts(
    qcli_home, embedded_uri, model_name, helpers, register_model
):
    uri = embedded_uri
    reg = ModelRegistry(uri)
    register_model(model_name, tracking_uri=reg.tracking_uri, **helpers.tiny(seed=3))
    model, info = reg.load_native_model(model_name, alias="staging")
    assert model.kind == "lgbm" and model.feature_names == helpers.FEATURES
    x = np.zeros((2, 3))
    np.testing.assert_array_equal(model.predict(x), model.booster.predict(x))
    assert info.version == "1"


def test_one_flipped_byte_is_refused(tracking, model_name, helpers, register_model):
    uri, artifacts = tracking
    reg = ModelRegistry(uri)
    register_model(model_name, tracking_uri=reg.tracking_uri, **helpers.tiny())
    info = reg.resolve(model_name, 1)
    stored = helpers.artifact_file(artifacts, info.run_id, "model/lgbm.txt")
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01
    stored.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"model/lgbm.txt: sha256 mismatch") as exc:
        reg.load_native_model(model_name, 1)
    assert exc.value.exit_code == 1
    with pytest.raises(IntegrityError):  # a tampered model is never promoted, not even forced
        reg.promote(model_name, 1, force=True, reason="try", required=["backtest"])
    assert reg.alias_version(model_name, "production") is None


def test_unsigned_extra_artifact_is_refused(
    qcli_home, embedded_uri, model_name, tmp_path, helpers, register_model
):
    uri = embedded_uri
    reg = ModelRegistry(uri)
    register_model(model_name, tracking_uri=reg.tracking_uri, **helpers.tiny())
    info = reg.resolve(model_name, 1)
    extra = tmp_path / "evil.txt"
    extra.write_text("not signed")
    reg.client.log_artifact(info.run_id, str(extra), "model")
    with pytest.raises(IntegrityError, match=r"'model/evil.txt' has no recorded sha256"):
        reg.load_native_model(model_name, 1)


def test_add_artifact_signs_and_downloads_verified(
    qcli_home, embedded_uri, model_name, tmp_path, helpers, register_model
):
    uri = embedded_uri
    reg = ModelRegistry(uri)
    register_model(model_name, tracking_uri=reg.tracking_uri, **helpers.tiny())
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"\x08\x07fake-onnx-bytes")
    rec = reg.add_artifact(model_name, 1, onnx, "onnx/model.onnx")
    assert rec["sha256"] == sha256_file(onnx)
    local, info = reg.download_artifacts(model_name, 1, "onnx/model.onnx", tmp_path / "dl")
    assert local.read_bytes() == onnx.read_bytes()
    assert "onnx/model.onnx" in info.artifacts


def _events(name):
    with OfflineStore(read_only=True) as store:
        return [(e["action"], e["from_version"], e["to_version"]) for e in list_events(store, name)]


def test_gated_promotion_override_and_rollback_history(
    tracking, model_name, helpers, register_model
):
    uri, _ = tracking
    reg = ModelRegistry(uri)
    v1 = register_model(model_name, tracking_uri=reg.tracking_uri, **helpers.tiny(seed=1)).version

    # default gates: backtest, parity, scan -- parity and scan are not recorded yet
    with pytest.raises(GateFailedError) as exc:
        reg.validate(model_name)
    assert exc.value.result["verdicts"] == {"backtest": "pass"}
    with pytest.raises(GateFailedError) as exc:
        reg.promote(model_name)
    assert exc.value.exit_code == 1
    assert exc.value.reasons == [
        f"verdict 'parity' not recorded (run: qcli model export {model_name} --version 1)",
        f"verdict 'scan' not recorded (run: qcli model scan {model_name} --version 1)",
    ]
    assert reg.alias_version(model_name, "production") is None  # nothing changed
    assert reg.production_history(model_name) == []

    # what `qcli model export` and `qcli model scan` record
    reg.record_verdict(model_name, v1, "parity", True, [])
    reg.record_verdict(model_name, v1, "scan", True, [])
    assert reg.validate(model_name)["passed"] is True
    out = reg.promote(model_name)
    assert (out["promoted"], out["previous_version"], out["forced"]) == (True, None, False)
    assert reg.promote(model_name, v1)["promoted"] is False  # already production: a no-op

    v2 = register_model(model_name, tracking_uri=reg.tracking_uri, **helpers.tiny(seed=2)).version
    for gate in ("parity", "scan"):
        reg.record_verdict(model_name, v2, gate, True, [])
    reg.validate(model_name, v2)
    reg.promote(model_name, v2)
    assert reg.resolve(model_name, v1).status == "archived"
    assert reg.production_history(model_name) == ["1"]

    v3 = register_model(
        model_name, tracking_uri=reg.tracking_uri, **helpers.tiny(seed=3, backtest="fail")
    ).version
    for gate in ("parity", "scan"):
        reg.record_verdict(model_name, v3, gate, True, [])
    with pytest.raises(GateFailedError, match="did not pass validation"):
        reg.validate(model_name, v3)
    with pytest.raises(GateFailedError) as exc:
        reg.promote(model_name, v3)
    assert exc.value.reasons == ["verdict 'backtest' is fail: sharpe 0.10 < min_sharpe 1.20"]
    assert reg.alias_version(model_name, "production") == "2"
    with pytest.raises(InputError, match="--force needs --reason"):
        reg.promote(model_name, v3, force=True)
    forced = reg.promote(model_name, v3, force=True, reason="risk committee RISK-1")
    assert forced["forced"] is True and forced["event"]["action"] == "override"
    v3_info = reg.resolve(model_name, v3)
    assert v3_info.tags[T.OVERRIDE] == "true"
    assert v3_info.tags[T.PROMOTED_BY] == getpass.getuser()
    assert v3_info.tags[T.PROMOTION_REASON] == "risk committee RISK-1"
    assert json.loads(v3_info.tags[T.LAST_EVENT])["action"] == "override"
    assert reg.production_history(model_name) == ["1", "2"]

    # rollbacks walk the history, one step each
    assert reg.rollback(model_name, reason="live sharpe low")["to_version"] == "2"
    assert reg.alias_version(model_name, "production") == "2"
    assert reg.resolve(model_name, v3).status == "rolled_back"
    assert reg.rollback(model_name)["to_version"] == "1"
    assert reg.alias_map(model_name) == {"production": "1", "staging": "3"}
    with pytest.raises(NotFoundError, match="no previous production version"):
        reg.rollback(model_name)

    assert _events(model_name) == [
        ("promote", None, "1"),
        ("promote", "1", "2"),
        ("override", "2", "3"),
        ("rollback", "3", "2"),
        ("rollback", "2", "1"),
    ]
    with OfflineStore(read_only=True) as store:
        rows = list_events(store, model_name)
    assert {r["actor"] for r in rows} == {getpass.getuser()}
    assert rows[2]["forced"] is True and rows[2]["reason"] == "risk committee RISK-1"
    assert rows[3]["reason"] == "live sharpe low"
    assert all(r["tracking_uri"] == uri for r in rows)


def test_failed_mlflow_write_leaves_no_event_and_no_alias(
    qcli_home, embedded_uri, model_name, helpers, register_model
):
    reg = ModelRegistry(embedded_uri)
    register_model(model_name, tracking_uri=reg.tracking_uri, **helpers.tiny())
    for gate in ("parity", "scan"):
        reg.record_verdict(model_name, 1, gate, True, [])
    validate_version(reg, model_name, 1)  # the backtest verdict signed at registration

    def boom(*args, **kwargs):
        raise RuntimeError("registry went away")

    reg.client.set_model_version_tag = boom  # the alias is set, then tagging fails
    with pytest.raises(RuntimeError, match="went away"):
        reg.promote(model_name, 1)
    assert ModelRegistry(embedded_uri).alias_version(model_name, "production") is None
    assert _events(model_name) == []


def test_resolve_errors_name_the_thing(
    qcli_home, embedded_uri, model_name, helpers, register_model
):
    reg = ModelRegistry(embedded_uri)
    with pytest.raises(NotFoundError, match=f"no registered model '{model_name}'"):
        reg.resolve(model_name)
    register_model(model_name, tracking_uri=reg.tracking_uri, **helpers.tiny())
    with pytest.raises(NotFoundError, match="has no version 7"):
        reg.resolve(model_name, 7)
    with pytest.raises(NotFoundError, match="has no alias 'production'"):
        reg.resolve(model_name, alias="production")
    with pytest.raises(InputError, match="invalid model name"):
        reg.resolve("bad name; drop")


def test_rollback_refuses_a_tampered_target(
    qcli_home, embedded_uri, model_name, helpers, register_model
):
    reg = ModelRegistry(embedded_uri)
    for seed in (1, 2):
        v = register_model(
            model_name, tracking_uri=reg.tracking_uri, **helpers.tiny(seed=seed)
        ).version
        for gate in ("parity", "scan"):
            reg.record_verdict(model_name, v, gate, True, [])
        validate_version(reg, model_name, v)
        reg.promote(model_name, v)
    run_id = reg.resolve(model_name, 1).run_id
    stored = helpers.artifact_file(qcli_home / "mlartifacts", run_id, "model/model.json")
    stored.write_text(stored.read_text().replace('"lgbm"', '"mlp"', 1))
    with pytest.raises(IntegrityError, match=r"model/model.json: sha256 mismatch"):
        reg.rollback(model_name)
    assert reg.alias_version(model_name, "production") == "2"
    assert reg.production_history(model_name) == ["1"]
    assert [e[0] for e in _events(model_name)] == ["promote", "promote"]


def test_a_tracking_server_call_does_not_load_feast(mlflow_server):
    """Feast's MLflow request-header plugin is not loaded: it would import all of Feast on the
    first HTTP call (seconds per command) and could attach its own bearer token to quantcli's
    requests. Run in a fresh interpreter, since the test session itself imports Feast."""
    import subprocess
    import sys
    from importlib.metadata import entry_points

    # the plugin is installed, so without the filter the child would load it
    assert any(
        ep.value.startswith("feast.") for ep in entry_points(group="mlflow.request_header_provider")
    )
    uri, _ = mlflow_server
    child = (
        "import sys\n"
        "from quantcli.models.registry import ModelRegistry\n"
        f"ModelRegistry({uri!r}).client.search_registered_models()\n"
        "import mlflow.tracking.request_header.registry as r\n"
        "print(sorted(type(p).__name__ for p in r._request_header_provider_registry))\n"
        "print('feast' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, timeout=120, check=True
    ).stdout.split("\n")
    assert out[:2] == [
        "['DatabricksRequestHeaderProvider', 'DefaultRequestHeaderProvider']",
        "False",
    ]
