"""The security scan of one model artifact: is this file safe to load and serve?

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
    Every ONNX node is in :data:`~quantcli.serving.operators.ALLOWED_OPS` and every domain in
    :data:`~quantcli.serving.operators.ALLOWED_DOMAINS`; no model-local functions, no control
    flow (``If``/``Loop``/``Scan`` carry sub-graphs).
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

import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from quantcli.errors import IntegrityError
from quantcli.integrity import sha256_file, verify_file
from quantcli.results import Result
from quantcli.serving.operators import operator_findings
from quantcli.serving.session import make_session

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
    checks.append(check_integrity(p, sha256, signature, require_signature, keys_dir))
    if fmt == "onnx":
        _scan_onnx(p, checks, n_features, reference_X, Path(artifact_dir or p.parent))
    else:
        _scan_lightgbm(p, checks, n_features, reference_X)
    return ScanReport.of(str(p), fmt, checks)


def check_integrity(p: Path, sha256, signature, required: bool, keys_dir) -> Check:
    """The ``integrity`` check: the recorded sha256 and signature verify (or are required)."""
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

    size = p.stat().st_size
    if size > MAX_FILE_BYTES:
        checks.append(Check("shapes", False, [f"file is {size:,} bytes > {MAX_FILE_BYTES:,}"]))
        return
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # a corrupt protobuf is a finding, not a crash
        checks.append(Check("format", False, [f"not a valid ONNX model: {exc}"]))
        return

    findings, ops = operator_findings(model)
    checks.append(Check("operators", not findings, findings, {"ops": dict(sorted(ops.items()))}))
    checks.append(_external_data_check(model, p, artifact_dir))
    shapes = _shapes_check(model, n_features, size)
    checks.append(shapes)

    width = shapes.detail["n_features"]
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


def _external_data_check(model: Any, p: Path, artifact_dir: Path) -> Check:
    """Initializers stored outside the file stay inside the artifact's directory."""
    from onnx.external_data_helper import uses_external_data

    findings = []
    root = artifact_dir.resolve()
    for init in model.graph.initializer:
        if not uses_external_data(init):
            continue
        loc = {e.key: e.value for e in init.external_data}.get("location", "")
        target = (p.parent / loc).resolve()
        if not loc or Path(loc).is_absolute() or not target.is_relative_to(root):
            findings.append(f"initializer '{init.name}' points outside the artifact dir: {loc!r}")
        elif not target.is_file():
            findings.append(f"initializer '{init.name}' external file missing: {loc!r}")
    return Check("external_data", not findings, findings)


def _shapes_check(model: Any, n_features: int | None, size: int) -> Check:
    """One ``[N, n_features]`` input, one ``[N, 1]`` output, bounded parameters."""
    findings = []
    graph = model.graph
    n_params = sum(int(np.prod(i.dims)) if len(i.dims) else 1 for i in graph.initializer)
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
    detail = {"n_features": width, "parameters": n_params, "bytes": size}
    return Check("shapes", not findings, findings, detail)


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


__all__ = [
    "MAX_FEATURES",
    "MAX_FILE_BYTES",
    "MAX_PARAMETERS",
    "Check",
    "ScanReport",
    "check_integrity",
    "scan_artifact",
    "sniff_format",
]
