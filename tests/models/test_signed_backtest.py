"""The backtest verdict is signed with the model at training, artifacts are bound to their
version, and a config cannot lower the backtest thresholds below the floor.

Each test plays an attacker without the signing key against a real embedded MLflow store and
real artifact files: edited run tags, files and tags moved between versions, a lax config.
"""

from __future__ import annotations

import json
import shutil

import pytest

from quantcli.errors import GateFailedError, IntegrityError
from quantcli.models import tags as T
from quantcli.models.lifecycle import validate_version
from quantcli.models.registry import ModelRegistry
from quantcli.models.trainer import MLflowTrainer
from quantcli.models.verdicts import THRESHOLD_FLOOR
from tests.models.conftest import training_frame
from tests.models.test_trainer import small_cfg

pytestmark = [
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:.*Any type hint is inferred as AnyType:UserWarning"),
]


def _gated(reg, register_model, helpers, name, *, backtest, seed=1):
    """A version whose export and scan passed; its backtest verdict as the run's tag says."""
    v = register_model(
        name, tracking_uri=reg.tracking_uri, **{**helpers.tiny(seed=seed), "backtest": backtest}
    ).version
    for gate in ("parity", "scan"):
        reg.record_verdict(name, v, gate, True, [])
    return v


def test_editing_the_run_tags_does_not_launder_a_failed_backtest(
    qcli_home, embedded_uri, model_name, helpers, register_model
):
    reg = ModelRegistry(embedded_uri)
    v = _gated(reg, register_model, helpers, model_name, backtest="fail")
    assert not validate_version(reg, model_name, v).passed
    run_id = reg.resolve(model_name, v).run_id
    reg.client.set_tag(run_id, "quantcli.backtest.verdict", "pass")
    reg.client.set_tag(run_id, "quantcli.backtest.reasons", "[]")
    result = validate_version(reg, model_name, v)
    assert not result.passed
    assert result.verdicts["backtest"] == "fail"
    with pytest.raises(GateFailedError):
        reg.promote(model_name, v)
    assert reg.alias_version(model_name, "production") is None


def test_a_backtest_verdict_recorded_outside_validate_does_not_pass(
    qcli_home, embedded_uri, model_name, helpers, register_model
):
    reg = ModelRegistry(embedded_uri)
    v = _gated(reg, register_model, helpers, model_name, backtest="fail")
    reg.record_verdict(model_name, v, "backtest", True, [])  # not from the signed record
    info = reg.resolve(model_name, v)
    assert info.verdict_states["backtest"]["status"] == "stale"
    with pytest.raises(GateFailedError, match="refused"):
        reg.promote(model_name, v)


def _move_files_and_tags(reg, artifacts, src, dst, name, helpers, *, binding=True):
    """Copy ``src``'s signed model files into ``dst``'s run and its signature tags onto
    ``dst``; drop ``dst``'s registration record (what an attacker with store access can do)."""
    s_info, d_info = reg.resolve(name, src), reg.resolve(name, dst)
    for rel in s_info.artifacts:
        shutil.copyfile(
            helpers.artifact_file(artifacts, s_info.run_id, rel),
            helpers.artifact_file(artifacts, d_info.run_id, rel),
        )
    prefixes = (T.SHA256_PREFIX, T.SIGNATURE_PREFIX) + ((T.BINDING_PREFIX,) if binding else ())
    for key, value in s_info.tags.items():
        if key.startswith(prefixes):
            reg.client.set_model_version_tag(name, dst, key, value)
    if not binding:
        for key in d_info.tags:
            if key.startswith(T.BINDING_PREFIX):
                reg.client.delete_model_version_tag(name, dst, key)
    for key in (T.REGISTERED, T.REGISTERED_SIG):
        reg.client.delete_model_version_tag(name, dst, key)


@pytest.mark.parametrize("binding", [True, False], ids=["with-bindings", "digest-signatures"])
def test_another_versions_signed_files_are_refused(
    qcli_home, embedded_uri, model_name, helpers, register_model, binding
):
    reg = ModelRegistry(embedded_uri)
    artifacts = qcli_home / "mlartifacts"
    b = _gated(reg, register_model, helpers, model_name, backtest="pass", seed=1)
    c = _gated(reg, register_model, helpers, model_name, backtest="fail", seed=2)
    assert validate_version(reg, model_name, b).passed
    _move_files_and_tags(reg, artifacts, b, c, model_name, helpers, binding=binding)
    with pytest.raises(IntegrityError, match=r"bound to|binding"):
        validate_version(reg, model_name, c)
    with pytest.raises(IntegrityError):
        reg.promote(model_name, c, force=True, reason="try")
    with pytest.raises(IntegrityError):
        reg.load_native_model(model_name, c)
    assert reg.alias_version(model_name, "production") is None


def test_a_missing_registration_record_is_refused_never_assumed(
    qcli_home, embedded_uri, model_name, helpers, register_model
):
    reg = ModelRegistry(embedded_uri)
    v = _gated(reg, register_model, helpers, model_name, backtest="pass")
    for key in (T.REGISTERED, T.REGISTERED_SIG):
        reg.client.delete_model_version_tag(model_name, v, key)
    with pytest.raises(IntegrityError, match="no signed registration record"):
        validate_version(reg, model_name, v)
    with pytest.raises(GateFailedError):
        reg.promote(model_name, v)


