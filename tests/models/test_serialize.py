"""Non-pickle serialization: exact round trips, same bytes for the same seed, refusal of junk."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from quantcli.errors import InputError, IntegrityError
from quantcli.models.estimators import ModelFactory, make_model, model_kind
from quantcli.models.serialize import load_model, model_files, save_model

# An MLP on a few hundred rows may stop at max_iter before its tolerance: expected, not a defect
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

NAMES = ["f0", "f1", "f2", "f3", "f4"]
MLP = {"hidden_layer_sizes": [8], "max_iter": 40}
SMALL = {
    "lgbm": {"n_estimators": 20},
    "mlp": MLP,
    "ensemble": {"lgbm": {"n_estimators": 20}, "mlp": MLP},
}


@pytest.mark.parametrize("kind", ["lgbm", "mlp", "ensemble"])
def test_round_trip_predicts_identically(kind, xy_small, tmp_path):
    X, y = xy_small
    model = make_model(kind, SMALL[kind], seed=3).fit(X, y)
    files = save_model(model, tmp_path, NAMES)
    loaded = load_model(tmp_path)
    assert loaded.kind == kind
    assert loaded.feature_names == NAMES
    np.testing.assert_array_equal(loaded.predict(X), np.asarray(model.predict(X)))
    assert files == model_files(tmp_path)
    expected = {
        "lgbm": ["lgbm.txt", "model.json"],
        "mlp": ["mlp.json", "mlp.npz", "model.json"],
        "ensemble": ["lgbm.txt", "mlp.json", "mlp.npz", "model.json"],
    }[kind]
    assert files == expected


def test_ensemble_is_the_mean_of_its_members(xy_small, tmp_path):
    X, y = xy_small
    model = make_model("ensemble", SMALL["ensemble"], seed=1).fit(X, y)
    save_model(model, tmp_path, NAMES)
    loaded = load_model(tmp_path)
    booster_pred = loaded.booster.predict(X)
    mlp_pred = loaded.mlp_pipeline.predict(X)
    np.testing.assert_allclose(loaded.predict(X), (booster_pred + mlp_pred) / 2, rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["lgbm", "mlp", "ensemble"])
def test_same_seed_same_bytes(kind, xy_small, tmp_path):
    X, y = xy_small
    a, b = tmp_path / "a", tmp_path / "b"
    save_model(make_model(kind, SMALL[kind], seed=5).fit(X, y), a, NAMES)
    save_model(make_model(kind, SMALL[kind], seed=5).fit(X, y), b, NAMES)
    for name in model_files(a):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_different_seed_different_model(xy_small, tmp_path):
    X, y = xy_small
    a, b = tmp_path / "a", tmp_path / "b"
    save_model(make_model("mlp", MLP, seed=1).fit(X, y), a, NAMES)
    save_model(make_model("mlp", MLP, seed=2).fit(X, y), b, NAMES)
    assert (a / "mlp.npz").read_bytes() != (b / "mlp.npz").read_bytes()


def test_npz_holds_only_plain_float_arrays(xy_small, tmp_path):
    X, y = xy_small
    save_model(make_model("mlp", MLP, seed=1).fit(X, y), tmp_path, NAMES)
    with np.load(tmp_path / "mlp.npz", allow_pickle=False) as npz:
        assert all(npz[k].dtype == np.float64 for k in npz.files)
    with zipfile.ZipFile(tmp_path / "mlp.npz") as zf:
        assert all(info.filename.endswith(".npy") for info in zf.infolist())


def test_object_array_is_refused_on_load(xy_small, tmp_path):
    """A crafted .npz with a pickled object array cannot execute code: np.load refuses it."""
    X, y = xy_small
    save_model(make_model("mlp", MLP, seed=1).fit(X, y), tmp_path, NAMES)
    with np.load(tmp_path / "mlp.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["coef_0"] = np.array([object()], dtype=object)
    np.savez(tmp_path / "mlp.npz", **arrays)
    with pytest.raises(ValueError, match="allow_pickle"):
        load_model(tmp_path)


def test_unknown_format_and_missing_files_are_integrity_errors(xy_small, tmp_path):
    X, y = xy_small
    save_model(make_model("lgbm", SMALL["lgbm"], seed=1).fit(X, y), tmp_path, NAMES)
    manifest = json.loads((tmp_path / "model.json").read_text())
    (tmp_path / "lgbm.txt").unlink()
    with pytest.raises(IntegrityError, match=r"lgbm\.txt: model file missing"):
        load_model(tmp_path)
    manifest["format"] = "pickle/1"
    (tmp_path / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError, match="unknown model format 'pickle/1'"):
        load_model(tmp_path)
    with pytest.raises(IntegrityError, match="manifest missing"):
        load_model(tmp_path / "nowhere")


def test_predict_checks_the_width(xy_small, tmp_path):
    X, y = xy_small
    save_model(make_model("lgbm", SMALL["lgbm"], seed=1).fit(X, y), tmp_path, NAMES)
    with pytest.raises(InputError, match=r"shape \(n, 5\)"):
        load_model(tmp_path).predict(X[:, :4])


def test_make_model_kinds_and_errors():
    assert model_kind(make_model("lgbm")) == "lgbm"
    assert model_kind(make_model("mlp")) == "mlp"
    assert model_kind(make_model("ensemble")) == "ensemble"
    with pytest.raises(InputError, match="unknown model kind `--model xgb`") as exc:
        make_model("xgb")
    assert exc.value.exit_code == 2
    with pytest.raises(InputError, match="unknown MLP parameter"):
        make_model("mlp", {"n_estimators": 3})


def test_model_factory_merges_params_and_seed():
    factory = ModelFactory("lgbm", {"n_estimators": 7, "num_leaves": 5}, seed=11)
    params = factory({"num_leaves": 9}).get_params()
    assert (params["n_estimators"], params["num_leaves"], params["seed"]) == (7, 9, 11)
    assert params["deterministic"] is True
