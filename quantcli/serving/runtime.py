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
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from quantcli.errors import InputError, IntegrityError
from quantcli.integrity import read_verified
from quantcli.serving.registered import resolve_onnx
from quantcli.serving.session import OnnxRunner, check_graph, make_session
from quantcli.workspace import Workspace


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
        workspace: Workspace | None = None,
        tracking_uri: str | None = None,
        intra_op_threads: int = 1,
        inter_op_threads: int = 1,
    ) -> InferenceRuntime:
        """Load the exported ONNX graph of a registered version.

        ``alias`` is an alias (``production``, ``staging``) or a version number. ``precision``
        is ``"fp32"``, ``"int8"`` or ``"auto"`` (the graph the export report recommended). The
        version must have been exported (``qcli model export``) and its sha256 and signature
        recorded as version tags. ``tracking_uri`` is a deprecated alias of ``workspace``.
        """
        art = resolve_onnx(
            name, alias, precision=precision, workspace=workspace, tracking_uri=tracking_uri
        )
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
