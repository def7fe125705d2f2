"""The kernel engine: each kind's stateful Numba kernel over contiguous symbol blocks.

A feature set compiles into a :class:`KernelPlan`: one :class:`KernelGroup` per kernel call --
features of one TA-Lib call with equal parameters share it (``macd, macd_signal, macd_hist``;
``adx, plus_di, minus_di``; ``bb_pct, bb_width``; ``stoch_k, stoch_d``; any other feature is a
call of its own) -- in declaration order, a feature of features after the features it reads.

:meth:`KernelPlan.run` runs every group over every symbol block. Each symbol carries ONE flat
``float64`` state vector, the concatenation of its groups' kernel states (``state_size``
slots): a full build starts it from :meth:`KernelPlan.init_states`, a streaming update from the
state stored after the symbol's last computed bar, and both run the same arithmetic in the same
order, so their rows are bit-identical (the contract of :mod:`quantcli.features.kinds`).

Warm-up rows are never kept: the output holds only each block's rows after its first ``skip``
bars. Blocks run last to first, so a block's warm-up rows land, for the moment, in the columns of
the blocks before it, which overwrite them later; one kernel call covers the whole block. The
first block of a thread's range sends its warm-up bars through a small scratch buffer instead
(a kernel that continues from its own state computes what one call over the whole block would).
Symbol ranges run on threads (the kernels release the GIL); a thread pool is kept for the process.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import itertools
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from quantcli.config import env_int
from quantcli.errors import InputError
from quantcli.features import cross_section_stage
from quantcli.features.cross_section_stage import apply_frame, pending_kernel
from quantcli.features.definitions import FeatureSet
from quantcli.features.kinds import BAR_INPUTS, get_kind

_POS = "__bar"  # per-symbol bar position, 0 at each symbol's first bar


@dataclass(frozen=True)
class KernelGroup:
    """One kernel call per symbol: a kind's kernel, its params and the features it feeds.

    ``members`` maps each declared feature to its row among the kernel's ``rows`` outputs;
    ``inputs`` names bar columns (``scope == "bars"``) or features of the set (``"features"``).
    """

    name: str
    kernel: Any
    params: tuple[float, ...]
    inputs: tuple[str, ...]
    scope: str
    rows: int
    members: dict[str, int]
    init: np.ndarray  # the kernel's initial state
    row0: int  # first row of the group in the plan's output matrix
    state0: int  # first slot of the group in a symbol's state vector

    @property
    def state_size(self) -> int:
        return int(self.init.shape[0])


_KINDS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kinds")


@functools.cache
def _files_sha256(paths: tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as fh:
            body = fh.read()
        digest.update(f"{os.path.basename(path)}\0{len(body)}\0".encode())
        digest.update(body)
    return digest.hexdigest()


def kernel_code_sha256(kernels: list[Any]) -> str:
    """sha256 of the code behind ``kernels`` (Numba dispatchers or functions): the files that
    define them and every module of ``quantcli.features.kinds``.

    Files, not functions: a kernel calls step helpers and reads constants from other modules of
    the kinds, and an edit to any of them may change what a state vector means while its size
    stays the same. A state stored by other code is then never continued (the symbol is
    recomputed from its first bar); an upgrade that touches the kinds costs one full build.
    """
    paths = {os.path.join(_KINDS_DIR, f) for f in os.listdir(_KINDS_DIR) if f.endswith(".py")}
    for kernel in kernels:
        path = inspect.getsourcefile(getattr(kernel, "py_func", kernel))
        if path is not None:
            paths.add(os.path.abspath(path))
    return _files_sha256(tuple(sorted(paths)))


def _group_key(spec) -> tuple[str, Any, tuple, tuple[str, ...], int, int]:
    """(call name, kernel, params, inputs, output row, output rows) of one declared feature."""
    kind = get_kind(spec.kind, spec.name)
    if kind.kernel is None:
        raise InputError(f"feature '{spec.name}': kind '{kind.name}' has no kernel yet",
                         hint="build with --engine polars")  # fmt: skip
    params = dict(spec.params)
    pvec = tuple(kind.param_vector(params).tolist())
    if kind.scope == "cross_section":  # pending here, filled by the cross-sectional post-stage
        return kind.name, pending_kernel, pvec, (str(params["of"]),), 0, 1
    if kind.scope == "bars":
        inputs = tuple(kind.inputs)
    else:
        inputs = tuple(str(params[role]) for role in kind.inputs)
    extra = kind.extra or {}
    if "group_kernel" in extra:
        rows = extra["group_rows"]
        return (str(extra["group"]), extra["group_kernel"], pvec, inputs, int(extra["row"]),
                len(rows))  # fmt: skip
    row = kind.outputs.index(spec.output) if getattr(spec, "output", "") else 0
    return kind.name, kind.kernel, pvec, inputs, row, len(kind.outputs)


@dataclass(frozen=True)
class KernelPlan:
    """A feature set compiled for the kernel engine (see the module docstring)."""

    feature_set: FeatureSet
    groups: tuple[KernelGroup, ...]
    n_rows: int
    state_size: int

    @classmethod
    def of(cls, fs: FeatureSet) -> KernelPlan:
        cross_section_stage.check(fs)
        keyed: dict[tuple, dict[str, int]] = {}
        meta: dict[tuple, tuple] = {}
        for spec in fs.features:
            name, kernel, pvec, inputs, row, rows = _group_key(spec)
            key = (name, pvec, inputs)
            keyed.setdefault(key, {})[spec.name] = row
            meta[key] = (kernel, rows, spec)
        groups = []
        row0 = state0 = 0
        for key, members in keyed.items():
            name, pvec, inputs = key
            kernel, rows, spec = meta[key]
            kind = get_kind(spec.kind)
            init = np.ascontiguousarray(kind.init_state(dict(spec.params)), dtype=np.float64)
            groups.append(
                KernelGroup(name=name, kernel=kernel, params=pvec, inputs=inputs,
                            scope=kind.scope, rows=rows, members=members, init=init,
                            row0=row0, state0=state0)
            )  # fmt: skip
            row0 += rows
            state0 += init.shape[0]
        return cls(feature_set=fs, groups=_dependency_order(groups), n_rows=row0,
                   state_size=state0)  # fmt: skip

    @property
    def names(self) -> list[str]:
        return self.feature_set.feature_names

    @functools.cached_property
    def calls(self) -> list[tuple]:
        """Per group, what a call needs, looked up once (the engine's loop runs symbols x groups
        times): kernel, params, state slice, output rows, the bar inputs' key (or ``None``) and
        the input features' rows (features of features)."""
        where = {n: g.row0 + r for g in self.groups for n, r in g.members.items()}
        return [
            (g.kernel, np.asarray(g.params, dtype=np.float64), g.state0, g.state0 + g.state_size,
             g.row0, g.row0 + g.rows, g.inputs if g.scope == "bars" else None,
             [where[n] for n in g.inputs] if g.scope != "bars" else None)
            for g in self.groups
        ]  # fmt: skip

    @property
    def warmup(self) -> int:
        return self.feature_set.warmup

    def feature_rows(self) -> list[int]:
        """Row of each declared feature (declaration order) in the output matrix."""
        where = {n: g.row0 + r for g in self.groups for n, r in g.members.items()}
        return [where[n] for n in self.names]

    @functools.cached_property  # read once per symbol of a build: hash the layout once
    def layout_sha256(self) -> str:
        """What a stored state vector means: the calls, their params and state sizes, and the
        kernels' code (:func:`kernel_code_sha256`). A state stored under another layout (a changed
        declaration, kind or kernel) is never continued."""
        desc: list[Any] = [
            [g.name, list(g.params), list(g.inputs), g.state_size] for g in self.groups
        ]
        desc.append(kernel_code_sha256([g.kernel for g in self.groups]))
        return hashlib.sha256(json.dumps(desc).encode()).hexdigest()

    def init_states(self, n_symbols: int) -> np.ndarray:
        """``float64[n_symbols, state_size]``: every symbol before its first bar."""
        one = np.concatenate([g.init for g in self.groups]) if self.groups else np.empty(0)
        return np.tile(one, (n_symbols, 1))

    def run(
        self,
        bars: dict[str, np.ndarray],
        starts: np.ndarray,
        skips: np.ndarray,
        states: np.ndarray,
        threads: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Run every group over symbol blocks, continuing each symbol's ``states`` row in place.

        ``bars`` are float64[N] columns by name, contiguous per symbol (blocks at ``starts``,
        int64[S + 1]); block ``s``'s first ``skips[s]`` bars are computed but not returned.
        Returns ``(out, out_starts)``: ``out`` is float64[n_rows, kept] (see
        :meth:`feature_rows`), block ``s``'s kept rows at ``out_starts[s]``.
        """
        n_sym = starts.shape[0] - 1
        lengths = np.diff(starts)
        skips = np.minimum(np.maximum(skips, 0), lengths)
        out_starts = np.zeros(n_sym + 1, dtype=np.int64)
        np.cumsum(lengths - skips, out=out_starts[1:])
        out = np.empty((self.n_rows, int(out_starts[-1])), dtype=np.float64)
        # Fault the pages in here, one thread: two kernel threads faulting the fresh pages of
        # one mapping at once contend in the kernel, and that system time outgrew the kernels'
        out.reshape(-1)[::512] = 0.0
        # the bar columns the groups read, in BAR_INPUTS order; a group whose inputs are
        # consecutive in it (high, low, close; close, volume; ...) reads a view of their rows
        used = {c for g in self.groups if g.scope == "bars" for c in g.inputs}
        order = [c for c in BAR_INPUTS if c in used]
        columns = [bars[c] for c in order]
        rows_of: dict[tuple[str, ...], slice | list[int]] = {}
        for g in self.groups:
            if g.scope == "bars" and g.inputs not in rows_of:
                first = order.index(g.inputs[0])
                if tuple(order[first : first + len(g.inputs)]) == g.inputs:
                    rows_of[g.inputs] = slice(first, first + len(g.inputs))
                else:
                    rows_of[g.inputs] = [order.index(c) for c in g.inputs]
        ranges = thread_ranges(starts, threads if threads is not None else n_threads())

        def work(lo: int, hi: int) -> None:
            _run_range(self, columns, rows_of, starts, skips, out_starts, states, out, lo, hi)

        if len(ranges) == 1:
            work(*ranges[0])
        else:
            pool = _kernel_pool(len(ranges))
            for fut in [pool.submit(work, lo, hi) for lo, hi in ranges]:
                fut.result()
        return out, out_starts


def _dependency_order(groups: list[KernelGroup]) -> tuple[KernelGroup, ...]:
    """Groups in declaration order, each feature-of-features group after the groups that
    produce its inputs (:class:`InputError` on a cycle or an unknown input)."""
    producer = {n: g for g in groups for n in g.members}
    done: list[KernelGroup] = []
    seen: set[int] = set()

    def visit(g: KernelGroup, path: tuple[str, ...]) -> None:
        if id(g) in seen:
            return
        if g.name in path:
            raise InputError(f"features read each other in a cycle: {' -> '.join(path)}")
        if g.scope == "features":
            for name in g.inputs:
                if name not in producer:
                    raise InputError(f"kind '{g.name}' reads '{name}', not a feature of the set")
                visit(producer[name], (*path, g.name))
        seen.add(id(g))
        done.append(g)

    for g in groups:
        visit(g, ())
    return tuple(done)


#: Bars copied at a time into a thread's staging matrix of the bar columns (float64 rows):
#: sized to stay in a core's cache while every group reads them.
STAGE_BARS = 16_384


def _run_range(plan, columns, rows_of, starts, skips, out_starts, states, out, lo, hi) -> None:
    """Symbols ``lo .. hi - 1`` (one thread): see the module docstring."""
    width = int(skips[lo:hi].max()) if hi > lo else 0
    scratch = np.empty((plan.n_rows, width), dtype=np.float64)
    cap = max(STAGE_BARS, int(np.diff(starts[lo : hi + 1]).max())) if hi > lo else 0
    stage = np.empty((len(columns), cap), dtype=np.float64)
    base = int(out_starts[lo])
    c1 = hi
    # Chunks of whole symbols are copied into ``stage`` (rather than all bars into one matrix
    # up front): the groups then read their inputs from cache, and no bars are copied to fresh
    # memory. Chunks and their symbols run last to first (see _run_block).
    while c1 > lo:
        top = int(starts[c1])
        c0 = int(np.searchsorted(starts, top - cap, side="left"))
        c0 = min(max(c0, lo), c1 - 1)
        bottom = int(starts[c0])
        for r, col in enumerate(columns):
            stage[r, : top - bottom] = col[bottom:top]
        calls = [
            (*c[:6], stage[rows_of[c[6]], : top - bottom] if c[6] is not None else None, c[7])
            for c in plan.calls
        ]
        for s in range(c1 - 1, c0 - 1, -1):
            _run_block(calls, s, int(starts[s]) - bottom, int(starts[s + 1]) - bottom, skips,
                       out_starts, states, out, scratch, base)  # fmt: skip
        c1 = c0


def _run_block(calls, s, a, b, skips, out_starts, states, out, scratch, base) -> None:
    """Every group over symbol ``s``, its bars at columns ``a .. b - 1`` of the groups' inputs.

    Symbols run last to first: a block's warm-up rows then fit in the output columns of the
    blocks before it in the range (written after it), so one kernel call covers the whole
    block instead of a warm-up call into the scratch buffer and a second one. The range's
    first block (whose warm-up would reach another thread's columns) keeps the two calls.
    """
    w = int(skips[s])
    o = int(out_starts[s])
    kept = b - a - w
    state = states[s]
    if b > a and (w == 0 or o - w >= base):
        p = o - w
        for kernel, pv, s0, s1, r0, r1, x, rows in calls:
            if x is not None:
                kernel(x[:, a:b], pv, state[s0:s1], out[r0:r1, p : o + kept])
            else:  # a feature of features: its inputs are rows computed just before
                kernel(np.stack([out[r, p : o + kept] for r in rows]), pv, state[s0:s1],
                       out[r0:r1, p : o + kept])  # fmt: skip
        return
    for kernel, pv, s0, s1, r0, r1, x, rows in calls:
        st = state[s0:s1]
        if x is not None:
            if w:
                kernel(x[:, a : a + w], pv, st, scratch[r0:r1, :w])
            if kept:
                kernel(x[:, a + w : b], pv, st, out[r0:r1, o : o + kept])
        else:
            if w:
                kernel(np.stack([scratch[r, :w] for r in rows]), pv, st, scratch[r0:r1, :w])
            if kept:
                kernel(np.stack([out[r, o : o + kept] for r in rows]), pv, st,
                       out[r0:r1, o : o + kept])  # fmt: skip


def bar_arrays(sorted_bars: pl.DataFrame) -> dict[str, np.ndarray]:
    """Zero-copy float64 views of the bar columns the kinds read."""
    return {
        c: np.ascontiguousarray(sorted_bars[c].to_numpy(), dtype=np.float64)
        for c in BAR_INPUTS
        if c in sorted_bars.columns
    }


def run_frame(
    plan: KernelPlan,
    sorted_bars: pl.DataFrame,
    starts: np.ndarray,
    skips: np.ndarray | None = None,
    states: np.ndarray | None = None,
    cross_section: bool = True,
) -> tuple[pl.DataFrame, np.ndarray]:
    """``symbol, ts, <features>`` of ``sorted_bars`` from bar ``skips[s]`` of each block on
    (default: the set's warm-up), and the symbols' states after their last bar (continued from
    ``states`` when given, else from the start). Cross-sectional features are computed over the
    frame's rows, or left NaN when not ``cross_section`` (a build's shard: the build fills them)."""
    n_sym = starts.shape[0] - 1
    if skips is None:
        skips = np.full(n_sym, plan.warmup, dtype=np.int64)
    if states is None:
        states = plan.init_states(n_sym)
    out, _ = plan.run(bar_arrays(sorted_bars), starts, skips, states)
    lengths = np.diff(starts)
    kept_skip = np.minimum(np.maximum(skips, 0), lengths)
    keys = _kept_keys(sorted_bars.select("symbol", "ts"), starts, kept_skip)
    cols = {name: out[row] for name, row in zip(plan.names, plan.feature_rows(), strict=True)}
    frame = keys.hstack(pl.DataFrame(cols))
    if not cross_section:
        return frame, states
    return apply_frame(frame, plan.feature_set), states


#: Kept rows a block must average for the keys to be taken as zero-copy slices (one chunk a
#: block) rather than filtered into fresh columns.
SLICE_ROWS = 4096


def _kept_keys(keys: pl.DataFrame, starts: np.ndarray, skips: np.ndarray) -> pl.DataFrame:
    """The rows of ``keys`` after each block's first ``skips`` rows.

    Long blocks are sliced, not filtered: a filter writes the symbol strings and timestamps of
    every kept row into fresh memory, whose page faults cost more than the copy; slices share
    the bars' buffers. Short blocks (a
    streaming update's few bars per symbol) are filtered, so a frame never holds one chunk per
    few rows."""
    lengths = np.diff(starts)
    n_sym = lengths.shape[0]
    kept = int(lengths.sum() - skips.sum())
    if not skips.any():
        return keys
    if n_sym and kept >= SLICE_ROWS * n_sym:
        parts = [keys.slice(int(a + w), int(n - w))
                 for a, w, n in zip(starts[:-1], skips, lengths, strict=True) if n > w]  # fmt: skip
        return pl.concat(parts, rechunk=False)
    # per block: skipped rows (False), then kept ones (True)
    runs = np.stack([skips, lengths - skips], axis=1).ravel()
    return keys.filter(pl.Series(np.repeat(np.tile(np.array([False, True]), n_sym), runs)))


def lazy_kernel_features(sorted_bars: pl.DataFrame, fs: FeatureSet, starts: np.ndarray):
    """The kernel engine as a lazy plan: the kept rows' keys, then ONE Python function
    (``map_batches``) that runs every group and returns a struct of the features."""
    plan = KernelPlan.of(fs)
    if any(g.scope == "cross_section" for g in plan.groups):  # needs every row: eager
        return run_frame(plan, sorted_bars, starts)[0].lazy()
    lengths = np.diff(starts)
    position = np.arange(int(starts[-1]), dtype=np.int64) - np.repeat(starts[:-1], lengths)
    skips = np.full(lengths.shape[0], fs.warmup, dtype=np.int64)
    names = plan.names
    dtype = pl.Struct(dict.fromkeys(names, pl.Float64))

    def compute(pos: pl.Series) -> pl.Series:
        states = plan.init_states(lengths.shape[0])
        out, _ = plan.run(bar_arrays(sorted_bars), starts, skips, states)
        rows = plan.feature_rows()
        return pl.DataFrame({n: out[r] for n, r in zip(names, rows, strict=True)}).to_struct(
            "__features"
        )

    features = pl.col(_POS).map_batches(compute, return_dtype=dtype).alias("__features")
    return (
        sorted_bars.lazy()
        .with_columns(pl.lit(pl.Series(_POS, position)))
        .filter(pl.col(_POS) >= fs.warmup)
        .select("symbol", "ts", features)
        .unnest("__features")
    )


def n_threads() -> int:
    """Threads for the kernels: ``QCLI_FEATURE_THREADS`` or the number of CPUs."""
    # checked: a negative count is refused, not silently read as 1
    return env_int("QCLI_FEATURE_THREADS", max(1, os.cpu_count() or 1), lo=1, hi=1024)


def thread_ranges(starts: np.ndarray, threads: int) -> list[tuple[int, int]]:
    """Split the symbol blocks into at most ``threads`` contiguous ranges of similar row count."""
    n_sym = starts.shape[0] - 1
    if threads <= 1 or n_sym <= 1 or starts[-1] < 20_000:
        return [(0, n_sym)]
    targets = starts[-1] * np.arange(1, threads) / threads
    cuts = np.unique(np.clip(np.searchsorted(starts, targets), 1, n_sym - 1))
    edges = [0, *cuts.tolist(), n_sym]
    return [(int(a), int(b)) for a, b in itertools.pairwise(edges) if b > a]


_POOLS: dict[int, ThreadPoolExecutor] = {}


def _kernel_pool(threads: int) -> ThreadPoolExecutor:
    """A thread pool kept for the process (fresh threads per evaluation cost more than the
    kernels on small frames)."""
    pool = _POOLS.get(threads)
    if pool is None:
        pool = _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="qcli-kernel")
    return pool


def _forget_pools() -> None:
    # a forked child inherits the pools' bookkeeping but not their threads
    _POOLS.clear()


os.register_at_fork(after_in_child=_forget_pools)
