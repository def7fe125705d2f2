"""The model security scan: is an artifact safe to load and serve?

:func:`scan_artifact` runs every check on one file and returns a :class:`ScanReport` listing each
check and its findings; ``report.passed`` is True only when no check found anything.

Checks
------
``format``
    The file is ONNX (a protobuf ``ModelProto``) or LightGBM text (starts with ``tree``). A pickle
    (first byte ``0x80`` with a protocol byte 2..5, or text-protocol opcodes), a zip/torch archive
    (``PK``) or anything else is refused by its magic bytes, before any parser sees it.
``integrity``
    The recorded sha256 and Ed25519 signature verify (when they are given; a scan without them
    reports "unsigned" as a finding).
``operators``
    Every ONNX node is in :data:`ALLOWED_OPS` and every domain in :data:`ALLOWED_DOMAINS`; no
    model-local functions, no control flow (``If``/``Loop``/``Scan`` carry sub-graphs).
``external_data``
    Initializers stored outside the file must name a relative path that resolves inside the
    artifact's directory (no absolute path, no ``..`` escape, no symlink out).
``shapes``
    One input ``[N, n_features]`` and one output ``[N, 1]`` (``N`` symbolic, ``n_features``
    <= :data:`MAX_FEATURES` and equal to the signature's count when given); the file is at most
    :data:`MAX_FILE_BYTES`, initializers hold at most :data:`MAX_PARAMETERS` values in total.
``robustness``
    Predictions stay finite on extreme but valid inputs: each feature at its observed minimum and
    maximum (from a reference sample, widened by 10 x its range), all-zeros, and seeded random
    rows inside that box.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from quantcli.errors import IntegrityError, QuantCliError
from quantcli.integrity import sha256_file, verify_file
from quantcli.models import tags as T
from quantcli.models.registry import ModelRegistry
from quantcli.results import Result
from quantcli.serving.operators import ALLOWED_DOMAINS, ALLOWED_OPS, operator_findings
from quantcli.serving.registered import resolve_workspace, training_sample
from quantcli.serving.session import make_session
from quantcli.workspace import Workspace

MAX_FEATURES = 4096
MAX_FILE_BYTES = 512 * 1024 * 1024
MAX_PARAMETERS = 200_000_000
_PROBE_ROWS = 64


@dataclass
class Check:
    """One check: its name, whether it passed, and what it found."""

    name: str
    passed: bool
    findings: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class ScanReport(Result):
    """The result of :func:`scan_artifact`: ``passed`` when no check found anything."""

    path: str
    format: str  # "onnx" | "lightgbm_text" | "pickle" | "unknown" (or a sidecar's type)
    checks: tuple[Check, ...] = ()

    failure_message: ClassVar[str] = "the model scan found problems"

    @classmethod
    def of(cls, path: str, fmt: str, checks: list[Check]) -> ScanReport:
        """The report of ``checks``; its reasons are their findings, each named by check."""
        findings = [f"{c.name}: {f}" for c in checks for f in c.findings]
        return cls(
            passed=all(c.passed for c in checks),
            reasons=findings,
            path=path,
            format=fmt,
            checks=tuple(checks),
        )

    @property
    def findings(self) -> list[str]:
        return list(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "passed": self.passed,
            "findings": self.findings,
            "checks": [asdict(c) for c in self.checks],
        }


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


def sniff_format(head: bytes) -> str:
    """``onnx``, ``lightgbm_text``, ``pickle``, ``zip`` or ``unknown`` from a file's first bytes.

    ONNX files are protobuf ``ModelProto``: field 1 (``ir_version``, varint) comes first, so the
    first byte is ``0x08``. LightGBM's text format begins with ``tree``.
    """
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return "pickle"
    if head[:4] == b"tree":
        return "lightgbm_text"
    if head[:2] == b"PK":
        return "zip"
    if head[:1] == b"\x08":
        return "onnx"
    # protocol 0/1 pickles are text opcodes: "(dp0", "(lp0", "cbuiltins\neval\n", "}q\x00" ...
    # (a GLOBAL "c" needs "module\nname\n", so YAML such as "channels:\n" is not one)
    if (head[:1] in (b"(", b"}", b"]") and b"\n" in head[:64]) or head[:2] == b"}q":
        return "pickle"
    if re.match(rb"c[\w.]+\n[\w.]+\n", head):
        return "pickle"
    return "unknown"


def scan_artifact(
    path: str | os.PathLike[str],
    *,
    sha256: str | None = None,
    signature: str | None = None,
    n_features: int | None = None,
    reference_X: np.ndarray | None = None,
    artifact_dir: str | os.PathLike[str] | None = None,
    require_signature: bool = True,
    keys_dir: str | os.PathLike[str] | None = None,
) -> ScanReport:
    """Scan one model artifact (ONNX or LightGBM text). Never raises on a bad artifact.

    Parameters
    ----------
    sha256, signature
        The recorded digest and Ed25519 signature; missing ones are a finding when
        ``require_signature``.
    n_features
        The signature's feature count (checked against the graph's input width).
    reference_X
        Feature rows that bound the robustness probe (e.g. the training sample); without it the
        probe uses the box ``[-1e3, 1e3]``.
    artifact_dir
        The directory external data must stay inside (default: the file's directory).

    Examples
    --------
    >>> report = scan_artifact("m.onnx", sha256=d, signature=s, n_features=29)  # doctest: +SKIP
    >>> report.passed, report.findings  # doctest: +SKIP
    (True, [])
    """
    p = Path(path)
    if not p.is_file():
        return ScanReport.of(str(p), "unknown", [Check("format", False, [f"{p}: no such file"])])
    with open(p, "rb") as fh:
        head = fh.read(64)
    fmt = sniff_format(head)
    if fmt not in ("onnx", "lightgbm_text"):
        what = {"pickle": "a Python pickle (can run code on load)", "zip": "a zip/torch archive"}
        refused = Check(
            "format",
            False,
            [f"{p.name} is {what.get(fmt, 'not ONNX or LightGBM text')}: refused unopened"],
            {"magic": head[:8].hex()},
        )
        return ScanReport.of(str(p), fmt, [refused])
    checks = [Check("format", True, detail={"magic": head[:8].hex()})]
    checks.append(_check_integrity(p, sha256, signature, require_signature, keys_dir))
    if fmt == "onnx":
        _scan_onnx(p, checks, n_features, reference_X, Path(artifact_dir or p.parent))
    else:
        _scan_lightgbm(p, checks, n_features, reference_X)
    return ScanReport.of(str(p), fmt, checks)


def _check_integrity(p: Path, sha256, signature, required: bool, keys_dir) -> Check:
    if not sha256 or not signature:
        if required:
            return Check("integrity", False, ["no recorded sha256/signature: the file is unsigned"])
        return Check("integrity", True, detail={"sha256": sha256_file(p), "verified": False})
    try:
        digest = verify_file(p, sha256, signature, keys_dir)
    except IntegrityError as exc:
        return Check("integrity", False, [exc.message])
    return Check("integrity", True, detail={"sha256": digest, "verified": True})


def _scan_onnx(p: Path, checks: list[Check], n_features, reference_X, artifact_dir: Path) -> None:
    import onnx
    from onnx.external_data_helper import uses_external_data

    size = p.stat().st_size
    if size > MAX_FILE_BYTES:
        checks.append(Check("shapes", False, [f"file is {size:,} bytes > {MAX_FILE_BYTES:,}"]))
        return
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # a corrupt protobuf is a finding, not a crash
        checks.append(Check("format", False, [f"not a valid ONNX model: {exc}"]))
        return

    # operators and domains
    findings, ops = operator_findings(model)
    checks.append(Check("operators", not findings, findings, {"ops": dict(sorted(ops.items()))}))

    # external data
    findings = []
    root = artifact_dir.resolve()
    n_params = 0
    for init in model.graph.initializer:
        n_params += int(np.prod(init.dims)) if len(init.dims) else 1
        if not uses_external_data(init):
            continue
        loc = {e.key: e.value for e in init.external_data}.get("location", "")
        target = (p.parent / loc).resolve()
        if not loc or Path(loc).is_absolute() or not target.is_relative_to(root):
            findings.append(f"initializer '{init.name}' points outside the artifact dir: {loc!r}")
        elif not target.is_file():
            findings.append(f"initializer '{init.name}' external file missing: {loc!r}")
    checks.append(Check("external_data", not findings, findings))

    # shapes and sizes
    findings = []
    graph = model.graph
    init_names = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in init_names]
    width = None
    if len(inputs) != 1:
        findings.append(f"{len(inputs)} graph inputs, expected 1")
    else:
        dims = inputs[0].type.tensor_type.shape.dim
        if len(dims) != 2:
            findings.append(f"input '{inputs[0].name}' has rank {len(dims)}, expected 2")
        else:
            width = dims[1].dim_value if dims[1].HasField("dim_value") else None
            if width is None:
                findings.append("input feature dimension is unbounded (symbolic)")
            elif width > MAX_FEATURES:
                findings.append(f"input takes {width} features > {MAX_FEATURES}")
            elif n_features is not None and width != n_features:
                findings.append(f"input takes {width} features, the signature names {n_features}")
    if len(graph.output) != 1:
        findings.append(f"{len(graph.output)} graph outputs, expected 1")
    else:
        odims = graph.output[0].type.tensor_type.shape.dim
        if len(odims) > 2 or (len(odims) == 2 and odims[1].dim_value not in (0, 1)):
            findings.append("output is not one value per row ([N, 1])")
    if n_params > MAX_PARAMETERS:
        findings.append(f"{n_params:,} parameters > {MAX_PARAMETERS:,}")
    checks.append(
        Check(
            "shapes",
            not findings,
            findings,
            {"n_features": width, "parameters": n_params, "bytes": size},
        )
    )

    if width is None or not all(c.passed for c in checks):
        checks.append(Check("robustness", False, ["not probed: earlier checks failed"]))
        return
    try:
        sess = make_session(p)
        name = sess.get_inputs()[0].name

        def predict(X: np.ndarray) -> np.ndarray:
            return sess.run(None, {name: X.astype(np.float32)})[0]

        checks.append(_probe(predict, width, reference_X))
    except Exception as exc:  # onnxruntime refusing the graph is a finding
        checks.append(Check("robustness", False, [f"onnxruntime could not run it: {exc}"]))


def _scan_lightgbm(p: Path, checks: list[Check], n_features, reference_X) -> None:
    import lightgbm

    findings = []
    size = p.stat().st_size
    if size > MAX_FILE_BYTES:
        findings.append(f"file is {size:,} bytes > {MAX_FILE_BYTES:,}")
        checks.append(Check("shapes", False, findings))
        return
    try:
        booster = lightgbm.Booster(model_file=str(p))
    except Exception as exc:
        checks.append(Check("format", False, [f"not a valid LightGBM text model: {exc}"]))
        return
    width = booster.num_feature()
    if width > MAX_FEATURES:
        findings.append(f"model takes {width} features > {MAX_FEATURES}")
    if n_features is not None and width != n_features:
        findings.append(f"model takes {width} features, the signature names {n_features}")
    checks.append(
        Check("shapes", not findings, findings, {"n_features": width, "trees": booster.num_trees()})
    )
    if findings or not all(c.passed for c in checks):
        checks.append(Check("robustness", False, ["not probed: earlier checks failed"]))
        return
    checks.append(_probe(lambda X: booster.predict(X), width, reference_X))


def _probe(predict, width: int, reference_X: np.ndarray | None) -> Check:
    """Finite predictions on extreme but valid inputs (see the module docstring)."""
    if reference_X is not None and len(reference_X):
        R = np.asarray(reference_X, dtype=np.float64)
        lo, hi = np.nanmin(R, axis=0), np.nanmax(R, axis=0)
        span = np.where(hi > lo, hi - lo, 1.0)
        lo, hi = lo - 10 * span, hi + 10 * span
    else:
        lo, hi = np.full(width, -1e3), np.full(width, 1e3)
    rng = np.random.default_rng(0)
    rows = [lo, hi, np.zeros(width), (lo + hi) / 2]
    for j in range(width):  # one feature at an extreme, the others centred
        for v in (lo[j], hi[j]):
            r = (lo + hi) / 2
            r[j] = v
            rows.append(r)
    rows.extend(rng.uniform(lo, hi, size=(_PROBE_ROWS, width)))
    X = np.vstack(rows).astype(np.float32).astype(np.float64)  # values representable in float32
    y = np.asarray(predict(X), dtype=np.float64).reshape(-1)
    bad = int(np.sum(~np.isfinite(y)))
    findings = [f"{bad} of {len(y)} probe rows gave a non-finite prediction"] if bad else []
    return Check(
        "robustness",
        not bad,
        findings,
        {"rows": len(y), "min": float(np.nanmin(y)), "max": float(np.nanmax(y))},
    )


# -- registered versions (`qcli model scan`) ---------------------------------------------------
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
        _check_integrity(p, sha256, signature, True, None),
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
        import yaml

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


__all__ = [
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
