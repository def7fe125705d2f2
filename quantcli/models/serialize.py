"""Save and load fitted models WITHOUT pickle: LightGBM text, NumPy ``.npz`` arrays and JSON.

A saved model is a directory::

    model.json      {"format": "quantcli-model/1", "kind": ..., "feature_names": [...],
                     "members": [{"name": "lgbm", "kind": "lgbm", "files": ["lgbm.txt"]}, ...]}
    lgbm.txt        LightGBM's own text format (``Booster.model_to_string``)
    mlp.npz         scaler mean/scale and the MLP's weight matrices and bias vectors (float64)
    mlp.json        the MLP's architecture (layer sizes, activation) and the array names

``lgbm`` has one member, ``mlp`` one, ``ensemble`` both; the prediction is the unweighted mean of
the members. ``np.load(..., allow_pickle=False)`` refuses object arrays, so nothing here can run
code on load. Same fitted model -> the same bytes (LightGBM text is deterministic; ``.npz`` members
carry a fixed zip timestamp).

Integrity (sha256 + signature) is the registry's job (:mod:`quantcli.models.registry`); this
module only reads and writes files.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from quantcli.errors import InputError, IntegrityError
from quantcli.models.estimators import EnsembleRegressor, model_kind

FORMAT = "quantcli-model/1"
MANIFEST = "model.json"


def _dump_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _save_lgbm(model: Any, directory: Path) -> list[str]:
    booster = model.booster_ if hasattr(model, "booster_") else model
    (directory / "lgbm.txt").write_text(booster.model_to_string())
    return ["lgbm.txt"]


def _save_mlp(pipeline: Any, directory: Path) -> list[str]:
    scaler = pipeline.named_steps["scaler"]
    mlp = pipeline.named_steps["mlp"]
    arrays: dict[str, np.ndarray] = {
        "scaler_mean": np.asarray(scaler.mean_, dtype=np.float64),
        "scaler_scale": np.asarray(scaler.scale_, dtype=np.float64),
        "scaler_var": np.asarray(scaler.var_, dtype=np.float64),
    }
    for i, (w, b) in enumerate(zip(mlp.coefs_, mlp.intercepts_, strict=True)):
        arrays[f"coef_{i}"] = np.asarray(w, dtype=np.float64)
        arrays[f"intercept_{i}"] = np.asarray(b, dtype=np.float64)
    np.savez(directory / "mlp.npz", **arrays)
    config = {
        "activation": mlp.activation,
        "out_activation": mlp.out_activation_,
        "hidden_layer_sizes": [int(n) for n in np.atleast_1d(mlp.hidden_layer_sizes)],
        "n_features_in": int(mlp.n_features_in_),
        "n_layers": int(mlp.n_layers_),
        "n_outputs": int(mlp.n_outputs_),
        "n_samples_seen": int(np.asarray(scaler.n_samples_seen_).max()),
    }
    _dump_json(directory / "mlp.json", config)
    return ["mlp.json", "mlp.npz"]


def save_model(
    model: Any, directory: str | os.PathLike[str], feature_names: list[str]
) -> list[str]:
    """Write the fitted ``model`` into ``directory``; return the written file names, sorted.

    Parameters
    ----------
    model
        A fitted regressor from :func:`quantcli.models.estimators.make_model` (or a
        ``lightgbm.Booster``), or a :class:`NativeModel`.
    directory
        Created if missing; existing files of the same names are overwritten.
    feature_names
        The model's input columns, in order.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(model, NativeModel):
        members = list(model.members)
        kind = model.kind
    elif isinstance(model, EnsembleRegressor):
        members = [(name, m) for name, m in model.members]
        kind = "ensemble"
    else:
        kind = model_kind(model)
        members = [(kind, model)]
    files: list[str] = [MANIFEST]
    manifest_members = []
    for name, member in members:
        mkind = member.kind if isinstance(member, _Member) else model_kind(member)
        obj = member.obj if isinstance(member, _Member) else member
        if mkind == "lgbm":
            written = _save_lgbm(obj, d)
        elif mkind == "mlp":
            written = _save_mlp(obj, d)
        else:  # pragma: no cover - nested ensembles are not produced by make_model
            raise InputError(f"cannot serialise a nested {mkind} member")
        files += written
        manifest_members.append({"name": name, "kind": mkind, "files": written})
    _dump_json(
        d / MANIFEST,
        {
            "format": FORMAT,
            "kind": kind,
            "feature_names": list(feature_names),
            "members": manifest_members,
        },
    )
    return sorted(files)


@dataclass
class _Member:
    kind: str
    obj: Any  # lightgbm.Booster or a fitted sklearn Pipeline(scaler, mlp)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.obj.predict(X), dtype=np.float64).ravel()


