"""What one training run records in MLflow (parameters, metrics, tags, the dataset input) and
what it returns (:class:`TrainResult`).

* parameters: model kind and hyper-parameters of the registered configuration
  (:func:`run_params`), CPCV ``N``/``k``/embargo/purge, gates, seed, grid;
* metrics: per-fold CV metrics (``cv_<metric>`` at ``step = split index``), their means
  (``cv_<metric>_mean``) and the backtest's aggregates (``backtest_<metric>``);
* the dataset manifest as an MLflow dataset input (:func:`log_dataset`);
* the model signature (:func:`signature_json`);
* the lineage tags of the run and its version (:func:`lineage_tags`) beside the user's own
  (:func:`user_tags`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

import numpy as np

from quantcli import __version__
from quantcli.errors import InputError
from quantcli.models import tags as T
from quantcli.models.estimators import EstimatorFactory, lgbm_params, mlp_params
from quantcli.models.versions import MODEL_ARTIFACT_PATH
from quantcli.results import Result

# MLflow caps one batch at 100 params / 1000 metrics
_PARAMS_PER_BATCH = 100
_METRICS_PER_BATCH = 1000
_FOLD_KEYS = ("split", "fold", "path", "config", "n_train", "n_test")


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite numeric entries of ``metrics`` as floats (booleans and the rest dropped)."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
            continue
        if np.isfinite(value):
            out[key] = float(value)
    return out


def fold_metrics(folds: list[Any]) -> tuple[dict[str, list[float]], dict[str, float]]:
    """``({metric: [value per fold]}, {"cv_<metric>_mean": mean})`` of the fold dicts."""
    per: dict[str, list[float]] = {}
    for fold in folds:
        for key, value in scalar_metrics(fold if isinstance(fold, dict) else {}).items():
            if key in _FOLD_KEYS:
                continue
            per.setdefault(key, []).append(value)
    means = {f"cv_{k}_mean": float(np.mean(v)) for k, v in sorted(per.items())}
    return per, means


def run_params(factory: Any) -> dict[str, Any]:
    """The model parameters a run logs: ``model_kind`` and ``lgbm_*`` / ``mlp_*``."""
    if isinstance(factory, EstimatorFactory):
        # the estimator's own parameters, as the user set them
        prefix = {"lgbm": "lgbm_", "mlp": "mlp_"}.get(factory.kind, "")
        est = factory.estimator
        raw = est.get_params(deep=False) if factory.kind == "lgbm" else {}
        return {
            "model_kind": factory.kind,
            "estimator": type(est).__name__,
            **{f"{prefix}{k}": v for k, v in sorted(raw.items()) if v is not None},
        }
    if factory.kind == "lgbm":
        p = lgbm_params(factory.params, factory.seed)
        return {"model_kind": "lgbm", **{f"lgbm_{k}": v for k, v in sorted(p.items())}}
    if factory.kind == "mlp":
        p = mlp_params(factory.params)
        return {"model_kind": "mlp", **{f"mlp_{k}": v for k, v in sorted(p.items())}}
    lg = lgbm_params(factory.params.get("lgbm"), factory.seed)
    mp = mlp_params(factory.params.get("mlp"))
    return {
        "model_kind": "ensemble",
        **{f"lgbm_{k}": v for k, v in sorted(lg.items())},
        **{f"mlp_{k}": v for k, v in sorted(mp.items())},
    }


def log_batches(
    client: Any,
    run_id: str,
    params: dict[str, Any],
    metrics: list[Any],
    tags: dict[str, str],
) -> None:
    """Log ``params`` (stringified, sorted), ``metrics`` and ``tags`` in MLflow-sized batches."""
    from mlflow.entities import Param, RunTag

    param_list = [Param(k, str(v)) for k, v in sorted(params.items())]
    for i in range(0, len(param_list), _PARAMS_PER_BATCH):
        client.log_batch(run_id, params=param_list[i : i + _PARAMS_PER_BATCH])
    for i in range(0, len(metrics), _METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=metrics[i : i + _METRICS_PER_BATCH])
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])


def log_dataset(
    client: Any, run_id: str, manifest: dict[str, Any], lineage: dict[str, str]
) -> None:
    """The dataset manifest as the run's MLflow dataset input (context ``training``)."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    schema = {"mlflow_colspec": [{"name": c, "type": "double"} for c in manifest["columns"]]}
    profile = {k: manifest[k] for k in ("rows", "symbols", "start", "end")}
    dataset = Dataset(
        name=f"{lineage[T.FEATURE_SET]}:{lineage[T.LABEL]}",
        digest=manifest["sha256"][:16],
        source_type="quantcli-offline-store",
        source=json.dumps({"feature_set": lineage[T.FEATURE_SET], "sha256": manifest["sha256"]}),
        schema=json.dumps(schema),
        profile=json.dumps(profile),
    )
    client.log_inputs(
        run_id, [DatasetInput(dataset, [InputTag("mlflow.data.context", "training")])]
    )


