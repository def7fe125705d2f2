"""Fixtures for the serving tests: real and synthetic feature matrices, fitted models, and the
$QCLI_HOME of the export CLI tests (a copied offline store and embedded MLflow store).

Models are small (few trees, a small MLP) so the whole serving suite stays fast, but they are the
real estimators of :func:`quantcli.models.estimators.make_model`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
from online._features import feature_frame, write_feature_table
from online.conftest import redis_url  # noqa: F401  (the test Redis of tests/online)

from serving._deploy import free_port
from serving._model import make_signed_model

HERE = Path(__file__).resolve().parent

SMALL = {
    "lgbm": {"n_estimators": 40, "num_leaves": 15},
    "mlp": {"hidden_layer_sizes": [32, 16], "max_iter": 40},
}


def _xy(bars: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from quantcli.features import compute_features, feature_names
    from quantcli.features.labels import compute_labels

    names = feature_names("technical_v1")
    frame = (
        compute_features(bars)
        .join(compute_labels(bars, 5).collect(), on=["symbol", "ts"], how="inner")
        .drop_nulls()
        .sort("ts", "symbol")
    )
    X = frame.select(names).to_numpy().astype(np.float64)
    y = frame.get_column("label").to_numpy().astype(np.float64)
    ok = np.isfinite(X).all(axis=1)
    return X[ok], y[ok], names


def _fit(kind: str, X: np.ndarray, y: np.ndarray):
    from quantcli.models.estimators import make_model

    with warnings.catch_warnings():
        # a capped max_iter keeps the suite fast; an unconverged MLP is still a valid model to
        # export, so sklearn's ConvergenceWarning is expected here and nowhere else
        from sklearn.exceptions import ConvergenceWarning

        warnings.simplefilter("ignore", category=ConvergenceWarning)
        return make_model(kind, SMALL[kind], seed=7).fit(X, y)


@pytest.fixture(scope="session")
def real_data() -> SimpleNamespace:
    """The bundled real bars (SPX, IXIC daily): 29 technical features, 5-day forward return.

    Fitted on every other row of the first 70 % (time order); ``X_test`` is 1,000 later rows.
    """
    from quantcli.data.sample import load_sample

    X, y, names = _xy(load_sample())
    cut = int(0.7 * len(X))
    return SimpleNamespace(X=X[:cut:2], y=y[:cut:2], X_test=X[cut : cut + 1000], names=names)


@pytest.fixture(scope="session")
def synthetic_data() -> SimpleNamespace:
    """A seeded synthetic universe with a planted momentum signal (ar1 = 0.2)."""
    from quantcli.data.synthetic import synthetic_universe

    X, y, names = _xy(synthetic_universe(n_symbols=6, n_days=700, seed=11, ar1=0.2))
    cut = int(0.7 * len(X))
    return SimpleNamespace(X=X[:cut], y=y[:cut], X_test=X[cut : cut + 1000], names=names)


@pytest.fixture(scope="session")
def unit_scale_data(synthetic_data) -> SimpleNamespace:
    """Synthetic features with a smooth, unit-scale target ``tanh(z . beta)`` plus 5 % noise.

    An MLP fitted on a unit-scale target works in its natural numeric range, which is where
    INT8 weights keep parity (a target of ~1e-2, like raw returns, makes every prediction a small
    difference of large terms; see docs/serving.md).
    """
    rng = np.random.default_rng(3)
    X = synthetic_data.X
    Z = (X - X.mean(axis=0)) / X.std(axis=0)
    beta = rng.normal(size=X.shape[1]) / np.sqrt(X.shape[1])
    y = np.tanh(Z @ beta) + 0.05 * rng.normal(size=len(X))
    return SimpleNamespace(X=X, y=y, X_test=synthetic_data.X_test, names=synthetic_data.names)


@pytest.fixture(scope="session")
def models(real_data, synthetic_data, unit_scale_data) -> dict:
    """``{(dataset, kind): fitted model}`` for real/synthetic x lgbm/mlp/ensemble (+ unit)."""
    from quantcli.models.estimators import EnsembleRegressor

    out = {}
    for ds_name, ds in (
        ("real", real_data),
        ("synthetic", synthetic_data),
        ("unit", unit_scale_data),
    ):
        for kind in ("lgbm", "mlp"):
            out[(ds_name, kind)] = _fit(kind, ds.X, ds.y)
        # the ensemble is the plain mean of its fitted members: reuse them instead of refitting
        out[(ds_name, "ensemble")] = EnsembleRegressor(
            [("lgbm", out[(ds_name, "lgbm")]), ("mlp", out[(ds_name, "mlp")])]
        )
    return out


# -- the export CLI tests' home (test_cli_export.py, test_export_default_version.py) -------------
@pytest.fixture(scope="session")
def store_template(tmp_path_factory) -> Path:
    """An offline store with a small synthetic universe and its technical_v1 features.

    Built once per session (here, not in a test module, so the two modules that use it share one
    build); every test gets a copy.
    """
    from quantcli.data.ingest import ingest_frame
    from quantcli.data.synthetic import synthetic_universe
    from quantcli.features.build import build_features
    from quantcli.store.offline import OfflineStore

    home = tmp_path_factory.mktemp("serving_store")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QCLI_HOME", str(home))
        ingest_frame(synthetic_universe(n_symbols=4, n_days=420, seed=5, ar1=0.2))
        with OfflineStore() as store:
            build_features(store)
    return home / "offline.duckdb"


@pytest.fixture
def home(qcli_home: Path, mlflow_template_db: Path, store_template: Path) -> Path:
    """This test's $QCLI_HOME: copies of the feature store and of the migrated, empty registry."""
    shutil.copy(mlflow_template_db, qcli_home / "mlflow.db")
    shutil.copy(store_template, qcli_home / "offline.duckdb")
    return qcli_home


