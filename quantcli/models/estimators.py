"""The model families quantcli trains: LightGBM, an MLP, and their average.

``make_model(kind, params, seed)`` returns an unfitted sklearn-style regressor:

* ``lgbm``     -- ``lightgbm.LGBMRegressor`` with ``DEFAULTS["lightgbm"]`` overridden by
  ``params``; ``deterministic=True`` and ``force_row_wise=True`` so the same data and seed give
  the same trees (and the same model bytes).
* ``mlp``      -- ``StandardScaler`` then :class:`StandardizedTargetMLP`, an
  ``sklearn.neural_network.MLPRegressor`` (ReLU, Adam, early stopping on a 10 % validation split)
  that trains on the standardised target. Inputs and target are standardised with the
  population std (ddof = 0), so the network works at unit scale whatever the label's units.
* ``ensemble`` -- :class:`EnsembleRegressor`: the unweighted mean of one ``lgbm`` and one ``mlp``.

All predict the label in its own units (a forward return as a fraction). lightgbm and sklearn are
imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from quantcli.config import DEFAULTS, mlp_params
from quantcli.errors import InputError

MODEL_KINDS = ("lgbm", "mlp", "ensemble")

# the embedded [mlp] defaults (a `--config` file overrides them key by key)
MLP_DEFAULTS: dict[str, Any] = DEFAULTS["mlp"]


def check_model_kind(kind: str) -> None:
    if kind not in MODEL_KINDS:
        raise InputError(
            f"unknown model kind `--model {kind}`",
            hint=f"use one of: {', '.join(MODEL_KINDS)}",
        )


def lgbm_params(
    params: dict[str, Any] | None = None,
    seed: int | None = None,
    *,
    n_jobs: int | None = None,
    config_defaults: bool = True,
) -> dict[str, Any]:
    """LightGBM parameters: ``DEFAULTS["lightgbm"]`` < ``params`` < ``seed`` and ``n_jobs``.

    ``deterministic=True`` and ``force_row_wise=True`` (unless ``params`` say otherwise) make
    the same data and seed give the same trees bit for bit; one thread unless told. With
    ``config_defaults=False`` LightGBM's own defaults stand under ``params`` instead of the
    embedded ``[lightgbm]`` section.
    """
    merged = dict(DEFAULTS["lightgbm"]) if config_defaults else {}
    merged.update(params or {})
    if seed is not None:
        merged["seed"] = int(seed)
    if n_jobs is not None:
        merged["n_jobs"] = int(n_jobs)
    merged.setdefault("deterministic", True)
    merged.setdefault("force_row_wise", True)
    merged.setdefault("verbose", -1)
    merged.setdefault("n_jobs", 1)
    return merged


def _make_lgbm(params: dict[str, Any] | None, seed: int | None, **options: Any):
    import lightgbm

    return lightgbm.LGBMRegressor(**lgbm_params(params, seed, **options))


def _standardized_target_mlp_class():
    """The :class:`StandardizedTargetMLP` class, built on first use (sklearn loads lazily)."""
    global _STM_CLASS
    if _STM_CLASS is not None:
        return _STM_CLASS
    from sklearn.neural_network import MLPRegressor

    class StandardizedTargetMLP(MLPRegressor):
        """An ``MLPRegressor`` fitted on ``z = (y - mean(y)) / std(y)`` (population std).

        After fitting, the affine map back to label units is folded into the output layer
        (``W_out *= std``, ``b_out = b_out * std + mean``), so ``predict`` returns the label's
        units and the fitted object is an ordinary MLP: the same arrays serialise, and the
        ONNX graph's last MatMul/Add carry the scale.

        Why: forward returns are ~1e-2. A network trained on them directly learns tiny output
        weights over O(1) hidden activations, and sklearn's fixed ``tol=1e-4`` on a loss of
        ~1e-4 stops training almost at once; predictions end up a small difference of large
        terms, which 8-bit rounding destroys (docs/serving.md has the INT8 parity figures).
        At unit scale the network trains normally and INT8 keeps parity. ``target_mean_`` and
        ``target_scale_`` record the folded map.
        """

        def fit(self, X, y):
            y = np.asarray(y, dtype=np.float64)
            mean = float(np.mean(y, axis=0)) if y.ndim == 1 else np.mean(y, axis=0)
            scale = np.std(y, axis=0)
            scale = np.where(scale > 0, scale, 1.0)
            if y.ndim == 1:
                scale = float(scale)
            super().fit(X, (y - mean) / scale)
            self.coefs_[-1] = self.coefs_[-1] * scale
            self.intercepts_[-1] = self.intercepts_[-1] * scale + mean
            self.target_mean_, self.target_scale_ = mean, scale
            return self

        def partial_fit(self, X, y):  # pragma: no cover - quantcli never calls it
            raise NotImplementedError("StandardizedTargetMLP refits from scratch: use fit")

    # a module-level name, so pickle (Ray workers, CPCV) finds it through __getattr__ below
    StandardizedTargetMLP.__module__ = __name__
    StandardizedTargetMLP.__qualname__ = "StandardizedTargetMLP"
    _STM_CLASS = StandardizedTargetMLP
    return _STM_CLASS


_STM_CLASS = None


def __getattr__(name: str):
    # PEP 562: ``quantcli.models.estimators.StandardizedTargetMLP`` without importing sklearn
    # when this module is imported (qcli --help stays light)
    if name == "StandardizedTargetMLP":
        return _standardized_target_mlp_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _make_mlp(params: dict[str, Any] | None, seed: int | None):
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    p = mlp_params(params)
    p["hidden_layer_sizes"] = tuple(int(n) for n in p["hidden_layer_sizes"])
    mlp_cls = _standardized_target_mlp_class()
    return Pipeline(
        [
            ("scaler", StandardScaler()),
            ("mlp", mlp_cls(random_state=0 if seed is None else int(seed), **p)),
        ]
    )


class EnsembleRegressor:
    """The unweighted mean of fitted members' predictions.

    Parameters
    ----------
    members
        ``(name, regressor)`` pairs; every member sees the same ``X`` and ``y``.
    """

    def __init__(self, members: list[tuple[str, Any]]) -> None:
        if not members:
            raise InputError("`members` must hold at least one regressor, got `members=[]`.")
        self.members = members

    def fit(self, X, y, **_: Any) -> EnsembleRegressor:
        for _, member in self.members:
            member.fit(X, y)
        return self

    def predict(self, X) -> np.ndarray:
        preds = [np.asarray(m.predict(X), dtype=np.float64) for _, m in self.members]
        return np.mean(np.vstack(preds), axis=0)

    def get_params(self, deep: bool = False) -> dict[str, Any]:
        return {"members": self.members}


def make_model(
    kind: str = "lgbm",
    params: dict[str, Any] | None = None,
    seed: int | None = 42,
    *,
    n_jobs: int | None = None,
    config_defaults: bool = True,
):
    """An unfitted regressor of family ``kind`` (``lgbm``, ``mlp`` or ``ensemble``).

    Parameters
    ----------
    kind
        The model family.
    params
        Overrides: LightGBM parameters for ``lgbm``; MLP parameters for ``mlp``; for
        ``ensemble`` a dict with optional ``lgbm`` and ``mlp`` sub-dicts.
    seed
        The seed of every random choice (LightGBM bagging, MLP initialisation).
    n_jobs, config_defaults
        LightGBM's threads and whether ``[lightgbm]`` defaults stand under ``params``
        (:func:`lgbm_params`).

    Examples
    --------
    >>> make_model("lgbm", {"n_estimators": 10}, seed=1).get_params()["n_estimators"]
    10
    """
    check_model_kind(kind)
    lgbm_options = {"n_jobs": n_jobs, "config_defaults": config_defaults}
    if kind == "lgbm":
        return _make_lgbm(params, seed, **lgbm_options)
    if kind == "mlp":
        return _make_mlp(params, seed)
    p = params or {}
    return EnsembleRegressor(
        [
            ("lgbm", _make_lgbm(p.get("lgbm"), seed, **lgbm_options)),
            ("mlp", _make_mlp(p.get("mlp"), seed)),
        ]
    )


class ModelFactory:
    """The picklable ``model_factory(params) -> regressor`` of every CPCV fit and final refit.

    ``qcli backtest cpcv``, ``qcli model train`` and :func:`quantcli.run_cpcv_backtest` all
    build their models here, so the same parameters and seed fit the same model. ``params``
    passed at call time override the ones given here; ``n_jobs`` and ``config_defaults`` are
    those of :func:`lgbm_params`.
    """

    def __init__(
        self,
        kind: str = "lgbm",
        params: dict[str, Any] | None = None,
        seed: int | None = 42,
        *,
        n_jobs: int | None = None,
        config_defaults: bool = True,
    ) -> None:
        check_model_kind(kind)
        self.kind = kind
        self.params = dict(params or {})
        self.seed = seed
        self.n_jobs = n_jobs
        self.config_defaults = config_defaults

    def __call__(self, params: dict[str, Any] | None = None):
        merged = dict(self.params)
        merged.update(params or {})
        return make_model(
            self.kind,
            merged,
            self.seed,
            n_jobs=self.n_jobs,
            config_defaults=self.config_defaults,
        )

    def __repr__(self) -> str:
        return f"ModelFactory(kind={self.kind!r}, params={self.params!r}, seed={self.seed!r})"


class LightGBMFactory(ModelFactory):
    """A :class:`ModelFactory` of LightGBM on LightGBM's own defaults overridden by ``base``.

    The default model of :func:`quantcli.run_cpcv_backtest`; a ``seed`` key in ``base`` gives
    way to ``seed``.
    """

    def __init__(self, base: dict[str, Any] | None = None, seed: int = 42, n_jobs: int = 1):
        params = {k: v for k, v in (base or {}).items() if k != "seed"}
        super().__init__("lgbm", params, int(seed), n_jobs=int(n_jobs), config_defaults=False)

    @property
    def base(self) -> dict[str, Any]:
        return self.params

    def __repr__(self) -> str:
        return f"LightGBMFactory(base={self.base!r}, seed={self.seed}, n_jobs={self.n_jobs})"


class EstimatorFactory:
    """A fresh, unfitted copy of a user's estimator per CPCV split and for the final refit.

    quantcli serialises models without pickle, so the estimator must be one quantcli can save:
    ``lightgbm.LGBMRegressor``, a scikit-learn MLP pipeline, or an
    :class:`~quantcli.models.estimators.EnsembleRegressor` of them. ``params`` are applied
    with ``set_params`` (an ``LGBMRegressor``'s ``n_estimators``, a pipeline's
    ``mlp__alpha``, ...).
    """

    def __init__(self, estimator: Any, params: dict[str, Any] | None, seed: int) -> None:
        if not (hasattr(estimator, "fit") and hasattr(estimator, "predict")):
            raise InputError(
                f"`model` must be a model kind ('lgbm', 'mlp', 'ensemble') or an estimator "
                f"with fit/predict, got {type(estimator).__name__}"
            )
        self.kind = model_kind(estimator)  # InputError for a type quantcli cannot serialise
        self.params = dict(params or {})
        self.seed = seed
        self.estimator = self._fresh(estimator, self.params)

    @staticmethod
    def _fresh(estimator: Any, params: dict[str, Any]) -> Any:
        # a deep copy keeps the caller's object untouched (it may be fitted already)
        est = copy.deepcopy(estimator)
        if params:
            if not hasattr(est, "set_params"):
                raise InputError(
                    f"`params` cannot be applied to a {type(est).__name__}",
                    hint="set the members' parameters before passing the ensemble",
                )
            try:
                est.set_params(**params)
            except ValueError as exc:
                raise InputError(f"`params` do not fit {type(est).__name__}: {exc}") from None
        return est

    def __call__(self, params: dict[str, Any] | None = None) -> Any:
        return self._fresh(self.estimator, dict(params or {}))

    def __repr__(self) -> str:
        return f"EstimatorFactory(kind={self.kind!r}, estimator={self.estimator!r})"


def _single_member(model: Any) -> Any:
    """The estimator of a one-member container (a loaded ``NativeModel``), else ``model``."""
    members = getattr(model, "members", None)
    if members is None or isinstance(members, dict) or len(list(members)) != 1:
        return model
    member = next(iter(members))
    if isinstance(member, tuple) and len(member) == 2 and isinstance(member[0], str):
        member = member[1]
    obj = getattr(member, "obj", None)  # a loaded member keeps its estimator in .obj
    return member if obj is None else obj


def _is_mlp(model: Any) -> bool:
    # the MLP family is a scikit-learn pipeline (scaler, MLP) or a bare MLPRegressor; another
    # sklearn estimator (a Ridge, a forest) is none of quantcli's families
    if not type(model).__module__.startswith(("sklearn", __name__)):
        return False
    return type(model).__name__ in ("Pipeline", "MLPRegressor", "StandardizedTargetMLP")


def model_kind(model: Any) -> str:
    """``"lgbm"``, ``"mlp"`` or ``"ensemble"``: the family of a fitted or unfitted regressor.

    Recognised: ``lightgbm.Booster`` and ``LGBMRegressor``; a scikit-learn MLP pipeline (or
    ``MLPRegressor``); an averaging ensemble (:class:`EnsembleRegressor`, a loaded
    ``NativeModel`` of several members, scikit-learn's ``VotingRegressor``); a one-member
    ``NativeModel`` is its member's family. Anything else is an :class:`InputError`.
    """
    if isinstance(model, EnsembleRegressor):
        return "ensemble"
    model = _single_member(model)
    if getattr(model, "members", None) is not None or type(model).__name__ == "VotingRegressor":
        return "ensemble"
    if type(model).__module__.startswith("lightgbm"):
        return "lgbm"
    if _is_mlp(model):
        return "mlp"
    raise InputError(
        f"unsupported model type {type(model).__name__} ({type(model).__module__})",
        hint="quantcli trains lightgbm (Booster or LGBMRegressor), a scikit-learn MLP pipeline, "
        "or an ensemble of them (quantcli.models.make_model)",
    )
