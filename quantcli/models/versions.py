"""One registered model version as quantcli sees it, and the names a model may have.

:class:`ModelVersionInfo` is read from an MLflow ``ModelVersion`` (:func:`info_from`): its tags
hold the lineage, the signed artifacts and the gate verdicts (names in
:mod:`quantcli.models.tags`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from quantcli.errors import InputError
from quantcli.models import tags as T

MODEL_ARTIFACT_PATH = "model"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")


def check_model_name(name: str) -> str:
    """``name`` if it is a valid registered-model name, else :class:`InputError` (exit 2)."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InputError(
            f"invalid model name `--name {name!r}`",
            hint="use letters, digits, '_', '.', '-' (at most 100 characters), e.g. momentum_lgbm",
        )
    return name


@dataclass
class ModelVersionInfo:
    """One registered model version, as quantcli sees it.

    Attributes
    ----------
    artifacts
        ``{artifact_path: {"sha256": ..., "signature": ...}}`` for every signed artifact, paths
        relative to the run's artifact root (e.g. ``model/lgbm.txt``, ``onnx/model.onnx``).
    verdicts
        ``{gate: "pass" | "fail"}`` for every recorded gate verdict.
    """

    name: str
    version: str
    run_id: str
    source: str
    created_at: str
    tags: dict[str, str]
    aliases: list[str]
    artifacts: dict[str, dict[str, str]] = field(default_factory=dict)
    verdicts: dict[str, str] = field(default_factory=dict)
    verdict_states: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def status(self) -> str | None:
        return self.tags.get(T.STATUS)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "run_id": self.run_id,
            "source": self.source,
            "created_at": self.created_at,
            "aliases": self.aliases,
            "status": self.status,
            "verdicts": self.verdicts,
            "verdict_states": self.verdict_states,
            "override": self.tags.get(T.OVERRIDE) == "true",
            "override_detail": json_or_none(self.tags.get(T.OVERRIDE_DETAIL)),
            "dataset_sha256": self.tags.get(T.DATASET_SHA256),
            "feature_set": self.tags.get(T.FEATURE_SET),
            "feature_set_version": self.tags.get(T.FEATURE_SET_VERSION),
            "model_kind": self.tags.get(T.MODEL_KIND),
            "artifacts": self.artifacts,
            "tags": self.tags,
        }


def json_or_none(raw: str | None) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def info_from(mv: Any, aliases: list[str]) -> ModelVersionInfo:
    tags = dict(mv.tags or {})
    artifacts: dict[str, dict[str, str]] = {}
    for key, value in tags.items():
        if key.startswith(T.SHA256_PREFIX):
            path = key[len(T.SHA256_PREFIX) :]
            artifacts.setdefault(path, {})["sha256"] = value
        elif key.startswith(T.SIGNATURE_PREFIX):
            path = key[len(T.SIGNATURE_PREFIX) :]
            artifacts.setdefault(path, {})["signature"] = value
        elif key.startswith(T.BINDING_PREFIX):
            path = key[len(T.BINDING_PREFIX) :]
            artifacts.setdefault(path, {})["binding"] = value
    verdicts = {
        key[len(T.VERDICT_PREFIX) :]: value
        for key, value in tags.items()
        if key.startswith(T.VERDICT_PREFIX)
    }
    created = datetime.fromtimestamp((mv.creation_timestamp or 0) / 1000, UTC).isoformat()
    return ModelVersionInfo(
        name=mv.name,
        version=str(mv.version),
        run_id=mv.run_id or "",
        source=mv.source or "",
        created_at=created,
        tags=tags,
        aliases=sorted(aliases),
        artifacts=dict(sorted(artifacts.items())),
        verdicts=dict(sorted(verdicts.items())),
    )


__all__ = [
    "MODEL_ARTIFACT_PATH",
    "ModelVersionInfo",
    "check_model_name",
    "info_from",
    "json_or_none",
]
