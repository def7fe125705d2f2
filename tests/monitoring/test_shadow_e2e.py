"""`qcli model shadow` end to end: stored features -> two registered LightGBM versions ->
`qcli model export` (signed ONNX) -> shadow through the real onnxruntime."""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from pathlib import Path

import pytest

from quantcli.monitoring.shadow import shadow_compare

pytestmark = pytest.mark.integration


def _register(name: str, seed: int, n_estimators: int) -> None:
    from quantcli import config
    from quantcli.features.dataset import load_training_frame
    from quantcli.models import tags as T
    from quantcli.models.estimators import make_model
    from quantcli.models.registry import ModelRegistry
    from quantcli.models.serialize import save_model

    frame = load_training_frame()
    names = [c for c in frame.columns if c not in ("symbol", "ts", "label", "label_end")]
    model = make_model("lgbm", {"n_estimators": n_estimators}, seed=seed).fit(
        frame.select(names).to_numpy(), frame.get_column("label").to_numpy()
    )
    reg = ModelRegistry()
    exp = reg.client.get_experiment_by_name("shadow")
    exp_id = (
        exp.experiment_id
        if exp
        else reg.client.create_experiment(
            "shadow", artifact_location=config.mlflow_artifacts_dir().as_uri()
        )
    )
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
                T.FEATURE_NAMES: json.dumps(names),
            },
        )


def qcli(capsys, *args: str) -> tuple[int, str, str]:
    from quantcli.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exc.value.code), out, err


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # MLflow/SQLAlchemy internals
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_shadow_two_versions_through_onnx(qcli_home, mlflow_template, capsys):
    from quantcli.data.ingest import ingest_frame
    from quantcli.data.synthetic import synthetic_universe
    from quantcli.features.build import build_features
    from quantcli.features.dataset import load_training_frame
    from quantcli.serving.runtime import InferenceRuntime
    from quantcli.store.offline import OfflineStore

    shutil.copy(mlflow_template, qcli_home / "mlflow.db")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow store warnings (SQLAlchemy deprecations)
        ingest_frame(synthetic_universe(n_symbols=3, n_days=300, seed=4, ar1=0.2))
        with OfflineStore() as store:
            build_features(store)
        _register("shd", seed=1, n_estimators=30)
        _register("shd", seed=2, n_estimators=5)
    for v in ("1", "2"):
        code, _, err = qcli(
            capsys, "model", "export", "shd", "--version", v, "--sample-rows", "200"
        )
        assert code == 0, err

    frame = load_training_frame()
    since = frame["ts"][frame.height // 2].date().isoformat()

    # the same version against itself: no divergence, exit 0
    code, out, err = qcli(
        capsys, "model", "shadow", "shd", "--candidate", "1", "--against", "1",
        "--since", since, "--json",
    )  # fmt: skip
    assert code == 0, err
    same = json.loads(out)
    assert same["pnl_divergence"] == 0.0 and same["prediction"]["max_abs_diff"] == 0.0

    # two different versions: the CLI equals the oracle built from the runtimes directly
    code, out, err = qcli(
        capsys, "model", "shadow", "shd", "--candidate", "2", "--against", "1",
        "--since", since, "--max-pnl-divergence", "0", "--json",
    )  # fmt: skip
    res = json.loads(out)
    rows = load_training_frame(since=since)
    preds = {
        v: InferenceRuntime.from_registry("shd", v)
        .predict(rows.select(res_names(rows)))
        .predictions
        for v in ("1", "2")
    }
    oracle = shadow_compare(
        rows["ts"].to_list(), preds["2"], preds["1"], rows["label"].to_numpy(), 0.0
    )
    assert res["n_rows"] == rows.height
    assert res["pnl_divergence"] == pytest.approx(oracle["pnl_divergence"], rel=1e-12)
    assert res["prediction"]["mean_abs_diff"] > 0
    assert (res["candidate"]["version"], res["against"]["version"]) == ("2", "1")
    assert code == (0 if res["pnl_divergence"] == 0 else 1)
    assert res["passed"] is (res["pnl_divergence"] == 0)


def res_names(rows):
    return [c for c in rows.columns if c not in ("symbol", "ts", "label", "label_end")]
