"""One shard of a feature build: its features computed, and per symbol what to write.

:func:`compute_shard` is pure (no I/O) and top-level, so the executor (local or Ray) can map it
over picklable :class:`ShardTask` payloads; the build's one writer applies the
:class:`ShardResult` it returns. The per-feature statistics of a shard are mergeable
(:func:`merge_stats`) into the build's quality record (:func:`feature_quality`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from quantcli.features import hashing, state_codec
from quantcli.features.blocks import block_starts, sort_bars
from quantcli.features.compute import Plan, compile_plan, compute_sorted
from quantcli.features.definitions import load_feature_set
from quantcli.features.engine import KernelPlan, run_frame
from quantcli.features.expressions import DEFAULT_ENGINE


@dataclass(frozen=True)
class ShardTask:
    """The payload of :func:`compute_shard` (picklable, so Ray can ship it)."""

    feature_set: str
    bars: pl.DataFrame
    mode: str  # full | incremental | since
    since_us: int | None
    # symbol -> (last_bar_ts in epoch microseconds, n_bars, history_sha256) of the previous build
    state: dict[str, tuple[int, int, str]]
    # symbol -> rows of the symbol in the feature table now (an append needs them all present)
    stored_rows: dict[str, int] = field(default_factory=dict)
    engine: str = DEFAULT_ENGINE  # kernel | polars (quantcli.features.expressions.ENGINES)
    # symbol -> (bars already computed, kernel state bytes, history_sha256) of the symbols the
    # driver found unchanged with a usable stored state: ``bars`` then holds only their new bars
    stream: dict[str, tuple[int, bytes, str]] = field(default_factory=dict)
    # symbol -> fingerprint of all its bars (stored with the new state; see features_stream_check)
    fingerprints: dict[str, str] = field(default_factory=dict)


@dataclass
class ShardResult:
    """What :func:`compute_shard` returns to the writer."""

    rows: pl.DataFrame  # rows to insert, table column order
    rewrite: list[str]  # symbols whose rows are all deleted first
    since_delete: list[str]  # symbols whose rows with ts >= since are deleted first
    new_state: list[tuple[str, int, int, str]]  # (symbol, last_bar_ts_us, n_bars, sha)
    drop_state: list[str]  # symbols whose state is removed (older rows may be stale)
    hashes: list[tuple[str, int, str]]
    bars_read: int
    rows_computed: int
    warmup_dropped: int
    stats: dict[str, list[float]]
    # symbol -> how it was computed: stream (continued from its stored state, only the new bars),
    # recompute (from its first bar, only the new rows written), rewrite, since
    paths: dict[str, str] = field(default_factory=dict)
    # (symbol, layout_sha256, n_bars, last_bar_ts_us, state bytes, bars fingerprint) to store
    stream_states: list[tuple[str, str, int, int, bytes, str]] = field(default_factory=list)
    drop_stream: list[str] = field(default_factory=list)  # symbols whose kernel state goes
    # symbol -> median spacing of its bars in microseconds, for the symbols read from their
    # first bar (a streamed symbol's few new bars say nothing about its spacing)
    median_spacing_us: dict[str, float] = field(default_factory=dict)


def feature_stats(frame: pl.DataFrame, names: Sequence[str]) -> dict[str, list[float]]:
    """Mergeable per-feature stats: [count, sum, sum of squares, min, max, zeros, non-finite]."""
    out: dict[str, list[float]] = {}
    for name in names:
        v = frame[name].to_numpy()
        finite = np.isfinite(v)
        f = v[finite]
        with np.errstate(over="ignore"):  # finite values past 1e154: their squares are inf
            total, squares = float(f.sum()), float((f * f).sum())
        out[name] = [
            float(f.size),
            total,
            squares,
            float(f.min()) if f.size else float("inf"),
            float(f.max()) if f.size else float("-inf"),
            float((f == 0.0).sum()),
            float(v.size - f.size),
        ]
    return out


def merge_stats(
    total: dict[str, list[float]], part: dict[str, list[float]]
) -> dict[str, list[float]]:
    """Add a shard's :func:`feature_stats` into ``total`` (in place; also returned)."""
    for name, s in part.items():
        t = total.setdefault(name, [0.0, 0.0, 0.0, float("inf"), float("-inf"), 0.0, 0.0])
        t[0] += s[0]
        t[1] += s[1]
        t[2] += s[2]
        t[3] = min(t[3], s[3])
        t[4] = max(t[4], s[4])
        t[5] += s[5]
        t[6] += s[6]
    return total


