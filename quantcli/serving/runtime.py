"""The ONE inference class: ``qcli predict``, the HTTP service and shadow evaluation all use it.

:class:`InferenceRuntime` reads the ONNX file once and verifies those bytes (sha256 and Ed25519
signature, public keys only; the sha256 the ``parity``/``scan`` verdicts judged), refuses a graph
outside the scan's operator allow-list whatever the verdicts say, and creates a single
onnxruntime session *from the verified bytes in memory* -- never by reading the path again, so a
concurrent writer cannot swap the file between the check and the load. It validates every input
against the model's signature and returns predictions with the model's audit tags.

Input contract
--------------
* Features are the signature's ``feature_names``, **in that order**. A table (Polars, pandas, or a
  mapping of column -> values) must carry exactly those columns in that order: a missing, extra or
  misplaced column is refused with a message naming it (no silent reordering: a model fed the
  wrong column order still returns numbers, just wrong ones). A bare 2-D array must have
  ``len(feature_names)`` columns and is taken to be in signature order.
* dtype: any real numeric dtype; values are cast to float32 (the graph's input type). Booleans,
  strings and objects are refused.
* NaN policy: **reject**. A NaN or +-inf feature is refused naming the feature and the first row.
  Training drops rows whose features are not yet defined (indicator warm-up), so a NaN at
  inference time means a broken feature pipeline, and an MLP member would turn it into a NaN
  prediction.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from quantcli.errors import InputError


def make_session(
    onnx_model: str | os.PathLike[str] | bytes,
    *,
    intra_op_threads: int = 1,
    inter_op_threads: int = 1,
    profile_prefix: str | None = None,
    label: str | None = None,
):
    """One onnxruntime ``InferenceSession`` on CPU with explicit thread settings.

    ``onnx_model`` is a path or the graph's bytes (what :class:`InferenceRuntime` passes: the
    bytes it verified). A graph onnxruntime cannot load raises
    :class:`~quantcli.errors.IntegrityError` naming ``label`` (default: the path).

    ``profile_prefix`` turns on onnxruntime's profiler (per-kernel timings, written to a JSON
    file starting with that path by ``end_profiling()``); off for serving.

    One intra-op thread is the right default for single-row, latency-bound serving (thread
    hand-off costs more than a tree walk); raise it for large batches. For the one-row hot path
    use :class:`OnnxRunner` over the session: ``InferenceSession.run`` re-validates its feed in
    Python on every call, which costs more than the tree walk itself (see docs/serving.md).
    """
    import onnxruntime as ort

    if intra_op_threads < 1:
        raise InputError(
            f"`intra_op_threads` must be >= 1, got intra_op_threads={intra_op_threads}"
        )
    if inter_op_threads < 1:
        raise InputError(
            f"`inter_op_threads` must be >= 1, got inter_op_threads={inter_op_threads}"
        )
    so = ort.SessionOptions()
    so.intra_op_num_threads = intra_op_threads
    so.inter_op_num_threads = inter_op_threads
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only: ORT's info lines are not for users
    if profile_prefix is not None:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    model = bytes(onnx_model) if isinstance(onnx_model, bytes | bytearray) else str(onnx_model)
    try:
        return ort.InferenceSession(model, sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own classes (Fail, InvalidGraph, ...)
        from quantcli.errors import IntegrityError

        name = label or (model if isinstance(model, str) else "the ONNX graph")
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise IntegrityError(
            f"{name}: onnxruntime cannot load this graph ({first}); refusing to serve it"
        ) from None


def check_graph(data: bytes, label: str) -> None:
    """Parse the graph bytes and apply the scan's operator allow-list; IntegrityError if not.

    Enforced on every load, whatever the stored verdicts say: a graph re-signed after its scan
    still cannot bring an operator the scan would refuse.
    """
    import onnx
    from google.protobuf.message import DecodeError

    from quantcli.errors import IntegrityError
    from quantcli.serving.scan import operator_findings

    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise IntegrityError(
            f"{label}: not a valid ONNX graph ({str(exc)[:200] or type(exc).__name__}); "
            "refusing to serve it"
        ) from None
    findings, _ = operator_findings(model)
    if findings:
        more = f" (and {len(findings) - 1} more)" if len(findings) > 1 else ""
        raise IntegrityError(
            f"{label}: {findings[0]}{more}: the graph fails the operator allow-list; "
            "refusing to serve it",
            hint="re-export the model with quantcli's converters and scan it: qcli model scan",
        )


_F32_MAX = float(np.finfo(np.float32).max)


class OnnxRunner:
    """The lean call into an onnxruntime session: one float32 input, one ``[N, 1]`` output.

    ``InferenceSession.run`` re-checks its feed in Python on every call (input names against the
    graph's metadata, OrtValue ownership, graph-capture options) and converts the feed and the
    result between NumPy and OrtValues. On a cold cache -- the serving case, where feature
    lookup, the ledger and the web framework run between two predictions -- that wrapper cost
    about as much as walking 300 trees (measured: 64 us per ``run`` vs 40 us through a
    pre-bound IOBinding, one row, interleaved with LightGBM; docs/serving.md).

    Everything checkable is checked once here: the input and output names, the output shape.
    One-row calls then go through an ``IOBinding`` bound once to preallocated float32 buffers
    (one binding per thread: the HTTP service calls from a thread pool, and a shared buffer
    would mix two requests). Other batch sizes use ``InferenceSession.run`` (its fixed cost is
    negligible next to 1,000 rows).

    Parameters
    ----------
    session
        An ``onnxruntime.InferenceSession`` (see :func:`make_session`).

    Examples
    --------
    >>> run = OnnxRunner(make_session("model.fp32.onnx"))  # doctest: +SKIP
    >>> run(np.zeros((1, 29), np.float32))  # doctest: +SKIP
    array([0.0012], dtype=float32)
    """

    def __init__(self, session: Any) -> None:
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1:
            raise InputError(
                f"the graph has {len(inputs)} inputs and {len(outputs)} outputs; "
                "expected one float32 input and one output"
            )
        if inputs[0].type != "tensor(float)":
            raise InputError(f"the graph's input is {inputs[0].type}, expected tensor(float)")
        shape = inputs[0].shape
        width = shape[1] if len(shape) == 2 else None
        self.session = session
        self.input_name: str = inputs[0].name
        self.output_name: str = outputs[0].name
        self.n_features: int | None = width if isinstance(width, int) else None
        self._output_names = [self.output_name]
        out_shape = outputs[0].shape
        # The pre-bound path writes into a [1, 1] buffer: only for a float [N, 1] output.
        self._bindable = (
            self.n_features is not None
            and outputs[0].type == "tensor(float)"
            and len(out_shape) == 2
            and out_shape[1] == 1
        )
        self._local = threading.local()
        # onnxruntime's public ``run_with_iobinding`` re-checks WebGPU graph-capture options in
        # Python on every call (measured ~9 us cold; ~100 us when given RunOptions), and a
        # ``None`` RunOptions is default-constructed per call in C++ (~5 us cold). The C++
        # session's own method with one reused RunOptions skips both; feature-detected, so an
        # onnxruntime without these internals falls back to the public call.
        import onnxruntime as ort

        cpp_session = getattr(session, "_sess", None)
        self._run_options = ort.RunOptions()
        if cpp_session is not None and hasattr(cpp_session, "run_with_iobinding"):
            self._run_bound = cpp_session.run_with_iobinding
            self._native_binding = True
        else:  # an onnxruntime without these internals (tested through a public-only proxy)
            self._run_bound = lambda io, _opts: session.run_with_iobinding(io)
            self._native_binding = False

    def _binding(self):
        """This thread's ``(x, y, io)``: an IOBinding over its own preallocated one-row buffers."""
        b = getattr(self._local, "binding", None)
        if b is None:
            x = np.zeros((1, self.n_features), dtype=np.float32)
            y = np.zeros((1, 1), dtype=np.float32)
            io = self.session.io_binding()
            io.bind_input(self.input_name, "cpu", 0, np.float32, list(x.shape), x.ctypes.data)
            io.bind_output(self.output_name, "cpu", 0, np.float32, [1, 1], y.ctypes.data)
            inner = getattr(io, "_iobinding", None) if self._native_binding else None
            # keep the Python IOBinding alive with its C++ object and the buffers it points to
            b = self._local.binding = (x, y, io if inner is None else inner, io)
        return b

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """Predictions (float32, one per row) for a C-contiguous float32 ``[N, n_features]``.

        No checks on ``X``: callers validate (:meth:`InferenceRuntime.validate`).
        """
        if X.shape[0] == 1 and self._bindable:
            try:
                x, y, io, _ = self._local.binding
            except AttributeError:  # this thread's first call
                x, y, io, _ = self._binding()
            x[...] = X
            self._run_bound(io, self._run_options)
            return y.flatten()  # a copy: the buffer is reused by the next call
        return self.session.run(self._output_names, {self.input_name: X})[0].reshape(-1)

    def one_row(self, row: np.ndarray) -> np.ndarray | None:
        """The float64 prediction ``[1]`` for one float row (``[n]`` or ``[1, n]``), or ``None``.

        The row is cast to float32 straight into the bound input buffer. ``None`` when that row
        holds a NaN or an infinity after the cast (the caller's NaN policy decides what to say),
        or when the graph's output cannot be pre-bound. The checks run on the row's values as
        Python floats (one ``tolist``; on a cold cache a third of the cost of numpy's
        reductions): their sum is finite iff no value is NaN or infinite, and min/max within
        float32's range means the cast cannot overflow to infinity.
        """
        if not self._bindable:
            return None
        vals = row.ravel().tolist()
        if not math.isfinite(sum(vals)) or min(vals) < -_F32_MAX or max(vals) > _F32_MAX:
            return None  # the general path casts, then names the offending feature (or accepts)
        try:
            x, y, io, _ = self._local.binding
        except AttributeError:
            x, y, io, _ = self._binding()
        x[...] = row
        self._run_bound(io, self._run_options)
        return y.reshape(-1).astype(np.float64)


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
    from quantcli import config
    from quantcli.errors import NotFoundError
    from quantcli.models import tags as T
    from quantcli.models.registry import ModelRegistry
    from quantcli.serving.onnx_export import EXPORT_STEM, ONNX_ARTIFACT_DIR, TAG_RECOMMENDED

    if precision not in ("auto", "fp32", "int8"):
        raise InputError(f"`precision` must be auto, fp32 or int8, got precision={precision!r}")
    reg = ModelRegistry(tracking_uri)
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
    dst = config.qcli_home(create=True) / "cache" / "onnx" / name / f"v{info.version}"
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
    }
    return OnnxArtifact(
        Path(local), rec.get("sha256"), rec.get("signature"), feature_names, audit, judged
    )


