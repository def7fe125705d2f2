"""Serving: ONNX export, honest INT8, the parity gate, the model scan and the inference runtime.

* :mod:`~quantcli.serving.onnx_export` -- :func:`convert_and_validate_pipeline` (lgbm, mlp and the
  ensemble as ONE graph, :mod:`~quantcli.models.onnx_convert`)
* :mod:`~quantcli.serving.quantize`    -- :func:`quantize_int8` (dynamic, static, weight-only;
  "not quantizable" for a pure tree ensemble)
* :mod:`~quantcli.serving.parity`      -- :class:`ONNXParityTester`
* :mod:`~quantcli.serving.scan`        -- :func:`scan_artifact` (the model security scan)
* :mod:`~quantcli.serving.runtime`     -- :class:`InferenceRuntime` (the one inference class)
* :mod:`~quantcli.serving.latency`     -- native vs FP32 vs INT8 latency report
* :mod:`~quantcli.serving.predict`     -- :class:`Predictor` (features -> runtime -> audit ledger)

Every workflow returns a :class:`quantcli.results.Result` (``passed``, ``reasons``, ``to_dict()``,
``raise_if_failed()``).

Importing this package is cheap: onnx, onnxruntime, lightgbm and sklearn load on use.
"""

from __future__ import annotations

from quantcli._lazy import lazy_exports

__all__ = [
    "ExportResult",
    "InferenceRuntime",
    "LatencyReport",
    "ONNXParityTester",
    "ParityResult",
    "PredictResponse",
    "Prediction",
    "Predictor",
    "QuantizationResult",
    "RegisteredExport",
    "RegisteredScan",
    "ScanReport",
    "benchmark_latency",
    "convert_and_validate_pipeline",
    "export_registered",
    "quantize_int8",
    "scan_artifact",
    "scan_registered",
    "to_onnx",
]

_WHERE = {
    "ExportResult": "quantcli.serving.onnx_export",
    "RegisteredExport": "quantcli.serving.onnx_export",
    "convert_and_validate_pipeline": "quantcli.serving.onnx_export",
    "export_registered": "quantcli.serving.onnx_export",
    "to_onnx": "quantcli.models.onnx_convert",
    "quantize_int8": "quantcli.serving.quantize",
    "QuantizationResult": "quantcli.serving.quantize",
    "ONNXParityTester": "quantcli.serving.parity",
    "ParityResult": "quantcli.serving.parity",
    "ScanReport": "quantcli.serving.scan",
    "RegisteredScan": "quantcli.serving.scan",
    "scan_artifact": "quantcli.serving.scan",
    "scan_registered": "quantcli.serving.scan",
    "InferenceRuntime": "quantcli.serving.runtime",
    "Prediction": "quantcli.serving.runtime",
    "Predictor": "quantcli.serving.predict",
    "PredictResponse": "quantcli.serving.predict",
    "benchmark_latency": "quantcli.serving.latency",
    "LatencyReport": "quantcli.serving.latency",
}


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
