"""`qcli model shadow` end to end: stored features -> two registered LightGBM versions ->
`qcli model export` (signed ONNX) -> shadow through the real onnxruntime."""

from __future__ import annotations

import json
import shutil
import warnings

import pytest

from quantcli.monitoring.shadow import shadow_compare

pytestmark = pytest.mark.integration


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # MLflow/SQLAlchemy internals
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_shadow_two_versions_through_onnx(qcli_home, mlflow_template, qcli, register_model):
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
        register_model("shd", seed=1, params={"n_estimators": 30})
        register_model("shd", seed=2, params={"n_estimators": 5})
    for v in ("1", "2"):
        code, _, err = qcli("model", "export", "shd", "--version", v, "--sample-rows", "200")
        assert code == 0, err

    frame = load_training_frame()
    since = frame["ts"][frame.height // 2].date().isoformat()

    # the same version against itself: no divergence, exit 0
    code, out, err = qcli(
        "model", "shadow", "shd", "--candidate", "1", "--against", "1",
        "--since", since, "--json",
    )  # fmt: skip
    assert code == 0, err
    same = json.loads(out)
    assert same["pnl_divergence"] == 0.0 and same["prediction"]["max_abs_diff"] == 0.0

    # two different versions: the CLI equals the oracle built from the runtimes directly
    code, out, err = qcli(
        "model", "shadow", "shd", "--candidate", "2", "--against", "1",
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