def feature_quality(stats: dict[str, list[float]], names: Sequence[str]) -> dict[str, Any]:
    """Per-feature count, mean, population std, min, max, exact zeros; total non-finite values."""
    features = {}
    for name in names:
        n, s, s2, lo, hi, zeros, _ = stats.get(name, [0, 0, 0, 0, 0, 0, 0])
        mean = s / n if n else math.nan
        var = max(s2 / n - mean * mean, 0.0) if n else math.nan  # inf - inf: nan
        features[name] = {
            "count": int(n),
            # None where the sums overflowed (values past ~1e154): JSON has no inf
            "mean": mean if math.isfinite(mean) else None,
            "std": math.sqrt(var) if math.isfinite(var) else None,
            "min": lo if n else None,
            "max": hi if n else None,
            "zeros": int(zeros),
        }
    non_finite = int(sum(stats.get(n, [0] * 7)[6] for n in names))
    return {"non_finite": non_finite, "features": features}


@dataclass
class _Decisions:
    """Per symbol of a shard: how it is computed and what of it is written."""

    rewrite: list[str] = field(default_factory=list)
    since_delete: list[str] = field(default_factory=list)
    drop_state: list[str] = field(default_factory=list)
    paths: dict[str, str] = field(default_factory=dict)
    hashes: list[tuple[str, int, str]] = field(default_factory=list)
    resume: dict[int, np.ndarray] = field(default_factory=dict)  # block -> stored kernel state
    cutoffs: dict[str, int | None] = field(default_factory=dict)  # write rows with ts_us > cut


def _unchanged(task: ShardTask, plan: Plan, symbol: str, ts_us, cols, a: int, b: int) -> bool:
    """Whether ``symbol``'s bars up to the previous build's last bar are the ones it saw, and
    the table still holds every row that build wrote (a table emptied or edited by hand is
    rewritten, not appended to)."""
    prior = task.state.get(symbol)
    if prior is None:
        return False
    last_us, prior_n, prior_sha = prior
    if not (prior_n <= b - a and int(ts_us[a + prior_n - 1]) == last_us):
        return False
    prefix_sha = hashing.history_sha256(
        ts_us[a : a + prior_n], (c[a : a + prior_n] for c in cols.values())
    )
    expected_rows = max(prior_n - plan.warmup, 0)
    return prefix_sha == prior_sha and task.stored_rows.get(symbol, 0) == expected_rows


def _decide(task: ShardTask, plan: Plan, srt: pl.DataFrame, starts, symbols) -> tuple:
    """The :class:`_Decisions` of every symbol of the shard, and each block's first bar index
    (a streamed symbol continues its count from the bars its state has seen)."""
    ts_us = srt["ts"].dt.epoch("us").to_numpy()
    cols = {c: srt[c].to_numpy() for c in hashing.HASHED_COLUMNS}
    d = _Decisions()
    base = np.zeros(starts.shape[0] - 1, dtype=np.int64)  # index of each block's first bar
    for k, symbol in enumerate(symbols):
        a, b = int(starts[k]), int(starts[k + 1])
        sha = hashing.history_sha256(ts_us[a:b], (c[a:b] for c in cols.values()))
        streamed = task.stream.get(symbol)
        if streamed is not None:
            prior_n, blob, prior_sha = streamed
            d.resume[k] = np.frombuffer(blob, dtype="<f8")
            base[k] = prior_n
            # the history hash chains the stored one with the new bars' (not reread here)
            d.hashes.append((symbol, prior_n + b - a, hashlib.sha256(
                f"{prior_sha}+{sha}".encode()).hexdigest()))  # fmt: skip
            d.cutoffs[symbol] = None
            d.paths[symbol] = "stream"
            continue
        d.hashes.append((symbol, b - a, sha))
        unchanged = _unchanged(task, plan, symbol, ts_us, cols, a, b)
        if task.mode == "full":
            d.rewrite.append(symbol)
            d.cutoffs[symbol] = None
            d.paths[symbol] = "rewrite"
        elif task.mode == "since":
            d.since_delete.append(symbol)
            d.cutoffs[symbol] = int(task.since_us) - 1  # type: ignore[arg-type]
            d.paths[symbol] = "since"
            if not unchanged:
                d.drop_state.append(symbol)
        elif unchanged:
            d.cutoffs[symbol] = task.state[symbol][0]
            d.paths[symbol] = "recompute"
        else:
            d.rewrite.append(symbol)
            d.cutoffs[symbol] = None
            d.paths[symbol] = "rewrite"
    # streamed symbols without a new bar: nothing to compute, their stored state stays
    for symbol in sorted(set(task.stream) - set(symbols)):
        d.hashes.append((symbol, task.stream[symbol][0], task.stream[symbol][2]))
        d.paths[symbol] = "stream"
    d.hashes.sort()
    return d, base, ts_us


