"""Labels declared beside the features in ``feature_defs/`` (e.g. ``fwd_return_5d``).

A forward-return label over ``horizon`` bars of the same symbol (bars, not days: on hourly bars
``horizon = 5`` is five hours ahead; the set's ``frequency`` gives the bar):

    label[t]     = close[t + horizon] / close[t] - 1      (a fraction, not percent)
    label_end[t] = ts[t + horizon]                         (the bar the label is known on)

The last ``horizon`` bars of each symbol have no label (null) and are dropped from training.
CPCV purges on the interval ``[ts, label_end]``.
"""

from __future__ import annotations

import polars as pl

from quantcli.features.definitions import LabelSpec, load_feature_set


def label_spec(feature_set: str, label: str) -> LabelSpec:
    """The declaration of ``label`` in feature set ``feature_set`` (horizon in bars);
    :class:`~quantcli.errors.NotFoundError` names the known labels."""
    return load_feature_set(feature_set).label(label)


def compute_labels(bars: pl.DataFrame | pl.LazyFrame, horizon: int) -> pl.LazyFrame:
    """``(symbol, ts, label, label_end)`` for every bar; null label for the last ``horizon``."""
    if horizon < 1:
        raise ValueError(f"`horizon` must be at least 1, got `horizon={horizon}`.")
    lf = bars.lazy() if isinstance(bars, pl.DataFrame) else bars
    return (
        lf.select("symbol", "ts", "close")
        .sort("symbol", "ts")
        .with_columns(
            (pl.col("close").shift(-horizon).over("symbol") / pl.col("close") - 1.0).alias("label"),
            pl.col("ts").shift(-horizon).over("symbol").alias("label_end"),
        )
        .drop("close")
    )