# -- the online feature store, a signed model and the service process ---------------------------
# (the stand-in feature table of the Feast tests in tests/online; built once, copied per module)
@pytest.fixture(scope="session")
def served_template(tmp_path_factory) -> SimpleNamespace:
    """One $QCLI_HOME built once per session: the stand-in feature table (6 symbols x 80 days)
    in the offline store, materialized into the SQLite online store, and the signed test model.

    Materializing costs most of a serving module's set-up; modules get a private copy of this
    home (:func:`module_home`), so no module sees another's ledger, registry or cache.
    """
    from quantcli.online import materialize

    home = tmp_path_factory.mktemp("serving_template")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QCLI_HOME", str(home))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("QCLI_API_TOKEN", raising=False)
        mp.delenv("QCLI_KEYS_DIR", raising=False)
        frame = feature_frame()
        write_feature_table(frame)
        state = materialize("technical_v1")
        model = make_signed_model(home, frame)
    return SimpleNamespace(home=home, frame=frame, state=state, model=model)


# files of the template that name its directory (Feast reads paths from them, the runtime the
# model's path); everything else in it is relative or content-addressed
_PATHS_IN = ("feast/feature_store.yaml", "feast/quantcli_state.json", "test_model/model.json")


@pytest.fixture(scope="module")
def module_home(tmp_path_factory, served_template) -> Iterator[Path]:
    """A private copy of :func:`served_template` as $QCLI_HOME for one test module."""
    home = tmp_path_factory.mktemp("qcli_home")
    shutil.copytree(served_template.home, home, dirs_exist_ok=True)
    for rel in _PATHS_IN:
        f = home / rel
        f.write_text(f.read_text().replace(str(served_template.home), str(home)))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QCLI_HOME", str(home))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("QCLI_API_TOKEN", raising=False)
        mp.delenv("QCLI_KEYS_DIR", raising=False)
        yield home


@pytest.fixture(scope="module")
def features(module_home, served_template):
    """The stand-in feature table, already in ``module_home``'s offline store."""
    return served_template.frame


@pytest.fixture(scope="module")
def materialized(features, served_template):
    """The feature table, already materialized into ``module_home``'s online store."""
    return served_template.state


@pytest.fixture(scope="module")
def signed_model(module_home, features, served_template):
    """The signed test model of ``module_home`` (its ``onnx_path`` inside that home)."""
    meta = json.loads((module_home / "test_model" / "model.json").read_text())
    return {**meta, "booster": served_template.model["booster"]}


class Service:
    """A running ``quantcli.serving.http`` process (uvicorn) on a free loopback port."""

    def __init__(self, proc: subprocess.Popen, port: int) -> None:
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"


def start_service(home: Path, *, token: str | None = None, timeout: float = 240.0) -> Service:
    """Start the service; generous timeout: importing Feast takes seconds, more on a busy box."""
    port = free_port()
    env = dict(os.environ, QCLI_HOME=str(home))
    env.pop("QCLI_API_TOKEN", None)
    if token:
        env["QCLI_API_TOKEN"] = token
    log = open(home / f"service_{port}.log", "wb")  # noqa: SIM115  (a file, not an undrained pipe)
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "_serve_test_model.py"), "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=str(HERE.parent.parent),
    )
    log.close()
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (home / f"service_{port}.log").read_text()[-2000:]
            raise RuntimeError(f"service exited {proc.returncode}: {tail}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return Service(proc, port)
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    proc.wait()
    raise RuntimeError("service did not become healthy in time")


def stop_service(svc: Service) -> None:
    if svc.proc.poll() is None:
        svc.proc.terminate()
        try:
            svc.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            svc.proc.kill()
            svc.proc.wait()
