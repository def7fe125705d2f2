"""A registered version's ONNX graphs: where the export logs them and how serving finds them.

The export (:func:`quantcli.serving.onnx_export.export_registered`) logs the graphs that passed
parity under ``onnx/`` of the version's run and tags the one to serve; :func:`resolve_onnx`
finds that graph again, downloads it into the workspace's cache and returns what the runtime
needs to verify it. :func:`training_sample` draws the version's training rows that the parity
gate and the scan's robustness probe run on.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from quantcli.errors import InputError, IntegrityError, NotFoundError
from quantcli.features.dataset import load_training_frame
from quantcli.integrity import sha256_file
from quantcli.models import tags as T
from quantcli.models.registry import ModelRegistry
from quantcli.models.versions import json_or_none
from quantcli.workspace import Workspace

ONNX_ARTIFACT_DIR = "onnx"
EXPORT_STEM = "model"
TAG_RECOMMENDED = "quantcli.onnx.recommended"  # fp32 | int8: the graph the runtime loads
TAG_INT8 = "quantcli.onnx.int8"  # what happened to INT8 (quantized / not quantizable / ...)
# the registry events that move the production alias onto a version
_PRODUCTION_MOVES = ("promote", "override", "rollback")


def production_deployed_at(tags: dict[str, Any], version: str | int) -> str | None:
    """When ``version`` last became production: the time of the registry event that moved the
    alias onto it (promote, override or rollback: the version's last-event tag), else its
    promotion time; ``None`` for a version never promoted."""
    event = json_or_none(tags.get(T.LAST_EVENT))
    if (
        isinstance(event, dict)
        and event.get("action") in _PRODUCTION_MOVES
        and str(event.get("to_version")) == str(version)
        and event.get("ts")
    ):
        return str(event["ts"])
    return tags.get(T.PROMOTED_AT) or None


def resolve_workspace(workspace: Workspace | None, tracking_uri: str | None = None) -> Workspace:
    """``workspace`` (default :meth:`Workspace.from_env`), with the deprecated ``tracking_uri=``
    keyword of the older signatures applied on top when a caller still passes it."""
    if workspace is None:
        return Workspace.from_env(tracking_uri=tracking_uri)
    if tracking_uri is not None and tracking_uri != workspace.tracking_uri:
        return dataclasses.replace(workspace, tracking_uri=tracking_uri)
    return workspace


@dataclass
class OnnxArtifact:
    """A downloaded, registered ONNX graph and what the runtime needs to trust and describe it."""

    path: Path
    sha256: str | None
    signature: str | None
    feature_names: list[str]
    audit_tags: dict[str, Any]
    judged: dict[str, str] = field(default_factory=dict)


def resolve_onnx(
    name: str,
    alias: str = "production",
    *,
    precision: str = "auto",
    workspace: Workspace | None = None,
    tracking_uri: str | None = None,
) -> OnnxArtifact:
    """Find and download the exported graph of ``name@alias`` (or version ``alias``).

    The cache is ``$QCLI_HOME/cache/onnx/<name>/v<version>/``. A cached file whose sha256 is the
    recorded one is reused; otherwise the graph is downloaded into a private temporary directory,
    verified (sha256 + signature tags), and renamed into place, so concurrent processes on a cold
    cache never see a half-written file. :class:`InferenceRuntime` reads it once and verifies
    those bytes again on load. ``judged`` holds the sha256 each ``parity``/``scan`` verdict
    judged for this graph; a verdict made stale by this graph changing refuses the load.
    """
    if precision not in ("auto", "fp32", "int8"):
        raise InputError(f"`precision` must be auto, fp32 or int8, got precision={precision!r}")
    ws = resolve_workspace(workspace, tracking_uri)
    reg = ModelRegistry(ws.tracking_uri)
    if str(alias).isdigit():
        info = reg.resolve(name, version=str(alias))
    else:
        info = reg.resolve(name, alias=alias)
    chosen = info.tags.get(TAG_RECOMMENDED, "fp32") if precision == "auto" else precision
    art_path = f"{ONNX_ARTIFACT_DIR}/{EXPORT_STEM}.{chosen}.onnx"
    rec = info.artifacts.get(art_path)
    if rec is None:
        raise NotFoundError(
            f"model '{name}' v{info.version} has no exported {chosen.upper()} ONNX graph",
            hint=f"run: qcli model export {name} --version {info.version}"
            + (" --quantize int8" if chosen == "int8" else ""),
        )
    judged = _judged_for(info, art_path)
    dst = ws.home / "cache" / "onnx" / name / f"v{info.version}"
    local = _cached_download(reg, info, art_path, dst, rec.get("sha256"))
    try:
        feature_names = json.loads(info.tags.get(T.FEATURE_NAMES, "[]"))
    except json.JSONDecodeError:
        feature_names = []
    if not feature_names:
        raise NotFoundError(
            f"model '{name}' v{info.version} records no feature names (tag {T.FEATURE_NAMES})"
        )
    audit = {
        "model_name": name,
        "model_version": info.version,
        "model_run_id": info.run_id,
        "alias": None if str(alias).isdigit() else alias,
        "feature_set": info.tags.get(T.FEATURE_SET),
        "feature_set_version": info.tags.get(T.FEATURE_SET_VERSION),
        "dataset_manifest_id": info.tags.get(T.DATASET_SHA256),
        "onnx_name": Path(art_path).name,
        "onnx_precision": chosen,
        "promoted_at": info.tags.get(T.PROMOTED_AT),
        "deployed_at": production_deployed_at(info.tags, info.version),
    }
    return OnnxArtifact(
        Path(local), rec.get("sha256"), rec.get("signature"), feature_names, audit, judged
    )


def _judged_for(info: Any, art_path: str) -> dict[str, str]:
    """``{gate: sha256}`` the parity/scan verdicts judged for ``art_path``; refuse a stale one."""
    judged: dict[str, str] = {}
    for gate in ("parity", "scan"):
        state = (info.verdict_states or {}).get(gate) or {}
        status = state.get("status")
        if status in ("stale", "invalid"):
            mine = [r for r in state.get("reasons", []) if art_path in r]
            if status == "invalid" or mine:
                raise IntegrityError(
                    f"{info.name} v{info.version}: {art_path} is not what the '{gate}' verdict "
                    f"judged: {(mine or state.get('reasons') or ['verdict edited'])[0]}; "
                    "refusing to serve it",
                    hint=f"re-run the gate: qcli model {'export' if gate == 'parity' else 'scan'} "
                    f"{info.name} --version {info.version}",
                )
        sha = (state.get("judged") or {}).get(art_path)
        if sha:
            judged[gate] = sha
    return judged


def _cached_download(reg: Any, info: Any, art_path: str, dst: Path, sha256: str | None) -> Path:
    """The cached graph at ``dst``, downloaded and renamed into place when missing or different."""
    final = dst / Path(art_path).name
    try:
        if sha256 and final.is_file() and sha256_file(final) == sha256:
            return final
    except OSError:
        pass  # vanished between the two calls: download it
    dst.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=dst))
    try:
        local, _ = reg.download_artifacts(info.name, info.version, art_path, tmp)
        os.replace(local, final)  # atomic: readers see the old file or the new one, whole
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def training_sample(
    info: Any,
    feature_names: list[str],
    n_rows: int,
    *,
    seed: int = 0,
    tracking_client: Any = None,
    workspace: Workspace | None = None,
) -> np.ndarray:
    """``n_rows`` feature rows drawn (seeded, in time order) from the version's training data.

    The rows come from the workspace's offline store, the feature table of the version's feature
    set, within the time range of its dataset manifest; rows with a non-finite feature (warm-up)
    are skipped.
    """
    ws = resolve_workspace(workspace)
    tags = dict(info.tags)
    start = end = None
    if tracking_client is not None:
        run_tags = tracking_client.get_run(info.run_id).data.tags
        manifest = json.loads(run_tags.get("quantcli.dataset.manifest", "{}"))
        start, end = manifest.get("start"), manifest.get("end")
    with ws.offline(read_only=True) as store:
        frame = load_training_frame(
            store,
            feature_set=tags.get(T.FEATURE_SET, "technical_v1"),
            label=tags.get(T.LABEL, "fwd_return_5d"),
            since=start,
            until=end,
        )
    missing = [f for f in feature_names if f not in frame.columns]
    if missing:
        raise InputError(
            f"the offline store's feature table lacks feature '{missing[0]}' of the model signature"
        )
    X = frame.select(feature_names).to_numpy().astype(np.float64)
    X = X[np.isfinite(X).all(axis=1)]
    if X.shape[0] == 0:
        raise InputError("no training rows with finite features in the offline store")
    if X.shape[0] > n_rows:
        idx = np.sort(np.random.default_rng(seed).choice(X.shape[0], n_rows, replace=False))
        X = X[idx]
    return X


__all__ = [
    "EXPORT_STEM",
    "ONNX_ARTIFACT_DIR",
    "TAG_INT8",
    "TAG_RECOMMENDED",
    "OnnxArtifact",
    "production_deployed_at",
    "resolve_onnx",
    "resolve_workspace",
    "training_sample",
]