def signature_json(feature_names: list[str]) -> str:
    """The MLflow model signature: float64 feature columns in order -> one float64 prediction."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    sig = ModelSignature(
        inputs=Schema([ColSpec("double", n) for n in feature_names]),
        outputs=Schema([ColSpec("double", "prediction")]),
    )
    return json.dumps(sig.to_dict(), indent=2, sort_keys=True) + "\n"


def user_tags(tags: dict[str, Any] | None) -> dict[str, str]:
    """User run tags as strings; quantcli's and MLflow's own tag names are refused."""
    out: dict[str, str] = {}
    for key, value in (tags or {}).items():
        if not isinstance(key, str) or not key.strip() or len(key) > 250:
            raise InputError(f"`tags` key {key!r} must be a non-empty string of <= 250 chars")
        if key.startswith(("quantcli.", "mlflow.")):
            raise InputError(
                f"`tags` key '{key}' is reserved: quantcli records its lineage under "
                "'quantcli.*' and MLflow under 'mlflow.*'"
            )
        text = str(value)
        if len(text) > 5000:
            raise InputError(f"`tags['{key}']` is longer than 5000 characters")
        out[key] = text
    return out


def lineage_tags(
    kind: str,
    feature_set: str,
    feature_set_version: int,
    label: str,
    manifest: dict[str, Any],
    seed: int,
) -> dict[str, str]:
    """The lineage tags of the run and of the registered version."""
    return {
        T.MODEL_KIND: kind,
        T.FEATURE_SET: feature_set,
        T.FEATURE_SET_VERSION: str(feature_set_version),
        T.LABEL: label,
        T.DATASET_SHA256: manifest["sha256"],
        T.DATASET_ROWS: str(manifest["rows"]),
        T.TRAINED_AT: datetime.now(UTC).isoformat(),
        T.QUANTCLI_VERSION: __version__,
        T.SEED: str(seed),
        T.MODEL_ARTIFACT_PATH: MODEL_ARTIFACT_PATH,
    }


@dataclass(frozen=True, kw_only=True)
class TrainResult(Result):
    """What one training run produced; ``passed`` / ``reasons`` are the CPCV backtest verdict
    (a failed verdict still logs and registers the run: promotion is what it gates)."""

    run_id: str
    experiment_id: str
    tracking_uri: str
    model_kind: str
    feature_names: list[str]
    dataset: dict[str, Any]
    cv_metrics: dict[str, float]
    backtest_metrics: dict[str, Any]
    model_files: list[str]
    #: the ``[gates]`` the backtest verdict was judged under (signed with it at registration)
    thresholds: dict[str, float] = field(default_factory=dict)
    registered_name: str | None = None
    version: str | None = None
    aliases: list[str] = field(default_factory=list)
    #: artifact paths of the CPCV report in the run (``backtest/equity.png``, ...)
    backtest_report: list[str] = field(default_factory=list)

    failure_message: ClassVar[str] = "the CPCV backtest gates failed"

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "experiment_id": self.experiment_id,
            "tracking_uri": self.tracking_uri,
            "model_kind": self.model_kind,
            "name": self.registered_name,
            "version": self.version,
            "aliases": self.aliases,
            "dataset": {k: v for k, v in self.dataset.items() if k != "columns"},
            "n_features": len(self.feature_names),
            "cv_metrics": self.cv_metrics,
            "backtest_metrics": self.backtest_metrics,
            "backtest_verdict": T.PASS if self.passed else T.FAIL,
            "backtest_thresholds": self.thresholds,
            "reasons": list(self.reasons),
            "model_files": self.model_files,
            "backtest_report": self.backtest_report,
        }


__all__ = [
    "TrainResult",
    "fold_metrics",
    "lineage_tags",
    "log_batches",
    "log_dataset",
    "run_params",
    "scalar_metrics",
    "signature_json",
    "user_tags",
]
