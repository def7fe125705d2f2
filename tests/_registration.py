"""The one way the tests put a model version into the MLflow registry: :func:`register_model`.

It fits the real estimator (``make_model``), saves it the way the trainer does (``save_model``),
logs it to a run and registers it through :meth:`ModelRegistry.register_version`, so every
version carries the signatures and ``registered`` snapshot of a trained one. The root fixture
``register_model`` (tests/conftest.py) hands this function to tests; module-scoped fixtures and
the docs harness, which run outside a test function, call it directly.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

#: columns of a training frame that are not model inputs
NOT_FEATURES = ("symbol", "ts", "label", "label_end", "fwd_return_1d")
#: a small model per kind: fast to fit, still the real estimator
SMALL_PARAMS: dict[str, dict[str, Any]] = {
    "lgbm": {"n_estimators": 30},
    "mlp": {"max_iter": 30},
    "ensemble": {"lgbm": {"n_estimators": 30}, "mlp": {"max_iter": 30}},
}
ONNX_PATH = "onnx/model.fp32.onnx"


#: the columns of :func:`tiny`
FEATURES = ["f0", "f1", "f2"]


def tiny(seed: int = 0, backtest: str | None = "pass") -> dict:
    """``register_model`` options for a tiny LightGBM on 300 rows of ``FEATURES`` (one
    informative column) whose run carries a ``backtest`` verdict; only the model-kind tag."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(300, len(FEATURES)))
    frame = pl.DataFrame(X, schema=FEATURES).with_columns(
        label=0.1 * X[:, 0] + 0.01 * rng.normal(size=300)
    )
    return {
        "frame": frame,
        "seed": seed,
        "params": {"n_estimators": 5},
        "backtest": backtest,
        "lineage": False,
    }


@dataclass(frozen=True)
class Registered:
    """One registered version: where it is and what it was fitted on."""

    name: str
    version: str
    run_id: str
    feature_names: list[str]
    kind: str
    tracking_uri: str
    model: Any = None  # the fitted estimator (None for an ONNX-only version)


def _experiment(reg, name: str) -> str:
    from quantcli import config
    from quantcli.models.registry import is_local_store

    exp = reg.client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    # the embedded store keeps artifacts under $QCLI_HOME, where the library looks for them
    location = config.mlflow_artifacts_dir().as_uri() if is_local_store(reg.tracking_uri) else None
    return reg.client.create_experiment(name, artifact_location=location)


def _fit(kind: str, params: dict[str, Any], seed: int, X, y):
    from sklearn.exceptions import ConvergenceWarning

    from quantcli.models.estimators import make_model

    with warnings.catch_warnings():
        # capped iterations keep the tests fast; an unconverged MLP is still a valid model
        warnings.simplefilter("ignore", ConvergenceWarning)
        return make_model(kind, params, seed=seed).fit(X, y)


def _lineage(kind: str, names: list[str], frame) -> dict[str, str]:
    """The version tags ``qcli model train`` writes (the dataset's only when there is one)."""
    from quantcli.models import tags as T
    from quantcli.models.trainer import dataset_manifest

    tags = {
        T.MODEL_KIND: kind,
        T.FEATURE_SET: "technical_v1",
        T.FEATURE_SET_VERSION: "1",
        T.FEATURE_NAMES: json.dumps(names),
    }
    if frame is not None:
        tags[T.LABEL] = "fwd_return_5d"
        tags[T.DATASET_SHA256] = dataset_manifest(frame)["sha256"]
    return tags


