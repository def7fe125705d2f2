"""MLflow's own tools load and serve a quantcli version: pyfunc and `mlflow models serve`.

Against a real `mlflow server`: a small synthetic store is trained, exported and materialized, then
``mlflow.pyfunc.load_model("models:/NAME@staging")`` must predict exactly what `qcli predict`
answers for the same feature rows, and `mlflow models serve` must answer ``/invocations`` with
the same numbers for ``@production``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml

from quantcli.models.flavors import MLFLOW_FILES, OUTPUT_COLUMN

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning"),
    # mlflow.pyfunc's import warns about its own agent schemas (nothing of ours)
    pytest.mark.filterwarnings("ignore:.*Any type hint is inferred as AnyType:UserWarning"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def test_pyfunc_and_models_serve_equal_qcli_predict(
    mlflow_server, qcli_home: Path, qcli, model_name: str, monkeypatch, tmp_path: Path
):
    import mlflow.pyfunc
    import pandas as pd

    from quantcli.config import load_config
    from quantcli.data.ingest import ingest_frame
    from quantcli.data.synthetic import synthetic_universe
    from quantcli.features.build import build_features
    from quantcli.models.trainer import train_from_store
    from quantcli.store.offline import OfflineStore

    uri, _ = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    ingest_frame(synthetic_universe(n_symbols=3, n_days=260, seed=4, ar1=0.2))
    with OfflineStore() as store:
        build_features(store)
    cfg = load_config()
    cfg["cpcv"].update({"n_groups": 4, "n_test_groups": 1})
    cfg["lightgbm"].update({"n_estimators": 20, "num_leaves": 7})
    train_from_store(model_name, cfg=cfg, tracking_uri=uri)  # the trainer logs the flavors
    for args in (
        ("model", "export", model_name, "--sample-rows", "200", "--json"),
        # the scan reads the MLflow files as data (YAML, JSON, text), none as a pickle
        ("model", "scan", model_name, "--sample-rows", "200", "--json"),
        ("features", "materialize", "--json"),
        ("model", "promote", model_name, "--force", "--reason", "flavor test", "--json"),
    ):
        code, _, err = qcli(*args)
        assert code == 0, (args, err)

    symbols = ["SYM0000", "SYM0002"]
    code, out, err = qcli(
        "predict", *symbols, "--model", model_name, "--alias", "staging", "--json"
    )
    assert code == 0, err
    served = [p["prediction"] for p in json.loads(out)["predictions"]]

    from quantcli.models.registry import ModelRegistry
    from quantcli.online import get_feature_store

    reg = ModelRegistry(uri)
    info = reg.resolve(model_name, alias="staging")
    names = json.loads(info.tags["quantcli.feature_names"])
    # the MLflow files are signed artifacts of the version, like the native ones
    for f in MLFLOW_FILES:
        assert f"model/{f}" in info.artifacts, f
    mlmodel, _ = reg.download_artifacts(model_name, info.version, "model/MLmodel", tmp_path)
    spec = yaml.safe_load(mlmodel.read_text())
    assert set(spec["flavors"]) == {"onnx", "python_function"}
    assert spec["flavors"]["python_function"]["loader_module"] == "mlflow.onnx"
    assert [c["name"] for c in json.loads(spec["signature"]["inputs"])] == names
    assert spec["saved_input_example_info"]["artifact_path"] == "input_example.json"

    feats = get_feature_store().get_online_features(symbols, feature_refs=names)
    frame = pd.DataFrame(np.asarray(feats.values, dtype=np.float64), columns=names)

    model = mlflow.pyfunc.load_model(f"models:/{model_name}@staging")
    got = model.predict(frame)[OUTPUT_COLUMN].tolist()
    assert got == served
    # the signature orders columns by name: a shuffled frame predicts the same
    assert model.predict(frame[names[::-1]])[OUTPUT_COLUMN].tolist() == got

    port = _free_port()
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m",
         f"models:/{model_name}@production", "--env-manager", "local",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env={**os.environ, "MLFLOW_TRACKING_URI": uri},
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "mlflow models serve did not start in 180 s"
            time.sleep(0.5)
        body = {"dataframe_split": {"columns": names, "data": frame.values.tolist()}}
        answer = _post(f"http://127.0.0.1:{port}/invocations", body)
        assert [p[OUTPUT_COLUMN] for p in answer["predictions"]] == got
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_given_requirements_are_what_mlflow_would_infer(tmp_path: Path):
    """The flavors give MLflow their pip requirements instead of letting it infer them (which
    loads the model in a subprocess on every save); the environment files must be the bytes
    MLflow's own inference writes for the same graph."""
    import lightgbm as lgb
    import mlflow.onnx
    import pandas as pd

    from quantcli.models.flavors import add_standard_flavors, pip_requirements
    from quantcli.models.onnx_convert import to_onnx

    rng = np.random.default_rng(7)
    X = rng.normal(size=(200, 3))
    model = lgb.LGBMRegressor(n_estimators=5, verbose=-1).fit(X, X[:, 0])
    ours = tmp_path / "ours"
    ours.mkdir()
    add_standard_flavors(model, ours, ["a", "b", "c"], X)
    assert (ours / "requirements.txt").read_text().splitlines() == pip_requirements()
    inferred = tmp_path / "inferred"
    example = pd.DataFrame(X[:5], columns=["a", "b", "c"])
    mlflow.onnx.save_model(to_onnx(model, 3), str(inferred), input_example=example)  # it infers
    for name in ("requirements.txt", "conda.yaml", "python_env.yaml"):
        assert (ours / name).read_bytes() == (inferred / name).read_bytes(), name


def test_a_package_installed_under_another_name_leaves_the_requirements_to_mlflow(
    tmp_path: Path, monkeypatch
):
    """onnxruntime-gpu in place of onnxruntime, say: no pin of a distribution that is not
    there; MLflow infers the requirements as it did before they were given."""
    import lightgbm as lgb

    from quantcli.models import flavors

    monkeypatch.setattr(flavors, "PIP_PACKAGES", ("mlflow", "onnxruntime-not-installed"))
    assert flavors.pip_requirements() is None
    X = np.random.default_rng(8).normal(size=(100, 2))
    model = lgb.LGBMRegressor(n_estimators=3, verbose=-1).fit(X, X[:, 0])
    flavors.add_standard_flavors(model, tmp_path, ["a", "b"], X)
    inferred = (tmp_path / "requirements.txt").read_text().splitlines()
    assert inferred[0].startswith("mlflow==") and "onnxruntime-not-installed" not in inferred
