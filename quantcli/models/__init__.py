"""Models: estimators, non-pickle serialization, MLflow training with lineage, the gated registry.

* :mod:`quantcli.models.estimators` -- ``make_model("lgbm" | "mlp" | "ensemble", params, seed)``
* :mod:`quantcli.models.serialize`  -- save/load without pickle (LightGBM text, ``.npz``, JSON)
* :mod:`quantcli.models.trainer`    -- :class:`MLflowTrainer` (CPCV inside, one MLflow run)
* :mod:`quantcli.models.registry`   -- :class:`ModelRegistry`: aliases, verdicts, signed
  artifacts, promotion and rollback
* :mod:`quantcli.models.tags`       -- every MLflow tag name quantcli uses
* :mod:`quantcli.models.events`     -- the ``registry_events`` table

Importing this package imports no heavy library (mlflow, lightgbm, sklearn load on use).
"""

from __future__ import annotations

from quantcli._lazy import lazy_exports

__all__ = [
    "MLflowTrainer",
    "ModelRegistry",
    "ModelVersionInfo",
    "NativeModel",
    "load_model",
    "make_model",
    "save_model",
]

_WHERE = {
    "MLflowTrainer": "quantcli.models.trainer",
    "ModelRegistry": "quantcli.models.registry",
    "ModelVersionInfo": "quantcli.models.registry",
    "NativeModel": "quantcli.models.serialize",
    "load_model": "quantcli.models.serialize",
    "save_model": "quantcli.models.serialize",
    "make_model": "quantcli.models.estimators",
}


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
