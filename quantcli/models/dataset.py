"""The training data of a model: the frame the trainer fits on and its manifest.

The manifest (:func:`dataset_manifest`) is what lineage records about the data: the sha256 of
the frame's exact content, its rows, symbols and time range. Same data -> same digest.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import polars as pl

from quantcli._interop import is_pandas, is_pyarrow, to_polars
from quantcli.errors import InputError

INDEX_COLUMNS = ("symbol", "ts", "label_end")
# the period return the CPCV strategy earns (quantcli.backtest.engine); never a model input
RETURN_COLUMN = "fwd_return_1d"
#: The fewest rows a CPCV training accepts.
MIN_ROWS = 100


def frame_sha256(frame: pl.DataFrame) -> str:
    """sha256 of a frame's exact content: column names, dtypes and values, in row order.

    Datetimes hash as their integer microseconds, strings as UTF-8 joined by NUL, numbers as
    little-endian float64/int64 (nulls as NaN / a marker), so the digest does not depend on the
    Polars version's IPC layout.
    """
    h = hashlib.sha256()
    for name, dtype in frame.schema.items():
        col = frame.get_column(name)
        h.update(f"{name}:{dtype}\n".encode())
        if dtype == pl.String or dtype == pl.Categorical:
            h.update("\x00".join("\x01" if v is None else v for v in col.to_list()).encode())
        elif dtype.is_temporal():
            ints = col.dt.cast_time_unit("us").cast(pl.Int64) if dtype == pl.Datetime else col
            h.update(ints.cast(pl.Int64).fill_null(np.iinfo(np.int64).min).to_numpy().tobytes())
        elif dtype.is_integer():
            h.update(col.cast(pl.Int64).fill_null(np.iinfo(np.int64).min).to_numpy().tobytes())
        else:
            h.update(col.cast(pl.Float64).to_numpy().astype("<f8").tobytes())
    return h.hexdigest()


def dataset_manifest(frame: pl.DataFrame) -> dict[str, Any]:
    """``sha256``, ``rows``, ``symbols`` (sorted), ``start``/``end`` (ISO UTC) of a frame."""
    ts = frame.get_column("ts")
    return {
        "sha256": frame_sha256(frame),
        "rows": frame.height,
        "symbols": sorted(frame.get_column("symbol").unique().to_list()),
        "start": ts.min().isoformat() if frame.height else None,
        "end": ts.max().isoformat() if frame.height else None,
        "columns": frame.columns,
    }


def training_frame(X: Any, y: Any) -> tuple[pl.DataFrame, list[str]]:
    """``X`` with the label ``y`` as one polars frame sorted by ``(ts, symbol)``, and the
    feature names (every column of ``X`` but the index, the label and ``fwd_return_1d``)."""
    if is_pandas(y) or is_pyarrow(y):
        y = np.asarray(y.to_numpy() if hasattr(y, "to_numpy") else y)
    X = to_polars(X, "X")
    missing = [c for c in INDEX_COLUMNS if c not in X.columns]
    if missing:
        raise InputError(
            f"`X` lacks the index column(s) {missing}",
            hint="X needs symbol, ts, label_end and the features "
            "(quantcli.features.dataset.load_training_frame)",
        )
    extra = [RETURN_COLUMN] if RETURN_COLUMN in X.columns else []
    feature_names = [c for c in X.columns if c not in (*INDEX_COLUMNS, "label", *extra)]
    if not feature_names:
        raise InputError("`X` has no feature columns")
    y_arr = np.asarray(y.to_numpy() if isinstance(y, pl.Series) else y, dtype=np.float64)
    if y_arr.shape != (X.height,):
        raise InputError(f"`y` must have {X.height} values (one per row of X), got {y_arr.shape}")
    if not np.isfinite(y_arr).all():
        bad = int((~np.isfinite(y_arr)).sum())
        raise InputError(f"`y` has {bad} null/NaN/inf label(s); drop those rows first")
    if X.height < MIN_ROWS:
        raise InputError(f"`X` has {X.height} rows; CPCV training needs at least {MIN_ROWS}")
    frame = X.with_columns(pl.Series("label", y_arr))
    frame = frame.select("symbol", "ts", *feature_names, "label", "label_end", *extra)
    return frame.sort("ts", "symbol", maintain_order=True), feature_names


__all__ = [
    "INDEX_COLUMNS",
    "RETURN_COLUMN",
    "dataset_manifest",
    "frame_sha256",
    "training_frame",
]
