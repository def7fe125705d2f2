"""The native model as the exporters and the parity gate see it: members, width, predictions.

A model arrives as a fitted estimator (``lightgbm.Booster``/``LGBMRegressor``, a scikit-learn MLP
pipeline), an averaging ensemble of them (``EnsembleRegressor``, scikit-learn's
``VotingRegressor``) or a registry-loaded ``NativeModel`` whose ``members`` hold one or more of
those. Every function here takes any of these shapes, so the converters, the parity gate and the
latency report agree on what "the model" predicts.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from quantcli.errors import InputError
from quantcli.models.estimators import model_kind


def unwrap_member(member: Any) -> Any:
    """The estimator inside a ``(name, estimator)`` pair or a loaded member (``.obj``)."""
    if isinstance(member, tuple) and len(member) == 2 and isinstance(member[0], str):
        member = member[1]
    obj = getattr(member, "obj", None)  # quantcli.models.serialize._Member
    return member if obj is None else obj


def ensemble_members(model: Any) -> list[tuple[Any, float]] | None:
    """The ``(member, weight)`` pairs of an averaging ensemble, or ``None`` for a single model.

    Recognised: an object with a ``members`` list of estimators or ``(name, estimator)`` pairs
    (``quantcli.models`` ``EnsembleRegressor`` and a loaded ``NativeModel``), with optional
    ``weights``; and scikit-learn's ``VotingRegressor``. Weights are normalised to sum to 1;
    no weights means a plain average. A one-member container is that member, not an ensemble.
    """
    members = getattr(model, "members", None)
    if members is None and type(model).__name__ == "VotingRegressor":
        members = getattr(model, "estimators_", None)
    if members is None:
        return None
    members = list(members.values()) if isinstance(members, dict) else list(members)
    if not members:
        raise InputError("the ensemble has no members: nothing to export")
    members = [unwrap_member(m) for m in members]
    weights = getattr(model, "weights", None)
    w = np.ones(len(members)) if weights is None else np.asarray(weights, dtype=float)
    if w.shape != (len(members),) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise InputError(
            f"ensemble weights must be {len(members)} finite non-negative numbers with a positive "
            f"sum, got weights={list(np.ravel(w))}"
        )
    w = w / w.sum()
    return [(m, float(wi)) for m, wi in zip(members, w, strict=True)]


def single_model(model: Any) -> Any:
    """A one-member container (a loaded ``NativeModel`` of kind lgbm/mlp) -> its estimator."""
    members = getattr(model, "members", None)
    if members is not None and not isinstance(members, dict) and len(list(members)) == 1:
        return unwrap_member(next(iter(members)))
    return model


def export_kind(model: Any) -> str:
    """``"lgbm"``, ``"mlp"`` or ``"ensemble"``: :func:`quantcli.models.estimators.model_kind`,
    with the error an export reports for any other type ("cannot export")."""
    try:
        return model_kind(model)
    except InputError:
        model = single_model(model)
        raise InputError(
            f"cannot export a model of type {type(model).__module__}.{type(model).__name__}",
            hint="export supports lightgbm (Booster or LGBMRegressor), a scikit-learn MLP "
            "pipeline, and an ensemble of them",
        ) from None


def n_features_of(model: Any) -> int | None:
    """The number of input features the native model expects, when it says."""
    model = single_model(model)
    members = ensemble_members(model)
    if members is not None:
        return n_features_of(members[0][0])
    if hasattr(model, "num_feature"):  # lightgbm.Booster
        return int(model.num_feature())
    n = getattr(model, "n_features_in_", None)
    return int(n) if n is not None else None


def native_predict(model: Any, X: np.ndarray) -> np.ndarray:
    """Predictions of the native model as a float64 vector (the reference for parity)."""
    members = ensemble_members(model)
    if members is not None and not hasattr(model, "predict"):
        return sum(w * native_predict(m, X) for m, w in members)
    return np.asarray(model.predict(X), dtype=np.float64).reshape(-1)


def as_matrix(X_sample: Any) -> tuple[np.ndarray, list[str] | None]:
    """``X_sample`` (NumPy, Polars or pandas) as a float64 matrix, and its column names."""
    names = None
    if hasattr(X_sample, "columns") and hasattr(X_sample, "to_numpy"):
        names = [str(c) for c in X_sample.columns]
        X = X_sample.to_numpy()
    else:
        X = np.asarray(X_sample)
    if X.ndim != 2 or X.shape[0] == 0:
        raise InputError(
            f"X_sample must be a non-empty 2-D table (rows x features), got shape {X.shape}"
        )
    try:
        X = X.astype(np.float64)
    except (TypeError, ValueError):
        raise InputError("X_sample must be numeric (float features)") from None
    return X, names


__all__ = [
    "as_matrix",
    "ensemble_members",
    "export_kind",
    "n_features_of",
    "native_predict",
    "single_model",
    "unwrap_member",
]
