"""`qcli predict` end to end through the real registry: bars -> features -> registered LightGBM
-> `qcli model export` (signed ONNX) -> promote -> `qcli features materialize` -> `qcli predict`
-> audit ledger -> `qcli audit verify`."""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest

pytestmark = pytest.mark.integration


def qcli(capsys, *args: str) -> tuple[int, str, str]:
    from quantcli.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exc.value.code), out, err


def _register_lgbm(name: str) -> list[str]:
    """Fit a 30-tree LightGBM on the store's training frame; register it the trainer's way."""
    from quantcli import config
    from quantcli.features.dataset import load_training_frame
    from quantcli.models import tags as T
    from quantcli.models.estimators import make_model
    from quantcli.models.registry import ModelRegistry
    from quantcli.models.serialize import save_model
    from quantcli.models.trainer import dataset_manifest

    frame = load_training_frame()
    names = [c for c in frame.columns if c not in ("symbol", "ts", "label", "label_end")]
    model = make_model("lgbm", {"n_estimators": 30}, seed=1).fit(
        frame.select(names).to_numpy(), frame.get_column("label").to_numpy()
    )
    reg = ModelRegistry()
    exp_id = reg.client.create_experiment(
        "online", artifact_location=config.mlflow_artifacts_dir().as_uri()
    )
    manifest = dataset_manifest(frame)
    run_id = reg.client.create_run(exp_id).info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        save_model(model, model_dir, names)
        reg.client.log_artifacts(run_id, str(model_dir), "model")
        reg.client.set_terminated(run_id)
        reg.register_version(
            name,
            run_id,
            model_dir,
            {
                T.MODEL_KIND: "lgbm",
                T.FEATURE_SET: "technical_v1",
                T.FEATURE_SET_VERSION: "1",
                T.LABEL: "fwd_return_5d",
                T.DATASET_SHA256: manifest["sha256"],
                T.FEATURE_NAMES: json.dumps(names),
            },
        )
    return names


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # MLflow/SQLAlchemy internals
@pytest.mark.filterwarnings("ignore:.*noload.*")  # MLflow's SQLAlchemy store (SADeprecationWarning)
def test_qcli_predict_through_the_registry_and_the_ledger(qcli_home, capsys):
    from quantcli.data.ingest import ingest_frame
    from quantcli.data.synthetic import synthetic_universe
    from quantcli.features.build import build_features
    from quantcli.serving.runtime import InferenceRuntime
    from quantcli.store.offline import OfflineStore

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow store creation warns (SQLAlchemy deprecations)
        ingest_frame(synthetic_universe(n_symbols=3, n_days=260, seed=4, ar1=0.2))
        with OfflineStore() as store:
            build_features(store)
        names = _register_lgbm("e2e")
    code, _, err = qcli(capsys, "model", "export", "e2e", "--sample-rows", "200", "--json")
    assert code == 0, err
    code, out, err = qcli(capsys, "features", "materialize", "--json")
    assert code == 0, err

    code, out, err = qcli(
        capsys, "predict", "SYM0000", "SYM0002", "--model", "e2e", "--alias", "staging", "--json"
    )
    assert code == 0, err
    res = json.loads(out)
    assert [p["symbol"] for p in res["predictions"]] == ["SYM0000", "SYM0002"]
    first = res["predictions"][0]
    assert first["model_version"] == "1" and first["feature_version"] == "technical_v1@1"
    assert (
        first["onnx_model"]["name"].endswith(".onnx") and len(first["onnx_model"]["sha256"]) == 64
    )
    assert first["model_run_id"] and first["dataset_manifest_id"]

    # oracle: the same registered graph on the offline store's latest rows
    with OfflineStore(read_only=True) as store:
        latest = store.con.sql(
            "SELECT * FROM technical_features_v1 QUALIFY row_number() OVER "
            "(PARTITION BY symbol ORDER BY ts DESC) = 1 ORDER BY symbol"
        ).pl()
    rows = latest.filter(pl.col("symbol").is_in(["SYM0000", "SYM0002"])).select(names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = InferenceRuntime.from_registry("e2e", alias="staging").predict(rows).predictions
    np.testing.assert_array_equal([p["prediction"] for p in res["predictions"]], want)

    code, out, _ = qcli(capsys, "audit", "verify", "--json")
    assert code == 0 and json.loads(out)["records"] == 2
    # the human table
    code, out, _ = qcli(capsys, "predict", "SYM0001", "--model", "e2e", "--alias", "staging")
    assert code == 0 and "SYM0001" in out and "audit ledger" in out
    # an unknown symbol: exit 2 naming it, nothing appended
    code, _, err = qcli(capsys, "predict", "NOPE", "--model", "e2e", "--alias", "staging")
    assert code == 2 and "NOPE" in err
    code, out, _ = qcli(capsys, "audit", "verify", "--json")
    assert json.loads(out)["records"] == 3