@dataclass
class NativeModel:
    """A model loaded from its files: ``predict(X)`` is the mean of the members' predictions.

    Attributes
    ----------
    kind
        ``lgbm``, ``mlp`` or ``ensemble``.
    feature_names
        Input columns, in the order ``predict`` expects them.
    members
        ``(name, member)`` pairs; ``member.obj`` is a ``lightgbm.Booster`` (``lgbm``) or a fitted
        sklearn ``Pipeline([scaler, mlp])`` (``mlp``) -- what the ONNX converters take.
    """

    kind: str
    feature_names: list[str]
    members: list[tuple[str, _Member]] = field(default_factory=list)

    @property
    def booster(self):
        """The LightGBM booster of an ``lgbm`` or ``ensemble`` model (else ``None``)."""
        for _, m in self.members:
            if m.kind == "lgbm":
                return m.obj
        return None

    @property
    def mlp_pipeline(self):
        """The sklearn scaler+MLP pipeline of an ``mlp`` or ``ensemble`` model (else ``None``)."""
        for _, m in self.members:
            if m.kind == "mlp":
                return m.obj
        return None

    def predict(self, X) -> np.ndarray:
        """Predictions (label units) for ``X`` of shape ``(n, len(feature_names))``."""
        arr = np.asarray(X, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != len(self.feature_names):
            raise InputError(
                f"`X` must have shape (n, {len(self.feature_names)}), got {arr.shape}",
                hint=f"columns in order: {', '.join(self.feature_names)}",
            )
        preds = [m.predict(arr) for _, m in self.members]
        return np.mean(np.vstack(preds), axis=0)


def _load_lgbm(directory: Path) -> _Member:
    import lightgbm

    return _Member("lgbm", lightgbm.Booster(model_str=(directory / "lgbm.txt").read_text()))


def _load_mlp(directory: Path) -> _Member:
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    cfg = json.loads((directory / "mlp.json").read_text())
    with np.load(directory / "mlp.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    n_in = int(cfg["n_features_in"])
    scaler = StandardScaler()
    scaler.mean_ = arrays["scaler_mean"]
    scaler.scale_ = arrays["scaler_scale"]
    scaler.var_ = arrays["scaler_var"]
    scaler.n_features_in_ = n_in
    scaler.n_samples_seen_ = int(cfg["n_samples_seen"])
    mlp = MLPRegressor(
        hidden_layer_sizes=tuple(cfg["hidden_layer_sizes"]), activation=cfg["activation"]
    )
    n_weights = int(cfg["n_layers"]) - 1
    mlp.coefs_ = [arrays[f"coef_{i}"] for i in range(n_weights)]
    mlp.intercepts_ = [arrays[f"intercept_{i}"] for i in range(n_weights)]
    mlp.n_layers_ = int(cfg["n_layers"])
    mlp.n_outputs_ = int(cfg["n_outputs"])
    mlp.out_activation_ = cfg["out_activation"]
    mlp.n_features_in_ = n_in
    return _Member("mlp", Pipeline([("scaler", scaler), ("mlp", mlp)]))


def load_model(directory: str | os.PathLike[str]) -> NativeModel:
    """Load a model saved by :func:`save_model` (no pickle). Verify integrity BEFORE calling this.

    Raises
    ------
    IntegrityError
        The manifest is missing, of another format, or names a file that is not there.
    """
    d = Path(directory)
    try:
        manifest = json.loads((d / MANIFEST).read_text())
    except FileNotFoundError:
        raise IntegrityError(f"{d / MANIFEST}: model manifest missing") from None
    except json.JSONDecodeError as exc:
        raise IntegrityError(f"{d / MANIFEST}: not valid JSON ({exc})") from None
    if manifest.get("format") != FORMAT:
        raise IntegrityError(
            f"{d / MANIFEST}: unknown model format {manifest.get('format')!r} (expected {FORMAT})"
        )
    members: list[tuple[str, _Member]] = []
    for spec in manifest["members"]:
        for f in spec["files"]:
            if not (d / f).is_file():
                raise IntegrityError(f"{d / f}: model file missing")
        loader = {"lgbm": _load_lgbm, "mlp": _load_mlp}.get(spec["kind"])
        if loader is None:
            raise IntegrityError(f"{d / MANIFEST}: unknown member kind {spec['kind']!r}")
        members.append((spec["name"], loader(d)))
    return NativeModel(manifest["kind"], list(manifest["feature_names"]), members)


def model_files(directory: str | os.PathLike[str]) -> list[str]:
    """Every file a saved model consists of (manifest first is not guaranteed; sorted)."""
    d = Path(directory)
    manifest = json.loads((d / MANIFEST).read_text())
    files = {MANIFEST}
    for spec in manifest["members"]:
        files.update(spec["files"])
    return sorted(files)
