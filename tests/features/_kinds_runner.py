"""A plain reference runner of ``Kind.kernel`` for the tests: each symbol, each feature, in
declaration order, from ``init_state`` (optionally split in two calls), then the cross-sectional
kinds over all rows. Slow and simple on purpose: it checks kernels and twins, not the engine."""

from __future__ import annotations

import numpy as np
import polars as pl

from quantcli.features.definitions import FeatureSet
from quantcli.features.kinds import Kind, get_kind


def run_kernel(kind: Kind, params: dict, x: np.ndarray, split: int | None = None) -> np.ndarray:
    """``kind``'s kernel over the rows of ``x`` (inputs x bars); with ``split``, two calls that
    continue from the state the first left."""
    pv = kind.param_vector(params)
    state = kind.init_state(params)
    assert state.shape == (kind.state_size(params),)
    n = x.shape[1]
    out = np.full((1, n), -12345.0)
    if split is None:
        kind.kernel(np.ascontiguousarray(x), pv, state, out)
        return out[0]
    a, b = np.full((1, split), -1.0), np.full((1, n - split), -1.0)
    kind.kernel(np.ascontiguousarray(x[:, :split]), pv, state, a)
    kind.kernel(np.ascontiguousarray(x[:, split:]), pv, state, b)
    return np.concatenate([a[0], b[0]])


def kernel_frame(sorted_bars: pl.DataFrame, fs: FeatureSet, *, warmup: bool = True) -> pl.DataFrame:
    """``symbol, ts, <features>`` of ``fs`` by the kernels, warm-up rows dropped (``warmup``)."""
    values: dict[str, list[np.ndarray]] = {f.name: [] for f in fs.features}
    symbols = sorted_bars["symbol"].to_numpy()
    cuts = np.flatnonzero(symbols[1:] != symbols[:-1]) + 1
    bounds = list(zip(np.r_[0, cuts], np.r_[cuts, len(symbols)], strict=True))
    for a, b in bounds:
        cols = {c: sorted_bars[c].to_numpy()[a:b].astype(np.float64) for c in fs.inputs}
        mine: dict[str, np.ndarray] = {}
        for spec in fs.features:
            kind = get_kind(spec.kind)
            if kind.scope == "cross_section":
                continue
            src = cols if kind.scope == "bars" else mine
            names = kind.inputs if kind.scope == "bars" else spec.inputs
            mine[spec.name] = run_kernel(kind, spec.params, np.vstack([src[c] for c in names]))
        for spec in fs.features:
            if spec.name in mine:
                values[spec.name].append(mine[spec.name])
    frame = sorted_bars.select("symbol", "ts").with_columns(
        pl.Series(name, np.concatenate(parts)) for name, parts in values.items() if parts
    )
    for spec in fs.features:
        kind = get_kind(spec.kind)
        if kind.scope != "cross_section":
            continue
        by_ts = frame.with_row_index("__row").sort("ts", "__row")
        ts = by_ts["ts"].to_physical().to_numpy()
        starts = np.r_[0, np.flatnonzero(ts[1:] != ts[:-1]) + 1, len(ts)].astype(np.int64)
        x = by_ts[spec.inputs[0]].to_numpy().astype(np.float64)
        out = np.empty_like(x)
        kind.kernel(x, starts, np.array([float(kind.extra["mode"])]), out)
        back = np.empty_like(out)
        back[by_ts["__row"].to_numpy()] = out
        frame = frame.with_columns(pl.Series(spec.name, back))
    frame = frame.select("symbol", "ts", *fs.feature_names)
    if warmup:
        pos = pl.int_range(pl.len()).over("symbol")
        frame = frame.filter(pos >= fs.warmup)
    return frame
