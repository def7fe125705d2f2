"""Standard MLflow flavors beside quantcli's native model files, so MLflow tools can use a version.

A registered version's ``model/`` folder holds quantcli's native files (``model.json``,
``lgbm.txt``, ``mlp.json``/``mlp.npz``, ``signature.json``) and, written here, an MLflow model:
``MLmodel`` with the ``onnx`` and ``python_function`` flavors, the FP32 graph ``model.onnx``
(the same converter as ``qcli model export``, so the same graph), the signature (one double
column per feature, in model input order -> ``variable``, the predicted forward return as a
float32 fraction), an input example and the environment files. No pickle is written: the
pyfunc flavor loads the graph with onnxruntime through ``mlflow.onnx``.

So, with ``MLFLOW_TRACKING_URI`` pointing at the store::

    mlflow.pyfunc.load_model("models:/momentum@staging").predict(frame)
    mlflow models serve -m models:/momentum@production --env-manager local

Every file lands in the folder the registry signs, so the version's sha256/signature tags (and
the verdicts bound to them) cover the MLflow files too. The files are byte-identical for the
same model and features: ``MLmodel`` carries no creation time and its ``model_uuid`` is the
graph's sha256 prefix.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from quantcli.errors import InputError
from quantcli.models.mlflow_env import quiet_mlflow
from quantcli.models.onnx_convert import to_onnx

ONNX_FILE = "model.onnx"
#: what the MLflow model adds to the native files (checked against collisions)
MLFLOW_FILES = (
    "MLmodel",
    ONNX_FILE,
    "conda.yaml",
    "python_env.yaml",
    "requirements.txt",
    "input_example.json",
    "serving_input_example.json",
)
OUTPUT_COLUMN = "variable"
EXAMPLE_ROWS = 5
#: what loading the pyfunc flavor imports: given, not inferred (MLflow's inference loads the
#: model in a subprocess on every save), pinned to the installed versions
PIP_PACKAGES = ("mlflow", "numpy", "onnx", "onnxruntime", "pandas")


def pip_requirements() -> list[str] | None:
    """``PIP_PACKAGES`` pinned to the versions installed here, as MLflow would infer them;
    ``None`` (MLflow infers them) when one is installed under another distribution name, such
    as ``onnxruntime-gpu``."""
    try:
        return [f"{name}=={importlib.metadata.version(name)}" for name in PIP_PACKAGES]
    except importlib.metadata.PackageNotFoundError:
        return None


def model_signature(feature_names: list[str]) -> Any:
    """The MLflow signature: double feature columns in input order -> float ``variable``."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("double", n) for n in feature_names]),
        outputs=Schema([ColSpec("float", OUTPUT_COLUMN)]),
    )


def add_standard_flavors(
    model: Any, model_dir: str | Path, feature_names: list[str], X_example: np.ndarray
) -> list[str]:
    """Write the MLflow model (``onnx`` + ``python_function`` flavors) into ``model_dir``.

    Parameters
    ----------
    model
        The fitted native model (LightGBM, MLP or their ensemble).
    model_dir
        The folder with the native files; it is logged as the version's ``model/``.
    feature_names
        Model input order; the signature's columns.
    X_example
        Training rows (float64, features in input order); the first ``EXAMPLE_ROWS`` finite
        rows become the input example.

    Returns
    -------
    list[str]
        The file names added to ``model_dir``.
    """
    import pandas as pd

    with warnings.catch_warnings():
        # importing mlflow.pyfunc warns about its own agent schemas, in ANSI yellow
        warnings.simplefilter("ignore", UserWarning)
        import mlflow.onnx
        import mlflow.pyfunc  # mlflow.onnx.save_model would import it lazily, warnings and all
    quiet_mlflow()
    target = Path(model_dir)
    clash = sorted(f for f in MLFLOW_FILES if (target / f).exists())
    if clash:
        raise InputError(f"{target}: the native model files already contain {clash}")
    X = np.asarray(X_example, dtype=np.float64)
    X = X[np.isfinite(X).all(axis=1)][:EXAMPLE_ROWS]
    if X.shape[0] == 0 or X.shape[1] != len(feature_names):
        raise InputError(
            f"the input example needs finite rows of {len(feature_names)} features, "
            f"got shape {tuple(np.asarray(X_example).shape)}"
        )
    graph = to_onnx(model, len(feature_names))
    graph.graph.name = "quantcli"  # the converter names the graph with a random uuid
    tmp = Path(tempfile.mkdtemp(prefix="qcli-flavors-"))
    try:
        out = tmp / "mlflow"
        mlflow.onnx.save_model(
            graph,
            str(out),
            signature=model_signature(feature_names),
            input_example=pd.DataFrame(X, columns=feature_names),
            onnx_execution_providers=["CPUExecutionProvider"],
            pip_requirements=pip_requirements(),
            metadata={"quantcli_native_manifest": "model.json"},
        )
        # same model, same bytes: no creation time, an id derived from the graph
        mlmodel = out / "MLmodel"
        spec = yaml.safe_load(mlmodel.read_text())
        spec.pop("utc_time_created", None)
        spec["model_uuid"] = hashlib.sha256((out / ONNX_FILE).read_bytes()).hexdigest()[:32]
        mlmodel.write_text(yaml.safe_dump(spec, default_flow_style=False, sort_keys=True))
        added = sorted(p.name for p in out.iterdir())
        unexpected = sorted(set(added) - set(MLFLOW_FILES))
        if unexpected:  # an MLflow upgrade wrote something new: keep the contract explicit
            raise RuntimeError(f"mlflow.onnx.save_model wrote unexpected files {unexpected}")
        for name in added:
            shutil.move(str(out / name), str(target / name))
        return added
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


__all__ = ["MLFLOW_FILES", "ONNX_FILE", "OUTPUT_COLUMN", "add_standard_flavors", "model_signature"]