def _judged_for(info: Any, art_path: str) -> dict[str, str]:
    """``{gate: sha256}`` the parity/scan verdicts judged for ``art_path``; refuse a stale one."""
    from quantcli.errors import IntegrityError

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
    import shutil
    import tempfile

    from quantcli.integrity import sha256_file

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


@dataclass
class Prediction:
    """Predictions (float64 vector, one per input row) and the audit tags of the model."""

    predictions: np.ndarray
    audit: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"predictions": self.predictions.tolist(), "audit": dict(self.audit)}


class InferenceRuntime:
    """A verified ONNX model behind one onnxruntime session.

    Parameters
    ----------
    onnx_path
        The ONNX graph (one float32 input ``[N, n_features]``, one output ``[N, 1]``).
    sha256, signature
        The recorded hex sha256 and base64 Ed25519 signature; the file is refused
        (:class:`~quantcli.errors.IntegrityError`, exit 1) when either does not verify.
    feature_names
        The model's signature: feature names in input order.
    audit_tags
        Returned with every prediction: model name, version, run id, feature set and version,
        dataset manifest id, onnx file name and sha256 (the sha256 and file name are added here).
    intra_op_threads, inter_op_threads
        onnxruntime thread settings (default one each: latency-bound serving).
    keys_dir
        Where the public keyring lives (default: see :mod:`quantcli.integrity`). Only public
        keys are read: serving never needs the private signing key.
    judged
        ``{gate: sha256}`` the verdicts judged for this graph; the loaded bytes must match each.

    Examples
    --------
    >>> rt = InferenceRuntime.from_registry("momentum", alias="production")  # doctest: +SKIP
    >>> out = rt.predict(features_frame)  # doctest: +SKIP
    >>> out.predictions[:2], out.audit["model_version"]  # doctest: +SKIP
    (array([ 0.0012, -0.0004]), '3')
    """

    def __init__(
        self,
        onnx_path: str | os.PathLike[str],
        sha256: str | None,
        signature: str | None,
        feature_names: Sequence[str],
        audit_tags: Mapping[str, Any] | None = None,
        *,
        intra_op_threads: int = 1,
        inter_op_threads: int = 1,
        keys_dir: str | os.PathLike[str] | None = None,
        judged: Mapping[str, str] | None = None,
    ) -> None:
        from quantcli.errors import IntegrityError
        from quantcli.integrity import read_verified

        self.onnx_path = Path(onnx_path)
        # one read: the bytes verified are the bytes the session is built from
        data, digest = read_verified(self.onnx_path, sha256, signature, keys_dir)
        for gate, sha in (judged or {}).items():
            if sha != digest:
                raise IntegrityError(
                    f"{self.onnx_path}: these bytes (sha256 {digest[:12]}...) are not the graph "
                    f"the '{gate}' verdict judged ({sha[:12]}...); refusing to serve it"
                )
        check_graph(data, str(self.onnx_path))
        self.feature_names: tuple[str, ...] = tuple(str(f) for f in feature_names)
        if not self.feature_names:
            raise InputError("`feature_names` is empty: the model signature names no feature")
        if len(set(self.feature_names)) != len(self.feature_names):
            raise InputError("`feature_names` has duplicates: the model signature is corrupt")
        self.session = make_session(
            data,
            intra_op_threads=intra_op_threads,
            inter_op_threads=inter_op_threads,
            label=str(self.onnx_path),
        )
        inp = self.session.get_inputs()
        if len(inp) != 1:
            raise InputError(f"{self.onnx_path}: the graph has {len(inp)} inputs, expected 1")
        width = inp[0].shape[1] if len(inp[0].shape) == 2 else None
        if isinstance(width, int) and width != len(self.feature_names):
            raise InputError(
                f"{self.onnx_path}: the graph takes {width} features but the signature names "
                f"{len(self.feature_names)}"
            )
        # Checked once here, not per call: names, widths, the output shape (see OnnxRunner).
        self._runner = OnnxRunner(self.session)
        self._input_name = self._runner.input_name
        self._output_names = [self._runner.output_name]
        self._n_features = len(self.feature_names)
        self._names_list = list(self.feature_names)
        self.audit_tags: dict[str, Any] = dict(audit_tags or {})
        self.audit_tags.setdefault("onnx_name", self.onnx_path.name)
        self.audit_tags["onnx_sha256"] = digest

    # -- construction from the registry -------------------------------------------------------
    @classmethod
    def from_registry(
        cls,
        name: str,
        alias: str = "production",
        *,
        precision: str = "auto",
        tracking_uri: str | None = None,
        intra_op_threads: int = 1,
        inter_op_threads: int = 1,
    ) -> InferenceRuntime:
        """Load the exported ONNX graph of a registered version.

        ``alias`` is an alias (``production``, ``staging``) or a version number. ``precision``
        is ``"fp32"``, ``"int8"`` or ``"auto"`` (the graph the export report recommended). The
        version must have been exported (``qcli model export``) and its sha256 and signature
        recorded as version tags.
        """
        art = resolve_onnx(name, alias, precision=precision, tracking_uri=tracking_uri)
        return cls(
            art.path,
            art.sha256,
            art.signature,
            art.feature_names,
            art.audit_tags,
            intra_op_threads=intra_op_threads,
            inter_op_threads=inter_op_threads,
            judged=art.judged,
        )

    # -- the hot path ---------------------------------------------------------------------------
    @property
    def n_features(self) -> int:
        return self._n_features

    def validate(self, data: Any) -> np.ndarray:
        """``data`` as a C-contiguous float32 matrix in signature order, or :class:`InputError`."""
        if (
            type(data) is np.ndarray
            and data.dtype.kind == "f"
            and 1 <= data.ndim <= 2
            and data.shape[-1] == self._n_features
        ):
            # hot path (a float row or matrix from `qcli predict`/HTTP): same checks, fewer calls
            with np.errstate(over="ignore"):  # beyond float32's range -> inf -> refused below
                X = np.ascontiguousarray(
                    data.reshape(1, -1) if data.ndim == 1 else data, np.float32
                )
            if np.isfinite(X).all():
                return X
            self._reject_non_finite(X)
        names: list[str] | None = None
        if isinstance(data, np.ndarray):
            X = data
        elif hasattr(data, "columns") and hasattr(data, "to_numpy"):  # polars / pandas
            names = [str(c) for c in data.columns]
            self._check_names(names)
            X = data.to_numpy()
        elif isinstance(data, Mapping):
            names = [str(c) for c in data]
            self._check_names(names)
            try:
                X = np.column_stack([np.atleast_1d(np.asarray(data[c])) for c in data])
            except ValueError as exc:
                raise InputError(f"feature columns have different lengths: {exc}") from None
        else:
            X = np.asarray(data)
        if X.ndim == 1:
            X = X.reshape(1, -1)
        if X.ndim != 2:
            raise InputError(f"features must be a 2-D table (rows x features), got {X.ndim}-D")
        if X.shape[1] != self.n_features:
            raise InputError(
                f"expected {self.n_features} features ({', '.join(self.feature_names[:3])}, ...), "
                f"got {X.shape[1]} columns"
            )
        if X.dtype.kind not in "fiu":
            raise InputError(
                f"features must be numeric (float or int), got dtype {X.dtype}",
                hint="cast the feature columns to Float64",
            )
        with np.errstate(over="ignore"):
            X = np.ascontiguousarray(X, dtype=np.float32)
        if not np.isfinite(X).all():
            self._reject_non_finite(X)
        return X

    def _reject_non_finite(self, X: np.ndarray) -> None:
        bad = ~np.isfinite(X)
        row, col = (int(v) for v in np.argwhere(bad)[0])
        raise InputError(
            f"feature '{self.feature_names[col]}' is NaN or infinite at row {row} "
            f"({int(bad.sum())} non-finite values in total); the NaN policy is reject",
            hint="drop rows whose features are still in their warm-up window",
        )

    def _check_names(self, names: list[str]) -> None:
        if names == self._names_list:
            return
        expected = set(self.feature_names)
        missing = [f for f in self.feature_names if f not in names]
        if missing:
            raise InputError(
                f"missing feature '{missing[0]}'"
                + (
                    f" (and {len(missing) - 1} more: {', '.join(missing[1:4])})"
                    if len(missing) > 1
                    else ""
                )
                + " required by the model signature"
            )
        extra = [c for c in names if c not in expected]
        if extra:
            raise InputError(
                f"unexpected column '{extra[0]}': not in the model signature",
                hint="select exactly the signature's feature columns, in order",
            )
        for pos, (got, want) in enumerate(zip(names, self.feature_names, strict=True)):
            if got != want:
                raise InputError(
                    f"wrong feature order: column {pos} is '{got}' but the model signature "
                    f"expects '{want}' there",
                    hint="select the columns in signature order: "
                    + ", ".join(self.feature_names[: pos + 2])
                    + ", ...",
                )

    def predict_array(self, X: np.ndarray) -> np.ndarray:
        """Raw float32 predictions for an already validated float32 matrix (no checks).

        The hot path: one row goes through a pre-bound IOBinding (:class:`OnnxRunner`).
        """
        return self._runner(X)

    def predict(self, data: Any) -> Prediction:
        """Validate ``data`` and predict: one float64 prediction per row, plus the audit tags."""
        if (
            type(data) is np.ndarray
            and data.dtype.kind == "f"
            and data.size == self._n_features
            and (data.ndim == 1 or (data.ndim == 2 and data.shape[0] == 1))
        ):
            # one float row, the serving hot path: cast into the pre-bound buffer, one
            # finiteness reduction, run; a non-finite row falls through to `validate`'s message
            out = self._runner.one_row(data)
            if out is not None:
                return Prediction(out, self.audit_tags)
        X = self.validate(data)
        out = self.predict_array(X).astype(np.float64)
        return Prediction(out, self.audit_tags)

    def describe(self) -> dict[str, Any]:
        """The signature and audit tags, JSON-able (for ``/health`` and ``qcli predict``)."""
        return {
            "onnx_path": str(self.onnx_path),
            "feature_names": list(self.feature_names),
            "audit": json.loads(json.dumps(self.audit_tags, default=str)),
        }
