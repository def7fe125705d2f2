"""onnxruntime sessions as quantcli runs them: CPU, explicit threads, a lean one-row call.

:func:`make_session` builds the one kind of session every caller uses (runtime, parity gate,
scan probe, latency report); :func:`check_graph` applies the operator allow-list to a graph's
bytes before a session is built from them; :class:`OnnxRunner` is the hot-path call into a
session.
"""

from __future__ import annotations

import math
import os
import threading
from typing import Any

import numpy as np

from quantcli.errors import InputError, IntegrityError
from quantcli.serving.operators import operator_findings


def make_session(
    onnx_model: str | os.PathLike[str] | bytes,
    *,
    intra_op_threads: int = 1,
    inter_op_threads: int = 1,
    profile_prefix: str | None = None,
    label: str | None = None,
):
    """One onnxruntime ``InferenceSession`` on CPU with explicit thread settings.

    ``onnx_model`` is a path or the graph's bytes (what
    :class:`~quantcli.serving.runtime.InferenceRuntime` passes: the
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
    lookup, the ledger and the web framework run between two predictions -- that wrapper costs
    about as much as walking a few hundred trees (figures in docs/serving.md).

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
        # Python on every call, and a ``None`` RunOptions is default-constructed per call in
        # C++. The C++ session's own method with one reused RunOptions skips both;
        # feature-detected, so an onnxruntime without these internals falls back to the public
        # call.
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


__all__ = ["OnnxRunner", "check_graph", "make_session"]
