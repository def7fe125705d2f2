"""Files MLflow itself keeps beside a version's model, and how a version's URIs compare.

MLflow's ``models:/`` loader writes a small note into the version's model folder on the embedded
store; the registry's verification must tell it from a planted file.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from quantcli.models.versions import MODEL_ARTIFACT_PATH, ModelVersionInfo

#: The file MLflow's ``models:/`` loader writes into a version's model folder on the embedded
#: store (``mlflow.store.artifact.models_artifact_repo``); it is MLflow's, not the model's.
MLFLOW_META_FILE = "registered_model_meta"
_MLFLOW_META_MAX_BYTES = 4096


def is_mlflow_meta(info: ModelVersionInfo, f: Path, rel: str) -> bool:
    """Whether ``f`` is MLflow's registered-model note about this model, nothing else: at the
    top of ``model/``, small, YAML naming this model and a version of it."""
    if rel != f"{MODEL_ARTIFACT_PATH}/{MLFLOW_META_FILE}":
        return False
    try:
        if f.stat().st_size > _MLFLOW_META_MAX_BYTES:
            return False
        meta = yaml.safe_load(f.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return (
        isinstance(meta, dict)
        and set(meta) == {"model_name", "model_version"}
        and meta["model_name"] == info.name
        and str(meta["model_version"]).isdigit()
    )


def norm_uri(uri: str | None) -> str:
    """A URI without trailing slashes, ``file:///x`` and ``/x`` spelled alike."""
    text = (uri or "").rstrip("/")
    if text.startswith("file://"):
        text = text[len("file://") :]
    return text


__all__ = ["MLFLOW_META_FILE", "is_mlflow_meta", "norm_uri"]
