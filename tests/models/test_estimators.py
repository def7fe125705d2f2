"""The model families of make_model: the MLP trains on the standardised target."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from quantcli.models.estimators import make_model

PARAMS = {"hidden_layer_sizes": [16, 8], "max_iter": 25}


@pytest.fixture(scope="module")
def xy():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(600, 6)) * np.array([1.0, 10.0, 0.1, 1e3, 1.0, 5.0])
    y = 0.01 * np.tanh(X[:, 0] + X[:, 1] / 10) + 0.02 * rng.normal(size=600) + 0.003
    return X, y


def _fit(model, X, y):
    with warnings.catch_warnings():
        # max_iter is capped to keep the test fast; convergence is not what is tested
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X, y)


def test_the_mlp_is_a_plain_mlp_fitted_on_the_standardised_target(xy):
    """Oracle: sklearn's own MLPRegressor on z = (y - mean) / std, mapped back by hand."""
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from quantcli.models.estimators import MLP_DEFAULTS

    X, y = xy
    ours = _fit(make_model("mlp", PARAMS, seed=3), X, y)
    p = {**MLP_DEFAULTS, **PARAMS, "hidden_layer_sizes": (16, 8)}
    plain = Pipeline([("scaler", StandardScaler()), ("mlp", MLPRegressor(random_state=3, **p))])
    mean, std = y.mean(), y.std()  # population std (ddof = 0)
    _fit(plain, X, (y - mean) / std)
    np.testing.assert_allclose(
        ours.predict(X), plain.predict(X) * std + mean, rtol=1e-9, atol=1e-15
    )
    mlp = ours.named_steps["mlp"]
    assert mlp.target_mean_ == pytest.approx(mean) and mlp.target_scale_ == pytest.approx(std)


def test_label_units_do_not_change_what_the_network_learns(xy):
    """A return in percent (100 y) gives exactly 100x the predictions of a return as a fraction."""
    X, y = xy
    a = _fit(make_model("mlp", PARAMS, seed=3), X, y).predict(X)
    b = _fit(make_model("mlp", PARAMS, seed=3), X, 100.0 * y).predict(X)
    np.testing.assert_allclose(b, 100.0 * a, rtol=1e-9, atol=1e-12)


def test_fitted_mlp_pickles_and_serialises_without_pickle(xy, tmp_path):
    """Ray ships fitted models by pickle; the registry saves them as arrays (no pickle)."""
    from quantcli.models.serialize import load_model, save_model

    X, y = xy
    model = _fit(make_model("mlp", PARAMS, seed=3), X, y)
    again = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(again.predict(X), model.predict(X))
    save_model(model, tmp_path / "m", [f"f{i}" for i in range(X.shape[1])])
    loaded = load_model(tmp_path / "m")
    np.testing.assert_allclose(loaded.predict(X), model.predict(X), rtol=1e-12, atol=1e-15)


def test_ensemble_members_share_the_seed_and_average(xy):
    X, y = xy
    ens = _fit(make_model("ensemble", {"lgbm": {"n_estimators": 5}, "mlp": PARAMS}, seed=3), X, y)
    (_, lgbm), (_, mlp) = ens.members
    np.testing.assert_allclose(ens.predict(X), 0.5 * (lgbm.predict(X) + mlp.predict(X)))
    assert type(mlp.named_steps["mlp"]).__name__ == "StandardizedTargetMLP"
