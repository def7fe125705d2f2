"""Models: estimators, non-pickle serialization, MLflow training with lineage, the gated registry.

* :mod:`quantcli.models.estimators` -- ``make_model("lgbm" | "mlp" | "ensemble", params, seed)``
  and :class:`ModelFactory`, the one factory of every CPCV fit and final refit
* :mod:`quantcli.models.backtest`   -- the model's CPCV backtest (``qcli backtest cpcv``)
* :mod:`quantcli.models.serialize`  -- save/load without pickle (LightGBM text, ``.npz``, JSON)
* :mod:`quantcli.models.trainer`    -- :class:`MLflowTrainer` (CPCV inside, one MLflow run)
* :mod:`quantcli.models.registry`   -- :class:`ModelRegistry`: aliases, verdicts, signed
  artifacts; :mod:`quantcli.models.lifecycle` -- validate, promotion and rollback
* :mod:`quantcli.models.tags`       -- every MLflow tag name quantcli uses
* :mod:`quantcli.models.events`     -- the ``registry_events`` table

Importing this package imports no heavy library (mlflow, lightgbm, sklearn load on use).
"""

from __future__ import annotations

from quantcli._lazy import lazy_exports

__all__ = [
    "LightGBMFactory",
    "MLflowTrainer",
    "ModelFactory",
    "ModelRegistry",
    "ModelVersionInfo",
    "NativeModel",
    "PromotionResult",
    "RollbackResult",
    "TrainResult",
    "ValidationResult",
    "load_model",
    "make_model",
    "save_model",
]

_WHERE = {
    "LightGBMFactory": "quantcli.models.estimators",
    "MLflowTrainer": "quantcli.models.trainer",
    "ModelFactory": "quantcli.models.estimators",
    "ModelRegistry": "quantcli.models.registry",
    "ModelVersionInfo": "quantcli.models.versions",
    "NativeModel": "quantcli.models.serialize",
    "PromotionResult": "quantcli.models.lifecycle",
    "RollbackResult": "quantcli.models.lifecycle",
    "TrainResult": "quantcli.models.run_log",
    "ValidationResult": "quantcli.models.lifecycle",
    "load_model": "quantcli.models.serialize",
    "save_model": "quantcli.models.serialize",
    "make_model": "quantcli.models.estimators",
}


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