def test_a_pass_that_names_no_thresholds_does_not_pass(
    qcli_home, embedded_uri, model_name, helpers, register_model
):
    reg = ModelRegistry(embedded_uri)
    v = register_model(
        model_name, tracking_uri=embedded_uri, **{**helpers.tiny(), "backtest": "pass"}, gates={}
    ).version
    for gate in ("parity", "scan"):
        reg.record_verdict(model_name, v, gate, True, [])
    result = validate_version(reg, model_name, v)
    assert not result.passed and result.verdicts["backtest"] == "fail"
    assert any("recorded no thresholds" in r for r in result.reasons)
    # the same run with the embedded gates logged passes: the thresholds are what failed
    ok = _gated(reg, register_model, helpers, model_name, backtest="pass", seed=2)
    assert validate_version(reg, model_name, ok).passed


def test_a_lax_config_cannot_lower_the_backtest_thresholds(qcli_home, embedded_uri):
    frame = training_frame(6, 400, seed=4, ar1=0.0)  # noise: fails the default gates
    cfg = small_cfg()
    cfg["gates"].update({"min_sharpe": -100.0, "min_psr": 0.0, "max_drawdown": -1.0})
    trainer = MLflowTrainer(tracking_uri=embedded_uri, cfg=cfg)
    res = trainer.train_with_cpcv(
        "lgbm", frame.drop("label"), frame.get_column("label"), register_as="lax"
    )
    assert res.passed  # judged under the lax thresholds
    reg = ModelRegistry(embedded_uri)
    for gate in ("parity", "scan"):
        reg.record_verdict("lax", res.version, gate, True, [])
    result = validate_version(reg, "lax", res.version)
    assert not result.passed
    assert result.verdicts["backtest"] == "fail"
    why = " ".join(result.reasons)
    assert "min_sharpe -100.0" in why and "looser than the floor 1.2" in why
    state = reg.resolve("lax", res.version).verdict_states["backtest"]
    assert state["thresholds"] == {"max_drawdown": -1.0, "min_psr": 0.0, "min_sharpe": -100.0}
    with pytest.raises(GateFailedError):
        reg.promote("lax", res.version)
    forced = reg.promote("lax", res.version, force=True, reason="risk committee, RISK-1")
    assert forced.forced and forced.event["action"] == "override"
    details = forced.event["details"]
    assert details["backtest_thresholds"]["min_sharpe"] == -100.0
    assert details["threshold_floor"] == dict(THRESHOLD_FLOOR)
    tags = reg.resolve("lax", res.version).tags
    assert json.loads(tags[T.OVERRIDE_DETAIL])["overridden"]


def test_a_storage_location_pointing_elsewhere_is_refused(
    qcli_home, embedded_uri, model_name, helpers, register_model
):
    import sqlite3

    reg = ModelRegistry(embedded_uri)
    good = _gated(reg, register_model, helpers, model_name, backtest="pass", seed=1)
    other = _gated(reg, register_model, helpers, model_name, backtest="pass", seed=2)
    assert validate_version(reg, model_name, good).passed
    elsewhere = reg.client.get_model_version_download_uri(model_name, other)
    with sqlite3.connect(qcli_home / "mlflow.db") as db:
        db.execute(
            "UPDATE model_versions SET storage_location = ? WHERE name = ? AND version = ?",
            (elsewhere, model_name, int(good)),
        )
    with pytest.raises(IntegrityError, match="storage location"):
        validate_version(reg, model_name, good)
    with pytest.raises(IntegrityError, match="storage location"):
        reg.promote(model_name, good, force=True, reason="try")
    with pytest.raises(IntegrityError, match="storage location"):
        reg.load_native_model(model_name, good)
    assert reg.alias_version(model_name, "production") is None


def test_mlflow_pyfunc_loading_a_version_leaves_it_promotable(qcli_home, embedded_uri, monkeypatch):
    """MLflow's `models:/` loader (before 3.18) writes `model/registered_model_meta` into the
    version's own folder on the embedded store: that note is MLflow's, not an unsigned model
    file. Releases that no longer write it get the note as those releases wrote it."""
    import mlflow.pyfunc

    monkeypatch.setenv("MLFLOW_TRACKING_URI", embedded_uri)
    frame = training_frame(8, 600, seed=3, ar1=0.4)
    trainer = MLflowTrainer(tracking_uri=embedded_uri, cfg=small_cfg())
    reg = ModelRegistry(embedded_uri)
    versions = []
    for seed in (1, 7):
        res = trainer.train_with_cpcv(
            "lgbm", frame.drop("label"), frame.get_column("label"), register_as="py", seed=seed
        )
        for gate in ("parity", "scan"):
            reg.record_verdict("py", res.version, gate, True, [])
        versions.append(res.version)
    validate_version(reg, "py", versions[0]).raise_if_failed()
    reg.promote("py", versions[0])
    mlflow.pyfunc.load_model("models:/py@production")
    mlflow.pyfunc.load_model("models:/py@staging")
    run_id = reg.resolve("py", versions[0]).run_id
    if not list((qcli_home / "mlartifacts").rglob("registered_model_meta")):
        for path in (qcli_home / "mlartifacts").glob("*/artifacts/model"):
            version = versions[0] if path.parts[-3] == run_id else versions[1]
            (path / "registered_model_meta").write_text(
                f"model_name: py\nmodel_version: '{version}'\n"
            )
    assert helpers_meta(qcli_home, run_id).is_file()
    validate_version(reg, "py", versions[1]).raise_if_failed()
    reg.promote("py", versions[1])
    assert reg.rollback("py").to_version == versions[0]
    reg.load_native_model("py", alias="production")
    # anything else under that name, or a note naming another model, is still refused
    helpers_meta(qcli_home, run_id).write_text("model_name: other\nmodel_version: '1'\n")
    with pytest.raises(IntegrityError, match="registered_model_meta"):
        reg.load_native_model("py", versions[0])


def helpers_meta(qcli_home, run_id):
    hits = [
        p for p in (qcli_home / "mlartifacts").rglob("registered_model_meta") if run_id in p.parts
    ]
    assert len(hits) == 1, hits
    return hits[0]
