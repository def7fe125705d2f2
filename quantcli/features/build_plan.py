"""What a feature build reads and how it cuts the work: shards, waves, and streamed symbols.

The driver of :func:`~quantcli.features.build.build_features` asks this module, inside the
build's transaction, for the bars per symbol and their fingerprints, the rows each symbol has
in the table, which symbols continue from their stored kernel state (:func:`stream_plan`), the
shards (whole symbols, about ``shard_rows`` bars each) and how many run per wave
(:func:`wave_size`), and finally each shard's bars.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import polars as pl

from quantcli import resources
from quantcli.errors import InputError
from quantcli.features import state_codec
from quantcli.features.blocks import block_starts
from quantcli.features.build_writer import scalar
from quantcli.features.definitions import FeatureSet
from quantcli.features.engine import KernelPlan
from quantcli.features.shard import ShardTask
from quantcli.store.export import to_utc

#: Shards in flight per executor worker: two, so a worker that finishes a small shard picks up
#: another while the wave's largest one still runs.
SHARDS_PER_WORKER = 2
#: Bytes of bars and features the shards in memory may hold: the driver keeps a wave's results
#: until they are written, and the next wave's bars and results meanwhile (two waves alive, so
#: each wave gets half; see :func:`wave_size`).
WAVE_MEMORY_BYTES = 2 * 1024**3


def plan_shards(counts: list[tuple[str, int]], shard_rows: int) -> list[list[tuple[str, int]]]:
    shards: list[list[tuple[str, int]]] = []
    current: list[tuple[str, int]] = []
    rows = 0
    for symbol, n in counts:
        if current and rows + n > shard_rows:
            shards.append(current)
            current, rows = [], 0
        current.append((symbol, n))
        rows += n
    if current:
        shards.append(current)
    return shards


def wave_size(workers: int, shard_rows: int, n_features: int, waves_alive: int = 1) -> int:
    """Shards computed between two writes: ``SHARDS_PER_WORKER`` per executor worker (so Ray
    uses every CPU of its cluster), at most as many as fit in ``WAVE_MEMORY_BYTES``.

    A shard holds ``shard_rows`` bars (7 columns) and as many feature rows (``n_features`` + 2
    columns), 8 bytes a value. ``waves_alive`` waves share the budget: :func:`build_features`
    passes 2, since while one wave is written the next one computes (its bars and its results
    are in memory together with the rows still waiting for the writer).

    >>> wave_size(workers=1, shard_rows=250_000, n_features=29)
    2
    >>> wave_size(workers=64, shard_rows=250_000, n_features=29)  # 2 GB / 76 MB per shard
    28
    >>> wave_size(workers=64, shard_rows=250_000, n_features=29, waves_alive=2)  # 1 GB each
    14
    """
    if workers < 1:
        raise InputError(f"`workers` must be at least 1, got `workers={workers}`.")
    if waves_alive < 1:
        raise InputError(f"`waves_alive` must be at least 1, got `waves_alive={waves_alive}`.")
    shard_bytes = max(1, shard_rows) * (7 + n_features + 2) * 8
    by_memory = max(1, WAVE_MEMORY_BYTES // (shard_bytes * waves_alive))
    return int(max(1, min(SHARDS_PER_WORKER * workers, by_memory)))


def table_ident(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise InputError(f"'{name}' is not a valid table name")
    return name


def shard_bars(con, shard, scoped: bool, stream: dict, new_bars: pl.DataFrame | None):
    """One shard's bars: the whole history of its symbols that are not streamed (read from the
    store), the new bars of those that are (read once for the build by :func:`stream_plan`)."""
    parts = []
    if any(s not in stream for s, _ in shard):
        parts.append(_read_bars(con, shard, scoped or bool(stream), bool(stream)))
    if new_bars is not None and any(s in stream for s, _ in shard):
        parts.append(new_bars.filter(pl.col("symbol").is_in([s for s, _ in shard if s in stream])))
    return parts[0] if len(parts) == 1 else pl.concat(parts)


def _read_bars(con, shard: list[tuple[str, int]], scoped: bool, cut: bool = False) -> pl.DataFrame:
    """One shard's bars (its symbols' whole history) from the store, inside the transaction;
    with ``cut`` without the streamed symbols (the ``stream_cut`` table)."""
    query = resources.sql("features_read_bars_after" if cut else "features_read_bars")
    bars = con.sql(query, params=[shard[0][0], shard[-1][0]]).pl()
    if scoped:  # --symbols: the name range may hold symbols outside the build
        bars = bars.filter(pl.col("symbol").is_in([s for s, _ in shard]))
    return bars


def stored_rows(con, table: str, state: dict, warmup: int) -> dict[str, int]:
    """Rows per symbol in the feature table.

    When the table holds exactly the rows the recorded builds wrote (its total row count, which
    DuckDB answers from its row-group metadata, equals the sum over ``feature_build_state`` of
    ``n_bars - warmup``), those are the counts; any difference (rows deleted or added by hand,
    rows kept after a state was dropped) falls back to counting per symbol, a scan of the table.
    """
    total = scalar(con, f"SELECT count(*) FROM {table}")
    expected = {s: max(n - warmup, 0) for s, (_ts, n, _sha) in state.items()}
    if total == sum(expected.values()):
        return {s: n for s, n in expected.items() if n}
    query = f"SELECT symbol, count(*) FROM {table} GROUP BY symbol"
    return {str(sym): int(n) for sym, n in con.execute(query).fetchall()}


def bar_fingerprints(store) -> tuple[list[tuple[str, int]], dict[str, tuple[int, int]], bool]:
    """``(counts, fingerprints, stale)``: bars per symbol, ``symbol -> (hash sum, hash xor)`` of
    its bars, and whether ``bar_fingerprints`` must be recomputed.

    Ingest keeps ``bar_fingerprints`` in the transaction that writes the bars, so it is read in
    O(symbols). A store from before that table, or bars written past ingest (their total no
    longer matches), are scanned instead (``features_bar_fingerprints.sql``) and ``stale`` is set.
    """
    if store.table_exists("bar_fingerprints"):
        rows = store.query("bar_fingerprints_read").fetchall()
        if rows and sum(int(r[1]) for r in rows) == int(rows[0][4]):
            counts = [(str(s), int(n)) for s, n, *_ in rows]
            return counts, {str(s): (int(a), int(x)) for s, _n, a, x, _t in rows}, False
    rows = store.query("features_bar_fingerprints").fetchall()
    counts = [(str(s), int(n)) for s, n, _sum, _xor in rows]
    return counts, {str(s): (int(a), int(x)) for s, _n, a, x in rows}, True


def stream_plan(con, fs, engine, mode, counts, state, stored_rows, fingerprints):
    """Which symbols continue from their stored kernel state, and their new bars.

    Returns ``(stream, new_bars)``: ``stream`` maps a symbol to (bars already computed, state
    bytes, history hash) when the build is incremental with the kernel engine, the state belongs
    to the current plan layout, the table still holds every row written for it, and the
    symbol's bars up to the state's last bar are unchanged: as many as the state has seen, with
    the fingerprint stored with it (``features_bar_fingerprints.sql``; the prefix's is all bars'
    minus the new bars'). Revised, back-filled or deleted bars change it. ``new_bars`` holds the
    streamed symbols' bars after their state (``None`` without a streamed symbol); the
    ``stream_cut`` table (the streamed symbols) stays registered for :func:`_read_bars`.
    """
    if engine != "kernel" or mode != "incremental":
        return {}, None
    kplan = KernelPlan.of(fs)
    layout, size = kplan.layout_sha256, kplan.state_size
    stored = {
        str(sym): (str(lay), int(n), state_codec.decode(blob, codec, size), str(fp))
        for sym, lay, n, _ts, blob, fp, codec in con.execute(
            resources.sql("features_stream_state"), [fs.name]
        ).fetchall()
    }
    candidates = []
    for sym, n_all in counts:
        st, prior = stored.get(sym), state.get(sym)
        if st is None or prior is None or st[0] != layout or st[2] is None or not st[3]:
            continue
        if st[1] == prior[1] <= n_all and stored_rows.get(sym, 0) == max(st[1] - fs.warmup, 0):
            candidates.append(sym)
    if not candidates:
        return {}, None
    _register_cut(con, [(s, state[s][0]) for s in candidates])
    new = con.sql(resources.sql("features_new_bars")).pl()
    starts = np.zeros(1, dtype=np.int64)
    syms: list[str] = []
    if new.height:
        starts, syms = block_starts(new)
    h = new["__hash"].to_numpy().astype(np.uint64)
    lo, hi = (h & np.uint64(0xFFFFFFFF)).astype(np.uint64), (h >> np.uint64(32)).astype(np.uint64)
    new_fp: dict[str, tuple[int, int, int]] = {}  # symbol -> (bars, hash sum, hash xor)
    if syms:  # per-block reductions in one call each (every block holds at least one bar)
        at = starts[:-1]
        lo_sum, hi_sum = np.add.reduceat(lo, at), np.add.reduceat(hi, at)
        xor, n_bars = np.bitwise_xor.reduceat(h, at), np.diff(starts)
        for k, sym in enumerate(syms):
            total = (int(hi_sum[k]) << 32) + int(lo_sum[k])
            new_fp[sym] = (int(n_bars[k]), total, int(xor[k]))
    stream: dict[str, tuple[int, bytes, str]] = {}
    n_all = dict(counts)
    for sym in candidates:
        _lay, n, blob, fp = stored[sym]
        n_new, sum_new, xor_new = new_fp.get(sym, (0, 0, 0))
        fp_sum, fp_xor = fingerprints[sym]
        prefix = f"{fp_sum - sum_new}/{fp_xor ^ xor_new}"
        if n_all[sym] - n_new == n and prefix == fp:
            stream[sym] = (n, blob, state[sym][2])
    con.unregister("stream_cut")
    if not stream:
        return {}, None
    _register_cut(con, [(s, state[s][0]) for s in stream])
    return stream, new.filter(pl.col("symbol").is_in(list(stream))).drop("__hash")


def _register_cut(con, rows: list[tuple[str, int]]) -> None:
    cut = pl.DataFrame(
        rows, schema={"symbol": pl.String, "last_us": pl.Int64}, orient="row"
    ).select("symbol", pl.from_epoch("last_us", time_unit="us").dt.replace_time_zone("UTC")
             .alias("last_bar_ts"))  # fmt: skip
    con.register("stream_cut", cut.to_arrow())


def stored_engine(con, feature_set: str, table: str) -> str | None:
    """The engine of the newest build of ``table``: every stored row was computed by it, since a
    build with another engine must rewrite the whole table. ``None`` without a recorded build."""
    row = con.execute(resources.sql("features_stored_engine"), [feature_set, table]).fetchall()
    return str(row[0][0]) if row else None


@dataclass(frozen=True)
class BuildOptions:
    """The checked options of one build (:func:`~quantcli.features.build.build_features`)."""

    fs: FeatureSet
    table: str
    mode: str  # full | incremental | since
    since_dt: datetime | None
    engine: str
    symbols: tuple[str, ...]

    @property
    def scoped(self) -> bool:
        return bool(self.symbols)

    @property
    def since_us(self) -> int | None:
        return int(self.since_dt.timestamp() * 1_000_000) if self.since_dt is not None else None


@dataclass
class BuildScope:
    """What the driver knows before the first wave: the stored state of every symbol in scope."""

    counts: list[tuple[str, int]]
    state: dict[str, tuple[int, int, str]]
    stored_rows: dict[str, int]
    stream: dict[str, tuple[int, bytes, str]]
    new_bars: pl.DataFrame | None
    fingerprints: dict[str, str]
    shards: list[list[tuple[str, int]]]
    previous_engine: str | None


#: how the refusal of an engine switch names a build that is not a full rebuild of every symbol
_PARTIAL = {"incremental": "an incremental", "since": "a --since", "full": "a --symbols"}


def read_scope(
    con, opts: BuildOptions, counts, fingerprints, shard_rows: int, timings
) -> BuildScope:
    """Read the previous builds' state, decide which symbols stream, cut the shards; refuse an
    engine switch that is not a full rebuild of every symbol."""
    t0 = time.perf_counter()
    state = {
        s: (int(ts.timestamp() * 1_000_000), int(n), sha)
        for s, ts, n, sha in con.execute(resources.sql("features_state"), [opts.fs.name])
        .fetchall()
    }  # fmt: skip
    rows = stored_rows(con, opts.table, state, opts.fs.warmup)
    stream, new_bars = stream_plan(
        con, opts.fs, opts.engine, opts.mode, counts, state, rows, fingerprints
    )
    timings["stream_check"] = round(time.perf_counter() - t0, 4)
    # a streamed symbol's shard holds only its new bars
    shards = plan_shards(
        [(s, n - stream[s][0] if s in stream else n) for s, n in counts], shard_rows
    )
    previous = stored_engine(con, opts.fs.name, opts.table) if rows else None
    if previous not in (None, opts.engine) and (opts.mode != "full" or opts.scoped):
        name = opts.fs.name
        raise InputError(
            f"--engine {opts.engine}: {opts.table} holds rows built by engine {previous}; "
            f"{'a --symbols' if opts.scoped else _PARTIAL[opts.mode]} build would mix the two "
            "engines' values in one table",
            hint="rebuild every symbol: qcli features build --full --engine "
            + opts.engine
            + ("" if name == "technical_v1" else f" --feature-set {name}"),
        )
    fp_text = {s: f"{fp_sum}/{fp_xor}" for s, (fp_sum, fp_xor) in fingerprints.items()}
    return BuildScope(counts, state, rows, stream, new_bars, fp_text, shards, previous)


def shard_tasks(con, opts: BuildOptions, scope: BuildScope, wave: list[list[tuple[str, int]]]):
    """The :class:`ShardTask` of each shard of ``wave``, its bars read from the store."""
    return [
        ShardTask(
            feature_set=opts.fs.name,
            bars=shard_bars(con, shard, opts.scoped, scope.stream, scope.new_bars),
            mode=opts.mode,
            since_us=opts.since_us,
            state={s: scope.state[s] for s, _ in shard if s in scope.state},
            stored_rows={s: scope.stored_rows[s] for s, _ in shard if s in scope.stored_rows},
            engine=opts.engine,
            stream={s: scope.stream[s] for s, _ in shard if s in scope.stream},
            fingerprints={s: scope.fingerprints[s] for s, _ in shard if s in scope.fingerprints},
        )
        for shard in wave
    ]


__all__ = [
    "SHARDS_PER_WORKER",
    "WAVE_MEMORY_BYTES",
    "BuildOptions",
    "BuildScope",
    "bar_fingerprints",
    "plan_shards",
    "read_scope",
    "shard_bars",
    "shard_tasks",
    "stored_engine",
    "stored_rows",
    "stream_plan",
    "table_ident",
    "to_utc",
    "wave_size",
]
