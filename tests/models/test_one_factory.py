"""`qcli backtest cpcv` and `qcli model train` fit the same model from the same config and data.

Both build their models with :func:`quantcli.models.backtest.config_factory`; this checks the
outcome, not the wiring: the same per-split errors bit for bit, and a registered model whose
predictions equal a refit of the backtest's factory on every row.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

CONFIG = (
    "[lightgbm]\nn_estimators = 25\nnum_leaves = 7\nmin_child_samples = 20\nseed = 11\n"
    "[cpcv]\nn_groups = 5\nn_test_groups = 2\n"
    '[train]\ngrid = "none"\n'
)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A synthetic universe ingested and its technical_v1 features built, in a home of its own."""
    from quantcli.data.ingest import ingest_frame
    from quantcli.data.synthetic import synthetic_universe
    from quantcli.features.build import build_features

    home = tmp_path_factory.mktemp("one_factory")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QCLI_HOME", str(home))
        ingest_frame(synthetic_universe(6, 420, seed=21, ar1=0.3))
        build_features()
    return home


@pytest.fixture
def home(store: Path, qcli_home: Path, mlflow_template_db: Path) -> Path:
    shutil.copy(store / "offline.duckdb", qcli_home / "offline.duckdb")
    shutil.copy(mlflow_template_db, qcli_home / "mlflow.db")
    (qcli_home / "one.toml").write_text(CONFIG)
    return qcli_home


def test_backtest_and_train_fit_identical_models(qcli, home):
    from quantcli.config import load_config
    from quantcli.models.backtest import config_factory
    from quantcli.models.registry import ModelRegistry
    from quantcli.models.trainer import MLflowTrainer

    cfg_path = str(home / "one.toml")
    bt = qcli("backtest", "cpcv", "--config", cfg_path, "--grid", "none", "--no-trials", "--json")
    assert bt.code in (0, 1), bt.err
    tr = qcli("model", "train", "--name", "one", "--config", cfg_path, "--json")
    assert tr.code == 0, tr.err

    # every CPCV split: the same fitted model, so the same test-fold error, bit for bit
    folds = sorted(bt.json["fold_metrics"], key=lambda f: f["split"])
    assert len(folds) == 10 and bt.json["seed"] == 11
    reg = ModelRegistry()
    history = reg.client.get_metric_history(tr.json["run_id"], "cv_rmse")
    logged = [m.value for m in sorted(history, key=lambda m: m.step)]
    assert logged == [f["rmse"] for f in folds]
    assert tr.json["cv_metrics"]["cv_ic_mean"] == pytest.approx(bt.json["metrics"]["ic_mean"])

    # the two commands' factories are one: same parameters, same trees
    cfg = load_config(cfg_path)
    from_backtest = config_factory(cfg, "lgbm", 11)
    from_trainer = MLflowTrainer(cfg=cfg)._factory("lgbm", None, 11)
    assert from_backtest(None).get_params() == from_trainer(None).get_params()

    # the registered model is the backtest factory refit on every row
    from quantcli.backtest.stored import load_backtest_frame

    frame, names = load_backtest_frame("technical_v1", "fwd_return_5d")
    X = frame.select(names).to_numpy().astype(np.float64)
    y = frame.get_column("label").to_numpy().astype(np.float64)
    refit = from_backtest(None).fit(X, y)
    registered, info = reg.load_native_model("one", alias="staging")
    assert info.tags["quantcli.seed"] == "11"
    assert np.array_equal(registered.predict(X), refit.predict(X))
    assert (
        refit.booster_.model_to_string() == from_trainer(None).fit(X, y).booster_.model_to_string()
    )
