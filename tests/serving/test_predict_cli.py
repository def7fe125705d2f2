"""`qcli predict` end to end through the real registry: bars -> features -> registered LightGBM
-> `qcli model export` (signed ONNX) -> promote -> `qcli features materialize` -> `qcli predict`
-> audit ledger -> `qcli audit verify`."""

from __future__ import annotations

import json
import warnings

import numpy as np
import polars as pl
import pytest

pytestmark = pytest.mark.integration


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # MLflow/SQLAlchemy internals
@pytest.mark.filterwarnings("ignore:.*noload.*")  # MLflow's SQLAlchemy store (SADeprecationWarning)
def test_qcli_predict_through_the_registry_and_the_ledger(qcli_home, qcli, register_model):
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
        names = register_model("e2e").feature_names
    code, _, err = qcli("model", "export", "e2e", "--sample-rows", "200", "--json")
    assert code == 0, err
    code, out, err = qcli("features", "materialize", "--json")
    assert code == 0, err

    code, out, err = qcli(
        "predict", "SYM0000", "SYM0002", "--model", "e2e", "--alias", "staging", "--json"
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

    code, out, _ = qcli("audit", "verify", "--json")
    assert code == 0 and json.loads(out)["records"] == 2
    # the human table
    code, out, _ = qcli("predict", "SYM0001", "--model", "e2e", "--alias", "staging")
    assert code == 0 and "SYM0001" in out and "audit ledger" in out
    # an unknown symbol: exit 2 naming it, nothing appended
    code, _, err = qcli("predict", "NOPE", "--model", "e2e", "--alias", "staging")
    assert code == 2 and "NOPE" in err
    code, out, _ = qcli("audit", "verify", "--json")
    assert json.loads(out)["records"] == 3