def register_model(
    name: str,
    *,
    kind: str = "lgbm",
    frame=None,
    features: list[str] | None = None,
    params: dict[str, Any] | None = None,
    seed: int = 1,
    tracking_uri: str | None = None,
    backtest: str | None = None,
    gates: dict[str, float] | None = None,
    verdicts: dict[str, bool] | None = None,
    alias: str | None = "staging",
    onnx: bytes | None = None,
    lineage: bool = True,
    tags: dict[str, Any] | None = None,
    experiment: str = "tests",
) -> Registered:
    """Fit and register a new version of ``name``; returns a :class:`Registered`.

    - ``kind``: ``lgbm``, ``mlp`` or ``ensemble`` (fitted on ``frame``, default the store's
      training frame, with ``params`` or :data:`SMALL_PARAMS`), or ``onnx``: no native model,
      only the ``onnx`` graph (``params`` then go to ``model/card.json``).
    - ``features``: the input columns (default every column but :data:`NOT_FEATURES`).
    - ``tracking_uri``: the registry (default the workspace's embedded store; or a server).
    - ``backtest``: ``"pass"``/``"fail"`` tags the run as the trainer's backtest does (``validate``
      reads it from there) under ``gates`` (default the embedded ``[gates]``; ``{}``: none
      logged, a run that names no thresholds); ``verdicts``: ``{gate: passed}`` recorded on
      the version, signed.
    - ``onnx``: graph bytes, signed and added at ``onnx/model.fp32.onnx`` (a servable version).
    - ``lineage``: the feature-set/label/dataset tags of a trained version (a fitted frame needs
      ``symbol`` and ``ts`` for its manifest); ``tags`` are set last, so they override.
    """
    from quantcli.config import DEFAULTS
    from quantcli.models import tags as T
    from quantcli.models.registry import ModelRegistry
    from quantcli.models.serialize import save_model
    from quantcli.models.trainer import dataset_manifest

    model = None
    if kind != "onnx":
        if frame is None:
            from quantcli.features.dataset import load_training_frame

            frame = load_training_frame()
        names = features or [c for c in frame.columns if c not in NOT_FEATURES]
        X, y = frame.select(names).to_numpy(), frame.get_column("label").to_numpy()
        model = _fit(kind, params or SMALL_PARAMS[kind], seed, X, y)
    elif onnx is None or features is None:
        raise ValueError("an ONNX-only version needs `onnx` (graph bytes) and `features`")
    else:
        names = list(features)
    reg = ModelRegistry(tracking_uri)
    run_id = reg.client.create_run(_experiment(reg, experiment)).info.run_id
    if backtest is not None:
        reasons = [] if backtest == "pass" else ["sharpe 0.10 < min_sharpe 1.20"]
        reg.client.set_tag(run_id, "quantcli.backtest.verdict", backtest)
        reg.client.set_tag(run_id, "quantcli.backtest.reasons", json.dumps(reasons))
        for key, value in (DEFAULTS["gates"] if gates is None else gates).items():
            reg.client.log_param(run_id, f"gate_{key}", value)
    version_tags: dict[str, Any] = {T.MODEL_KIND: kind, T.FEATURE_NAMES: json.dumps(names)}
    if lineage:
        version_tags = _lineage(kind, names, frame)
    elif kind != "onnx":
        del version_tags[T.FEATURE_NAMES]  # a bare trained version: the kind only
    if lineage and frame is not None:
        # the trainer's run tag: export draws its parity sample from the manifest's time range
        manifest = {k: v for k, v in dataset_manifest(frame).items() if k != "columns"}
        reg.client.set_tag(run_id, "quantcli.dataset.manifest", json.dumps(manifest))
    version_tags.update(tags or {})
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        if model is not None:
            save_model(model, model_dir, names)
        else:
            model_dir.mkdir()
            (model_dir / "card.json").write_text(json.dumps(params or {}))
        reg.client.log_artifacts(run_id, str(model_dir), "model")
        reg.client.set_terminated(run_id)
        info = reg.register_version(name, run_id, model_dir, version_tags, alias=alias)
        if onnx is not None:
            graph = Path(tmp) / Path(ONNX_PATH).name
            graph.write_bytes(onnx)
            reg.add_artifact(name, info.version, graph, ONNX_PATH)
    for gate, passed in (verdicts or {}).items():
        reg.record_verdict(name, info.version, gate, passed, [] if passed else [f"{gate} failed"])
    return Registered(name, str(info.version), run_id, names, kind, reg.tracking_uri, model)
