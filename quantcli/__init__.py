"""quantcli: from raw OHLCV bars to a served, monitored, auditable trading model.

The public Python API, one front door. Every name below is importable from ``quantcli``; the
module defining it is imported on first access (PEP 562), so ``import quantcli`` loads none of
mlflow, feast, onnxruntime, lightgbm or ray, and ``qcli --help`` stays instant.

>>> import quantcli
>>> quantcli.CombinatorialPurgedCV(n_splits=10, test_size=0.3).get_n_splits()
120

Classes a user scripts with: :class:`FeatureGenerator`, :class:`CombinatorialPurgedCV`,
:class:`BacktestValidator`, :class:`MLflowTrainer`, :class:`ONNXParityTester`,
:class:`DriftDetector`, :class:`PerformanceMonitor`, :class:`RetrainingTrigger`, and
:func:`get_feature_store`, :func:`convert_and_validate_pipeline`. The workflow functions are
the library calls behind the ``qcli`` commands (``ingest_sample`` is ``qcli data ingest
--sample``, ``build_features`` is ``qcli features build``, ...). Inputs may be polars, pandas or
pyarrow frames.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quantcli._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    # the classes a user scripts with
    "FeatureGenerator": "quantcli.features.generator",
    "FeatureResult": "quantcli.features.generator",
    "CombinatorialPurgedCV": "quantcli.backtest.cpcv",
    "BacktestValidator": "quantcli.backtest.gates",
    "MLflowTrainer": "quantcli.models.trainer",
    "ONNXParityTester": "quantcli.serving.parity",
    "DriftDetector": "quantcli.monitoring.drift",
    "PerformanceMonitor": "quantcli.monitoring.performance",
    "RetrainingTrigger": "quantcli.monitoring.retrain",
    "get_feature_store": "quantcli.online",
    "convert_and_validate_pipeline": "quantcli.serving.onnx_export",
    # the workflow functions, one per stage of the flow
    "load_sample": "quantcli.data.sample",
    "synthetic_universe": "quantcli.data.synthetic",
    "validate_bars": "quantcli.data.validation",
    "ingest_frame": "quantcli.data.ingest",
    "ingest_files": "quantcli.data.ingest",
    "ingest_sample": "quantcli.data.ingest",
    "compute_features": "quantcli.features.compute",
    "build_features": "quantcli.features.build",
    "load_training_frame": "quantcli.features.dataset",
    "run_cpcv_backtest": "quantcli.models.backtest",
    "train_from_store": "quantcli.models.trainer",
    "export_registered": "quantcli.serving.onnx_export",
    "materialize": "quantcli.online",
    "detect_feature_drift": "quantcli.monitoring.drift",
    "run_pipeline": "quantcli.pipeline.run",
    "verify_ledger": "quantcli.audit",
    # the workspace and the typed results every workflow returns
    "Workspace": "quantcli.workspace",
    "Result": "quantcli.results",
    # the error hierarchy, so a script can catch quantcli's errors by name
    "QuantCliError": "quantcli.errors",
    "InputError": "quantcli.errors",
    "NotFoundError": "quantcli.errors",
    "GateFailedError": "quantcli.errors",
}

if TYPE_CHECKING:  # pragma: no cover
    from quantcli.audit import verify_ledger
    from quantcli.backtest.cpcv import CombinatorialPurgedCV
    from quantcli.backtest.gates import BacktestValidator
    from quantcli.data.ingest import ingest_files, ingest_frame, ingest_sample
    from quantcli.data.sample import load_sample
    from quantcli.data.synthetic import synthetic_universe
    from quantcli.data.validation import validate_bars
    from quantcli.errors import GateFailedError, InputError, NotFoundError, QuantCliError
    from quantcli.features.build import build_features
    from quantcli.features.compute import compute_features
    from quantcli.features.dataset import load_training_frame
    from quantcli.features.generator import FeatureGenerator, FeatureResult
    from quantcli.models.backtest import run_cpcv_backtest
    from quantcli.models.trainer import MLflowTrainer, train_from_store
    from quantcli.monitoring.drift import DriftDetector, detect_feature_drift
    from quantcli.monitoring.performance import PerformanceMonitor
    from quantcli.monitoring.retrain import RetrainingTrigger
    from quantcli.online import get_feature_store, materialize
    from quantcli.pipeline.run import run_pipeline
    from quantcli.results import Result
    from quantcli.serving.onnx_export import convert_and_validate_pipeline, export_registered
    from quantcli.serving.parity import ONNXParityTester
    from quantcli.workspace import Workspace

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "BacktestValidator",
    "CombinatorialPurgedCV",
    "DriftDetector",
    "FeatureGenerator",
    "FeatureResult",
    "GateFailedError",
    "InputError",
    "MLflowTrainer",
    "NotFoundError",
    "ONNXParityTester",
    "PerformanceMonitor",
    "QuantCliError",
    "Result",
    "RetrainingTrigger",
    "Workspace",
    "__version__",
    "build_features",
    "compute_features",
    "convert_and_validate_pipeline",
    "detect_feature_drift",
    "export_registered",
    "get_feature_store",
    "ingest_files",
    "ingest_frame",
    "ingest_sample",
    "load_sample",
    "load_training_frame",
    "materialize",
    "run_cpcv_backtest",
    "run_pipeline",
    "synthetic_universe",
    "train_from_store",
    "validate_bars",
    "verify_ledger",
]