def _median_spacing(ts_us: np.ndarray, starts: np.ndarray, symbols, stream) -> dict[str, float]:
    out = {}
    for k, symbol in enumerate(symbols):
        a, b = int(starts[k]), int(starts[k + 1])
        if symbol not in stream and b - a >= 2:
            out[symbol] = float(np.median(np.diff(ts_us[a:b])))
    return out


def compute_shard(task: ShardTask) -> ShardResult:
    """Compute one shard's features and decide, per symbol, what to write. Pure: no I/O.

    A symbol in ``task.stream`` continues from its stored kernel state over its new bars only
    (``task.bars`` holds no older bar of it); every other symbol is computed from its first bar.
    Both give the same bytes (see :mod:`quantcli.features.engine`).
    """
    fs = load_feature_set(task.feature_set)
    plan = compile_plan(fs, task.engine)
    srt = sort_bars(task.bars)
    starts, symbols = block_starts(srt)
    d, base, ts_us = _decide(task, plan, srt, starts, symbols)
    last_us_of = {s: int(ts_us[int(starts[k + 1]) - 1]) for k, s in enumerate(symbols)}
    kplan = KernelPlan.of(fs) if task.engine == "kernel" else None
    stream_states: list[tuple[str, str, int, int, bytes, str]] = []
    if kplan is not None:
        states = kplan.init_states(len(symbols))
        for k, vec in d.resume.items():
            states[k] = vec
        skips = np.maximum(plan.warmup - base, 0)
        # cross-sectional columns stay pending: the post-stage sees every symbol's rows
        frame, states = run_frame(kplan, srt, starts, skips, states, cross_section=False)
        n_of = dict((s, n) for s, n, _sha in d.hashes)
        stream_states = [
            (symbol, kplan.layout_sha256, n_of[symbol], last_us_of[symbol],
             state_codec.encode(states[k]),
             task.fingerprints.get(symbol, ""))
            for k, symbol in enumerate(symbols)
        ]  # fmt: skip
    else:
        frame, _ = compute_sorted(srt, plan, starts)
    return ShardResult(
        rows=_rows_after(frame, d.cutoffs),
        rewrite=d.rewrite,
        since_delete=d.since_delete,
        new_state=[
            (symbol, last_us_of[symbol], n, sha)
            for symbol, n, sha in d.hashes
            if symbol not in d.drop_state and symbol in last_us_of
        ],
        drop_state=d.drop_state,
        hashes=d.hashes,
        bars_read=srt.height,
        rows_computed=frame.height,
        warmup_dropped=srt.height - frame.height,
        stats=feature_stats(frame, plan.names),
        paths=d.paths,
        stream_states=stream_states,
        drop_stream=[] if kplan is not None else list(symbols),
        median_spacing_us=_median_spacing(ts_us, starts, symbols, task.stream),
    )


def _rows_after(frame: pl.DataFrame, cutoffs: dict[str, int | None]) -> pl.DataFrame:
    """The rows of ``frame`` each symbol writes: those after its cutoff (all when ``None``)."""
    cut = pl.DataFrame(
        {
            "symbol": list(cutoffs),
            "__cut": [c if c is not None else np.iinfo(np.int64).min for c in cutoffs.values()],
        },
        schema={"symbol": pl.String, "__cut": pl.Int64},
    )
    return (
        frame.join(cut, on="symbol", how="left", maintain_order="left")
        .filter(pl.col("ts").dt.epoch("us") > pl.col("__cut"))
        .drop("__cut")
    )


__all__ = [
    "ShardResult",
    "ShardTask",
    "compute_shard",
    "feature_quality",
    "feature_stats",
    "merge_stats",
]
