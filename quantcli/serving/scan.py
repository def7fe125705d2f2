"""The model scan of a registered version (``qcli model scan``): every file of its run.

Model files (``.onnx``, LightGBM ``.txt``) get every check of
:func:`~quantcli.serving.artifact_scan.scan_artifact` (format, integrity, operators, external
data, shapes, robustness); sidecars (manifest JSON, ``.npz`` weights, MLflow YAML, text reports)
get the format and integrity checks. The verdict ``scan`` records the sha256 of every file it
judged, so a file added or replaced later makes it stale.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from quantcli.errors import QuantCliError
from quantcli.integrity import sha256_file
from quantcli.models import tags as T
from quantcli.models.mlflow_files import is_mlflow_meta
from quantcli.models.registry import ModelRegistry
from quantcli.results import Result
from quantcli.serving.artifact_scan import (
    Check,
    ScanReport,
    check_integrity,
    scan_artifact,
    sniff_format,
)
from quantcli.serving.operators import ALLOWED_DOMAINS, ALLOWED_OPS, operator_findings
from quantcli.serving.registered import resolve_workspace, training_sample
from quantcli.workspace import Workspace


@dataclass(frozen=True, kw_only=True)
class RegisteredScan(Result):
    """:func:`scan_registered`'s outcome; :meth:`to_dict` is ``qcli model scan --json``."""

    name: str
    version: str
    probe_bounds: str
    files: tuple[ScanReport, ...] = ()
    version_source: str | None = None

    @property
    def verdict(self) -> str:
        return T.PASS if self.passed else T.FAIL

    @property
    def findings(self) -> list[str]:
        return list(self.reasons)

    def message(self) -> str:
        return f"model scan failed for {self.name} v{self.version} (verdict 'scan' = fail)"

    def to_dict(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            "version": self.version,
            "passed": self.passed,
            "verdict": self.verdict,
            "findings": self.findings,
            "probe_bounds": self.probe_bounds,
            "files": [r.to_dict() for r in self.files],
        }
        if self.version_source is not None:
            out["version_source"] = self.version_source
        return out


def _scan_sidecar(p: Path, sha256: str | None, signature: str | None) -> ScanReport:
    """A non-model file of a version (manifest JSON, ``.npz`` weights): no pickle, signed."""
    with open(p, "rb") as fh:
        head = fh.read(64)
    fmt = sniff_format(head)
    findings = _sidecar_findings(p, fmt)
    if fmt != "pickle":
        fmt = {".json": "json", ".npz": "npz", ".txt": "text", ".yaml": "yaml"}.get(
            p.suffix, "yaml" if p.name == "MLmodel" else fmt
        )
    checks = [
        Check("format", not findings, findings, {"magic": head[:8].hex()}),
        check_integrity(p, sha256, signature, True, None),
    ]
    return ScanReport.of(str(p), fmt, checks)


def _sidecar_findings(p: Path, fmt: str) -> list[str]:
    """What is wrong with a sidecar's content for its type (``fmt`` sniffed from its bytes)."""
    findings: list[str] = []
    if p.suffix == ".json":
        try:
            json.loads(p.read_text())
        except (UnicodeDecodeError, ValueError) as exc:
            findings.append(f"{p.name}: not valid JSON ({exc})")
    elif p.suffix == ".npz":
        try:
            with np.load(p, allow_pickle=False) as npz:  # object arrays would need pickle
                dtypes = {k: npz[k].dtype.kind for k in npz.files}
            findings += [
                f"{p.name}[{k}] has dtype kind {v!r}" for k, v in dtypes.items() if v == "O"
            ]
        except ValueError as exc:
            findings.append(f"{p.name}: refused ({exc})")
    elif fmt == "pickle":
        findings.append(f"{p.name} is a Python pickle: refused unopened")
    elif p.name == "MLmodel" or p.suffix == ".yaml":  # the MLflow model's descriptors
        try:  # safe_load builds plain data only: no tags, no objects
            yaml.safe_load(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, yaml.YAMLError) as exc:
            findings.append(f"{p.name}: not valid YAML ({exc})")
    elif p.suffix == ".txt":  # export report, pip requirements: plain UTF-8 text, never executed
        try:
            p.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            findings.append(f"{p.name}: not UTF-8 text")
    elif fmt not in ("onnx", "lightgbm_text"):
        findings.append(f"{p.name}: unexpected file type in a model artifact")
    return findings


