"""The parity gate: does the ONNX graph predict what the native model predicts?

Definitions (``ref`` = native predictions in float64, ``got`` = ONNX predictions, ``d = got - ref``,
over the ``n`` rows of the sample):

* ``mae = mean |d|``, ``rmse = sqrt(mean d^2)``, ``max_abs_diff = max |d|`` (units of the
  prediction: a forward return, as a fraction).
* ``relative_error_pct = 100 * sum |d| / sum |ref|`` -- the aggregate relative L1 error. It is
  used instead of a mean of per-row ratios because forward-return predictions sit near zero,
  where per-row ratios explode. It is unit-free but not shift-invariant: a constant added to both
  predictions (the mean return a model learns) enlarges ``sum |ref|`` and so shrinks it; the
  flip rate below is gated alongside it (docs/serving.md).
* ``flipped_pct`` -- the share (%) of rows whose *decision* changes. quantcli's models are
  regressors used as a long/short signal, so the decision is ``sign(prediction)``; a row counts
  as flipped when ``sign(got) != sign(ref)`` and ``|ref| > atol`` (a native prediction within
  ``atol`` of zero is a coin toss at any precision and is not counted).
* ``within_tolerance_pct`` -- share of rows with ``|d| <= atol + rtol * |ref|``.
* **Parity loss** ``loss_pct = max(relative_error_pct, flipped_pct)``. The gate passes when
  ``loss_pct < max_loss_pct`` (FP32 0.1 %, INT8 1 % by default) and every prediction is finite.
  ``within_tolerance_pct`` is reported, not gated: ``atol``/``rtol`` describe closeness per row,
  the loss describes the model.

The limit follows the graph: :meth:`ONNXParityTester.test_parity` judges a graph holding INT8
operators (see :data:`quantcli.serving.quantize.INT8_OPS`) at the INT8 limit (1 %) and any other
graph at the FP32 limit (0.1 %), unless ``max_loss_pct`` is given. The precision is read from the
graph, not the file name.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, ClassVar

import numpy as np

from quantcli.config import DEFAULTS
from quantcli.errors import InputError
from quantcli.models.native import as_matrix, native_predict
from quantcli.results import Result
from quantcli.serving.quantize import INT8_OPS, count_ops
from quantcli.serving.session import make_session


def parity_metrics(
    ref: np.ndarray, got: np.ndarray, *, atol: float = 1e-3, rtol: float = 1e-2
) -> dict[str, Any]:
    """The metrics defined in the module docstring, for two prediction vectors."""
    ref = np.asarray(ref, dtype=np.float64).reshape(-1)
    got = np.asarray(got, dtype=np.float64).reshape(-1)
    if ref.shape != got.shape:
        raise InputError(f"prediction lengths differ: native {ref.shape[0]}, onnx {got.shape[0]}")
    n = int(ref.shape[0])
    finite = bool(np.all(np.isfinite(got)))
    d = got - ref
    absd = np.abs(d)
    denom = float(np.sum(np.abs(ref)))
    rel = 100.0 * float(np.sum(absd)) / denom if denom > 0 else (0.0 if absd.max() == 0 else np.inf)
    decided = np.abs(ref) > atol
    flips = int(np.sum(decided & (np.sign(got) != np.sign(ref))))
    return {
        "n": n,
        "mae": float(absd.mean()),
        "rmse": float(np.sqrt(np.mean(d * d))),
        "max_abs_diff": float(absd.max()),
        "relative_error_pct": float(rel),
        "flipped_decisions": flips,
        "decided_rows": int(decided.sum()),
        "flipped_pct": 100.0 * flips / n,
        "within_tolerance_pct": 100.0 * float(np.mean(absd <= atol + rtol * np.abs(ref))),
        "all_finite": finite,
        "atol": atol,
        "rtol": rtol,
    }


@dataclasses.dataclass(frozen=True, kw_only=True)
class ParityResult(Result):
    """The parity verdict of one graph: the metrics of the module docstring and the gate.

    ``reasons`` names every failed criterion; :meth:`to_dict` is the ``fp32_parity`` /
    ``int8_parity`` object of the export report.
    """

    n: int
    mae: float
    rmse: float
    max_abs_diff: float
    relative_error_pct: float
    flipped_decisions: int
    decided_rows: int
    flipped_pct: float
    within_tolerance_pct: float
    all_finite: bool
    atol: float
    rtol: float
    loss_pct: float
    precision: str
    max_loss_pct: float

    failure_message: ClassVar[str] = "ONNX parity failed"

    def to_dict(self) -> dict[str, Any]:
        d = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("passed", "reasons")
        }
        d["passed"] = self.passed
        d["reasons"] = list(self.reasons)
        return d


class ONNXParityTester:
    """Compare a native model with its ONNX graph on a sample of feature rows.

    Parameters
    ----------
    atol, rtol
        Per-row closeness ``|d| <= atol + rtol * |ref|``, reported as ``within_tolerance_pct``
        (not gated); ``atol`` is also the dead band around zero inside which a sign change is
        not a flipped decision (it does gate, through ``flipped_pct``).
    max_loss_pct
        The gate on the parity loss, in percent. Default ``None``: the ``[parity]`` limits of
        the configuration by the graph's precision, ``int8_max_loss_pct`` (1.0) for a graph
        with INT8 operators, else ``fp32_max_loss_pct`` (0.1).
    threads
        onnxruntime intra-op threads for the check.

    Examples
    --------
    >>> tester = ONNXParityTester(atol=1e-3, rtol=1e-2)
    >>> passed, metrics = tester.test_parity(booster, "m.fp32.onnx", X)  # doctest: +SKIP
    >>> passed, metrics["precision"], metrics["max_loss_pct"]  # doctest: +SKIP
    (True, 'fp32', 0.1)
    """

    def __init__(
        self,
        atol: float = 1e-3,
        rtol: float = 1e-2,
        max_loss_pct: float | None = None,
        threads: int = 1,
    ) -> None:
        if not atol >= 0:
            raise InputError(f"`atol` must be >= 0, got atol={atol}")
        if not rtol >= 0:
            raise InputError(f"`rtol` must be >= 0, got rtol={rtol}")
        if max_loss_pct is not None and not max_loss_pct > 0:
            raise InputError(
                f"`max_loss_pct` must be > 0 (percent), got max_loss_pct={max_loss_pct}"
            )
        self.atol, self.rtol, self.max_loss_pct, self.threads = atol, rtol, max_loss_pct, threads

    def test_parity(
        self, original_model: Any, onnx_path: str | os.PathLike[str], X_sample: Any
    ) -> tuple[bool, ParityResult]:
        """``(passed, metrics)``: run both models on ``X_sample`` and apply the gate.

        ``X_sample`` is a NumPy, polars, pandas or pyarrow table of feature rows in the model's
        input order. ``metrics`` holds ``mae``, ``rmse``, ``max_abs_diff``,
        ``relative_error_pct``, ``flipped_pct``, ``within_tolerance_pct``, ``precision``
        (``"int8"`` or ``"fp32"``, read from the graph), ``max_loss_pct``, ``passed`` and
        ``reasons`` (a :class:`ParityResult`, readable as ``metrics["mae"]`` too).
        """
        if not os.path.isfile(onnx_path):
            raise InputError(f"onnx_path '{os.fspath(onnx_path)}' is not a file")
        X, _ = as_matrix(X_sample)
        precision = graph_precision(onnx_path)
        ref = native_predict(original_model, X)
        sess = make_session(onnx_path, intra_op_threads=self.threads)
        got = sess.run(None, {sess.get_inputs()[0].name: X.astype(np.float32)})[0].reshape(-1)
        return self.evaluate(ref, got, precision=precision)

    def limit_for(self, precision: str) -> float:
        """The loss limit in percent for a graph of ``precision`` (``"int8"`` or ``"fp32"``)."""
        if self.max_loss_pct is not None:
            return float(self.max_loss_pct)
        key = "int8_max_loss_pct" if precision == "int8" else "fp32_max_loss_pct"
        return float(DEFAULTS["parity"][key])

    def evaluate(
        self, ref: np.ndarray, got: np.ndarray, *, precision: str = "fp32"
    ) -> tuple[bool, ParityResult]:
        """Apply the gate to given prediction vectors (native ``ref``, ONNX ``got``)."""
        limit = self.limit_for(precision)
        m = parity_metrics(ref, got, atol=self.atol, rtol=self.rtol)
        reasons = []
        if not m["all_finite"]:
            reasons.append("the ONNX graph returned non-finite predictions")
        if not m["relative_error_pct"] < limit:
            reasons.append(f"relative error {m['relative_error_pct']:.4f} % >= {limit} %")
        if not m["flipped_pct"] < limit:
            reasons.append(
                f"{m['flipped_decisions']} flipped long/short decisions "
                f"({m['flipped_pct']:.3f} % >= {limit} %)"
            )
        result = ParityResult(
            passed=not reasons,
            reasons=reasons,
            **m,
            loss_pct=max(m["relative_error_pct"], m["flipped_pct"]),
            precision=precision,
            max_loss_pct=limit,
        )
        return result.passed, result


def graph_precision(onnx_path: str | os.PathLike[str]) -> str:
    """``"int8"`` when the graph holds an INT8 operator, else ``"fp32"``."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(os.fspath(onnx_path), load_external_data=False)
    except (OSError, DecodeError) as exc:
        raise InputError(f"'{os.fspath(onnx_path)}' is not an ONNX graph: {exc}") from None
    return "int8" if count_ops(model, INT8_OPS) else "fp32"