def scan_registered(
    name: str,
    version: str | None = None,
    *,
    workspace: Workspace | None = None,
    sample_rows: int = 2000,
    tracking_uri: str | None = None,
) -> RegisteredScan:
    """Scan every file of a registered version (``model/`` and ``onnx/``); record ``scan``.

    The verdict records the sha256 of every file scanned: adding or replacing an artifact later
    makes it ``stale`` (:mod:`quantcli.models.registry`).

    Files are downloaded WITHOUT the registry's verification, so a tampered or unsigned file
    becomes a finding instead of an exception. ``.onnx`` and LightGBM ``.txt`` files get the full
    scan (robustness probe bounded by the version's training features when the offline store has
    them); JSON and ``.npz`` sidecars get the format and integrity checks. ``passed`` is False
    when any finding exists; ``raise_if_failed()`` makes that exit code 1 (the CLI).
    ``tracking_uri`` is a deprecated alias of ``workspace``.
    """
    ws = resolve_workspace(workspace, tracking_uri)
    reg = ModelRegistry(ws.tracking_uri)
    info = reg.resolve(name, version)
    feature_names = json.loads(info.tags.get(T.FEATURE_NAMES, "[]")) or None
    reference = None
    if feature_names:
        try:
            reference = training_sample(
                info, feature_names, sample_rows, tracking_client=reg.client, workspace=ws
            )
        except QuantCliError:
            reference = None  # no offline store here: probe the default box instead
    work = Path(tempfile.mkdtemp(prefix="qcli-scan-"))
    scanned: dict[str, str] = {}  # what the verdict judged: the bytes scanned, by path
    try:
        reports = _scan_run_files(reg, info, work, feature_names, reference, scanned)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    passed = all(r.passed for r in reports) and bool(reports)
    findings = [f"{r.path}: {f}" for r in reports for f in r.findings]
    reg.record_verdict(name, info.version, "scan", passed, findings, judged=scanned)
    return RegisteredScan(
        passed=passed,
        reasons=findings,
        name=name,
        version=info.version,
        probe_bounds="training features" if reference is not None else "default box +-1e3",
        files=tuple(reports),
    )


def _scan_run_files(
    reg: ModelRegistry,
    info: Any,
    work: Path,
    feature_names: list[str] | None,
    reference: Any,
    scanned: dict[str, str],
) -> list[ScanReport]:
    """Download each artifact folder of the version's run into ``work`` and scan every file;
    ``scanned`` receives the sha256 of each file, by artifact path."""
    reports: list[ScanReport] = []
    roots = sorted({a.split("/", 1)[0] for a in info.artifacts} | {"model"})
    for root in roots:
        try:
            local = Path(reg.client.download_artifacts(info.run_id, root, str(work)))
        except Exception:  # an artifact folder recorded in tags but absent
            reports.append(_missing(f"{root}/", "artifact folder missing from the run"))
            continue
        files = sorted(q for q in local.rglob("*") if q.is_file())
        for f in files:
            rel = f"{root}/{f.relative_to(local)}"
            if rel not in info.artifacts and is_mlflow_meta(info, f, rel):
                continue  # MLflow's note that a `models:/` load wrote: not a model file
            scanned[rel] = sha256_file(f)
            rec = info.artifacts.get(rel, {})
            sha, sig = rec.get("sha256"), rec.get("signature")
            # text files that are not LightGBM models: the export report, pip requirements
            if f.suffix in (".onnx", ".txt") and f.name not in (
                "model.export.txt",
                "requirements.txt",
            ):
                r = scan_artifact(
                    f,
                    sha256=sha,
                    signature=sig,
                    n_features=len(feature_names) if feature_names else None,
                    reference_X=reference,
                    artifact_dir=local,
                )
            else:
                r = _scan_sidecar(f, sha, sig)
            reports.append(dataclasses.replace(r, path=rel))
        present = {f"{root}/{f.relative_to(local)}" for f in files}
        for rel in sorted(a for a in info.artifacts if a.startswith(root + "/")):
            if rel not in present:
                reports.append(_missing(rel, "recorded in the registry but missing"))
    return reports


def _missing(path: str, why: str) -> ScanReport:
    return ScanReport.of(path, "unknown", [Check("integrity", False, [why])])


__all__ = [  # the artifact-level names too, where callers have always found them
    "ALLOWED_DOMAINS",
    "ALLOWED_OPS",
    "Check",
    "RegisteredScan",
    "ScanReport",
    "operator_findings",
    "scan_artifact",
    "scan_registered",
    "sniff_format",
]
