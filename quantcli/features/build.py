"""Build a feature table in the offline store from ``bars``: sharded, incremental, one transaction.

Flow of :func:`build_features`:

1. Plan shards: the symbols in scope, in name order, cut into shards of about
   ``shard_rows`` bars (whole symbols only). A symbol that streams (below) counts its new bars
   only.
2. For each shard the driver reads the bars from DuckDB and hands them to
   :func:`compute_shard`, a pure top-level function mapped through
   :func:`quantcli.scale.get_executor` (``local`` or ``ray``) in waves of
   :func:`wave_size` shards -- two per executor worker, capped so the waves in memory fit in
   ``WAVE_MEMORY_BYTES`` -- so memory stays bounded (a 25 M bar build never holds all bars).
3. The one writer (:class:`_WaveWriter`) deletes stale rows and inserts the new ones, in shard
   order, on a background thread: it writes wave *k* while the executor computes wave *k + 1*
   (two waves alive, hence ``waves_alive=2`` in the memory cap). The connection is used by one
   thread at a time (the driver reads the next wave's bars before handing a wave to the writer
   and joins it before reading again). ``overlap=False`` alternates compute and write instead;
   the bytes written are the same.
4. The writes, ``feature_build_state``, the kernels' states (``feature_stream_state``) and the
   ``feature_builds`` record are ONE transaction: a failed build (a shard, the writer, Ctrl-C)
   stops the writer, waits for its thread, and rolls back -- the store is exactly as it was, and
   the wave computed meanwhile is never written.

Modes and paths, per symbol (``BuildResult.paths``):

* ``incremental`` (default): if the symbol's bars up to the last bar the previous build saw are
  unchanged, only rows with ``ts`` after that bar are written. With the kernel engine the symbol
  then continues from its stored kernel state over its new bars only (path ``stream``: see
  :func:`_stream_plan` for the checks), else it is recomputed from its first bar (``recompute``);
  otherwise (bars revised or back-filled, or a first build) the symbol is rewritten
  (``rewrite``). The table is then identical to a full rebuild, bit for bit.
* ``full``: every symbol in scope is deleted and rewritten.
* ``since``: rows with ``ts >= since`` are deleted and rewritten; older rows are kept.

Engines (``engine=``, ``qcli features build --engine``): ``kernel`` (default; the Numba kernels,
bit-identical to TA-Lib) or ``polars`` (native Polars expressions; agrees with ``kernel`` to rtol
1e-9, not to the bit). The engine is recorded in ``feature_builds``. It is not part of the
feature version (both engines compute the same declared features, so the table stays
``technical_features_v1``), but a table holds one engine's bytes only: a build whose engine
differs from the engine of the stored rows must be ``full`` over every symbol (else
:class:`~quantcli.errors.InputError`), so an incremental, ``--since`` or ``--symbols`` build never
appends one engine's rows to the other's.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from quantcli import __version__, resources
from quantcli.config import env_memory_limit
from quantcli.errors import InputError, NotFoundError
from quantcli.features import cross_section_stage, hashing, released
from quantcli.features.compute import block_starts, compile_plan, compute_sorted, sort_bars
from quantcli.features.definitions import load_feature_set
from quantcli.features.engine import KernelPlan, run_frame
from quantcli.features.expressions import DEFAULT_ENGINE, check_engine
from quantcli.store.offline import OfflineStore, staging_prefix

#: Bars per shard (whole symbols): 250 k bars x 31 columns of float64 is ~60 MB of features.
DEFAULT_SHARD_ROWS = 250_000
#: Shards in flight per executor worker: two, so a worker that finishes a small shard picks up
#: another while the wave's largest one still runs.
SHARDS_PER_WORKER = 2
#: Bytes of bars and features the shards in memory may hold: the driver keeps a wave's results
#: until they are written, and the next wave's bars and results meanwhile (two waves alive, so
#: each wave gets half; see :func:`wave_size`).
WAVE_MEMORY_BYTES = 2 * 1024**3

ProgressFn = Callable[[int, int], None]

#: DuckDB's memory_limit while a build runs (``QCLI_BUILD_MEMORY_LIMIT``); bounds its buffer pool
#: so a 25 M row build stays under 6 GB (measured: 4.55 GB peak RSS at 4GB; 2GB made the 25 M
#: build 3.3x slower than 12.5 M). The previous setting is restored afterwards.
ENV_MEMORY_LIMIT = "QCLI_BUILD_MEMORY_LIMIT"
DEFAULT_MEMORY_LIMIT = "4GB"


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


def _stats(frame: pl.DataFrame, names: Sequence[str]) -> dict[str, list[float]]:
    """Mergeable per-feature stats: [count, sum, sum of squares, min, max, zeros, non-finite]."""
    out: dict[str, list[float]] = {}
    for name in names:
        v = frame[name].to_numpy()
        finite = np.isfinite(v)
        f = v[finite]
        out[name] = [
            float(f.size),
            float(f.sum()),
            float((f * f).sum()),
            float(f.min()) if f.size else float("inf"),
            float(f.max()) if f.size else float("-inf"),
            float((f == 0.0).sum()),
            float(v.size - f.size),
        ]
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
    starts, _symbols = block_starts(srt)
    ts_us = srt["ts"].dt.epoch("us").to_numpy()
    cols = {c: srt[c].to_numpy() for c in hashing.HASHED_COLUMNS}
    kplan = KernelPlan.of(fs) if task.engine == "kernel" else None
    layout = kplan.layout_sha256 if kplan is not None else ""

    rewrite: list[str] = []
    since_delete: list[str] = []
    drop_state: list[str] = []
    paths: dict[str, str] = {}
    hashes: list[tuple[str, int, str]] = []
    resume: dict[int, np.ndarray] = {}  # block -> stored kernel state to continue from
    base = np.zeros(starts.shape[0] - 1, dtype=np.int64)  # index of each block's first bar
    cutoffs: dict[str, int | None] = {}  # symbol -> write rows with ts_us > cutoff (None: all)
    for k, symbol in enumerate(_symbols):
        a, b = int(starts[k]), int(starts[k + 1])
        sha = hashing.history_sha256(ts_us[a:b], (c[a:b] for c in cols.values()))
        streamed = task.stream.get(symbol)
        if streamed is not None:
            prior_n, blob, prior_sha = streamed
            resume[k] = np.frombuffer(blob, dtype="<f8")
            base[k] = prior_n
            # the history hash chains the stored one with the new bars' (not reread here)
            hashes.append((symbol, prior_n + b - a, hashlib.sha256(
                f"{prior_sha}+{sha}".encode()).hexdigest()))  # fmt: skip
            cutoffs[symbol] = None
            paths[symbol] = "stream"
            continue
        hashes.append((symbol, b - a, sha))
        prior = task.state.get(symbol)
        unchanged = False
        if prior is not None:
            last_us, prior_n, prior_sha = prior
            if prior_n <= b - a and int(ts_us[a + prior_n - 1]) == last_us:
                prefix_sha = hashing.history_sha256(
                    ts_us[a : a + prior_n], (c[a : a + prior_n] for c in cols.values())
                )
                # the table must also still hold every row the previous build wrote (a table
                # emptied or edited by hand is rewritten, not appended to)
                expected_rows = max(prior_n - plan.warmup, 0)
                unchanged = (
                    prefix_sha == prior_sha and task.stored_rows.get(symbol, 0) == expected_rows
                )
        if task.mode == "full":
            rewrite.append(symbol)
            cutoffs[symbol] = None
            paths[symbol] = "rewrite"
        elif task.mode == "since":
            since_delete.append(symbol)
            cutoffs[symbol] = int(task.since_us) - 1  # type: ignore[arg-type]
            paths[symbol] = "since"
            if not unchanged:
                drop_state.append(symbol)
        elif unchanged:
            cutoffs[symbol] = prior[0]  # type: ignore[index]
            paths[symbol] = "recompute"
        else:
            rewrite.append(symbol)
            cutoffs[symbol] = None
            paths[symbol] = "rewrite"
    last_us_of = {s: int(ts_us[int(starts[k + 1]) - 1]) for k, s in enumerate(_symbols)}
    # streamed symbols without a new bar: nothing to compute, their stored state stays
    idle = sorted(set(task.stream) - set(_symbols))
    for symbol in idle:
        hashes.append((symbol, task.stream[symbol][0], task.stream[symbol][2]))
        paths[symbol] = "stream"
    hashes.sort()

    stream_states: list[tuple[str, str, int, int, bytes, str]] = []
    if kplan is not None:
        states = kplan.init_states(len(_symbols))
        for k, vec in resume.items():
            states[k] = vec
        skips = np.maximum(plan.warmup - base, 0)
        # cross-sectional columns stay pending: the post-stage sees every symbol's rows
        frame, states = run_frame(kplan, srt, starts, skips, states, cross_section=False)
        n_of = dict((s, n) for s, n, _sha in hashes)
        stream_states = [
            (symbol, layout, n_of[symbol], last_us_of[symbol], states[k].tobytes(),
             task.fingerprints.get(symbol, ""))
            for k, symbol in enumerate(_symbols)
        ]  # fmt: skip
    else:
        frame, _ = compute_sorted(srt, plan, starts)
    warmup_dropped = srt.height - frame.height

    cut = pl.DataFrame(
        {
            "symbol": list(cutoffs),
            "__cut": [c if c is not None else np.iinfo(np.int64).min for c in cutoffs.values()],
        },
        schema={"symbol": pl.String, "__cut": pl.Int64},
    )
    rows = (
        frame.join(cut, on="symbol", how="left", maintain_order="left")
        .filter(pl.col("ts").dt.epoch("us") > pl.col("__cut"))
        .drop("__cut")
    )
    new_state = [
        (symbol, last_us_of[symbol], n, sha)
        for symbol, n, sha in hashes
        if symbol not in drop_state and symbol in last_us_of
    ]
    return ShardResult(
        rows=rows,
        rewrite=rewrite,
        since_delete=since_delete,
        new_state=new_state,
        drop_state=drop_state,
        hashes=hashes,
        bars_read=srt.height,
        rows_computed=frame.height,
        warmup_dropped=warmup_dropped,
        stats=_stats(frame, plan.names),
        paths=paths,
        stream_states=stream_states,
        drop_stream=[] if kplan is not None else list(_symbols),
    )


@dataclass
class BuildResult:
    """What one feature build did (also the ``--json`` output of ``qcli features build``)."""

    build_id: str
    built_at: datetime
    feature_set: str
    feature_version: int
    table: str
    mode: str
    input_sha256: str
    symbols: list[str]
    bars_read: int
    rows_computed: int
    rows_written: int
    rows_deleted: int
    warmup_rows_dropped: int
    symbols_rewritten: list[str]
    quality: dict[str, Any]
    timings_s: dict[str, float] = field(default_factory=dict)
    executor: str = "local"
    store: str = ""
    engine: str = DEFAULT_ENGINE
    #: the engine of the rows stored before this build (``None``: the table was empty)
    previous_engine: str | None = None
    #: path -> symbols that took it: ``stream`` (continued from the stored kernel state over the
    #: new bars only), ``recompute`` (history unchanged but no usable state: computed from the
    #: first bar, new rows appended), ``rewrite`` (first build, bars revised or back-filled,
    #: --full), ``since``
    paths: dict[str, list[str]] = field(default_factory=dict)
    #: what ``--online`` wrote (None: not asked)
    online: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "build_id": self.build_id,
            "built_at": self.built_at.isoformat(),
            "feature_set": self.feature_set,
            "feature_version": self.feature_version,
            "table": self.table,
            "mode": self.mode,
            "engine": self.engine,
            "previous_engine": self.previous_engine,
            "input_sha256": self.input_sha256,
            "symbols": self.symbols,
            "bars_read": self.bars_read,
            "rows_computed": self.rows_computed,
            "rows_written": self.rows_written,
            "rows_deleted": self.rows_deleted,
            "warmup_rows_dropped": self.warmup_rows_dropped,
            "symbols_rewritten": self.symbols_rewritten,
            "quality": self.quality,
            "timings_s": self.timings_s,
            "executor": self.executor,
            "store": self.store,
            "paths": self.paths,
            "online": self.online,
        }


def _merge_stats(
    total: dict[str, list[float]], part: dict[str, list[float]]
) -> dict[str, list[float]]:
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


def _quality(stats: dict[str, list[float]], names: Sequence[str]) -> dict[str, Any]:
    """Per-feature count, mean, population std, min, max, exact zeros; total non-finite values."""
    features = {}
    for name in names:
        n, s, s2, lo, hi, zeros, _ = stats.get(name, [0, 0, 0, 0, 0, 0, 0])
        mean = s / n if n else None
        var = max(s2 / n - (s / n) ** 2, 0.0) if n else None
        features[name] = {
            "count": int(n),
            "mean": mean,
            "std": var**0.5 if var is not None else None,
            "min": lo if n else None,
            "max": hi if n else None,
            "zeros": int(zeros),
        }
    non_finite = int(sum(stats.get(n, [0] * 7)[6] for n in names))
    return {"non_finite": non_finite, "features": features}


def _plan_shards(counts: list[tuple[str, int]], shard_rows: int) -> list[list[tuple[str, int]]]:
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


def _to_utc(since: str | date | datetime | None) -> datetime | None:
    if since is None:
        return None
    if isinstance(since, datetime):
        return since if since.tzinfo else since.replace(tzinfo=UTC)
    if isinstance(since, date):
        return datetime(since.year, since.month, since.day, tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(str(since))
    except ValueError:
        raise InputError(
            f"--since: cannot parse '{since}' as a date", hint="use YYYY-MM-DD"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _ident(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise InputError(f"'{name}' is not a valid table name")
    return name


def build_features(
    store: OfflineStore | None = None,
    feature_set: str = "technical_v1",
    symbols: Sequence[str] | None = None,
    since: str | date | datetime | None = None,
    executor: str = "local",
    ray_address: str | None = None,
    progress: ProgressFn | None = None,
    *,
    full: bool = False,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    engine: str = DEFAULT_ENGINE,
    overlap: bool = True,
) -> BuildResult:
    """Compute ``feature_set`` from ``bars`` and write its table, in one transaction.

    Parameters
    ----------
    store
        An open writable :class:`OfflineStore`; default: ``$QCLI_HOME``'s (opened and closed here).
    feature_set
        The declaration in ``feature_defs/`` (default ``technical_v1``).
    symbols
        Restrict the build to these symbols (default: every symbol in ``bars``).
    since
        Rewrite only rows with ``ts >= since`` (a date, UTC); features are still computed over
        each symbol's full history.
    executor, ray_address
        Where shards are computed: ``local`` (this process) or ``ray``.
    progress
        Called as ``progress(shards_done, shards_total)`` after each shard.
    full
        Delete and rewrite every symbol in scope instead of appending new rows.
    shard_rows
        Target bars per shard (whole symbols).
    engine
        ``kernel`` (default; Numba kernels, bit-identical to TA-Lib) or ``polars`` (native Polars
        expressions, agrees to rtol 1e-9). Recorded in ``feature_builds``. A table holds one
        engine's rows: switching engine needs ``full=True`` without ``symbols``.
    overlap
        Write each wave on a background thread while the executor computes the next one
        (default). ``False`` alternates compute and write on one thread (the previous
        behaviour, kept for measurement: ``benchmarks/test_features_bench.py`` compares both).
        The table and the ``feature_builds`` record are the same bytes either way (timings
        aside).

    Returns
    -------
    BuildResult
        Counts (bars read, rows computed/written/deleted, warm-up rows dropped), the input hash,
        per-feature quality statistics and timings; the same record is in ``feature_builds``.

    Raises
    ------
    NotFoundError
        No ``bars`` table, or an unknown symbol (exit code 2).
    InputError
        Bad options (``--since`` with ``--full``, an unparseable date, ``shard_rows < 1``, an
        unknown engine), or an engine other than the stored rows' without a full rebuild of
        every symbol.
    """
    if store is None:
        with OfflineStore() as own:
            return build_features(
                own, feature_set, symbols, since, executor, ray_address, progress,
                full=full, shard_rows=shard_rows, engine=engine, overlap=overlap,
            )  # fmt: skip
    if shard_rows < 1:
        raise InputError(f"`shard_rows` must be at least 1, got `shard_rows={shard_rows}`.")
    engine = check_engine(engine)
    since_dt = _to_utc(since)
    if full and since_dt is not None:
        raise InputError("--full and --since exclude each other", hint="use one of them")
    mode = "full" if full else ("since" if since_dt is not None else "incremental")
    fs = load_feature_set(feature_set)
    table = _ident(fs.table)
    from quantcli.scale import get_executor

    pool = get_executor(executor, ray_address)
    store.require_table("bars", hint="run `qcli data ingest PATH` (or `--sample`) first")

    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    t_scan = time.perf_counter()
    # the counts and the fingerprints a streaming build checks
    counts, fingerprints, refresh_fingerprints = _bar_fingerprints(store)
    timings["bar_scan"] = round(time.perf_counter() - t_scan, 4)
    if symbols:
        known = dict(counts)
        wanted = sorted(set(symbols))
        unknown = [s for s in wanted if s not in known]
        if unknown:
            raise NotFoundError(
                f"--symbols: no bars for {', '.join(unknown)}",
                hint=f"symbols in the store: {', '.join(list(known)[:10])}"
                + (" ..." if len(known) > 10 else ""),
            )
        counts = [(s, known[s]) for s in wanted]
    if not counts:
        raise NotFoundError("the bars table is empty", hint="run `qcli data ingest PATH` first")
    since_us = int(since_dt.timestamp() * 1_000_000) if since_dt is not None else None

    built_at = datetime.now(UTC)
    rows_written = rows_deleted = bars_read = rows_computed = warmup = 0
    rewritten: list[str] = []
    paths: dict[str, list[str]] = {}
    hashes: list[tuple[str, int, str]] = []
    stats: dict[str, list[float]] = {}
    t_compute = 0.0
    written: list[ShardResult] | None = None  # the computed wave waiting for the writer
    with (
        # the pid in the name lets the next writer remove it if this process is killed
        tempfile.TemporaryDirectory(prefix=staging_prefix(), dir=store.path.parent) as staging,
        _memory_limit(store, env_memory_limit(ENV_MEMORY_LIMIT, DEFAULT_MEMORY_LIMIT)),
        store.transaction() as con,
    ):
        con.execute(resources.sql("schema_features"))
        con.execute(fs.table_ddl())
        if refresh_fingerprints:  # the next build reads them instead of every bar
            con.execute(resources.sql("schema_bar_fingerprints"))
            con.execute(resources.sql("bar_fingerprints_refresh"))
        # a released set cannot change silently (exits 2 naming the changed features)
        released.check_declaration(con, fs)
        t0 = time.perf_counter()
        state = {
            s: (int(ts.timestamp() * 1_000_000), int(n), sha)
            for s, ts, n, sha in con.execute(resources.sql("features_state"), [feature_set])
            .fetchall()
        }  # fmt: skip
        stored_rows = _stored_rows(con, table, state, fs.warmup)
        stream, new_bars = _stream_plan(
            con, fs, engine, mode, counts, state, stored_rows, fingerprints
        )
        timings["stream_check"] = round(time.perf_counter() - t0, 4)
        fp_text = {s: f"{fp_sum}/{fp_xor}" for s, (fp_sum, fp_xor) in fingerprints.items()}
        # a streamed symbol's shard holds only its new bars
        shards = _plan_shards(
            [(s, n - stream[s][0] if s in stream else n) for s, n in counts], shard_rows
        )
        previous_engine = _stored_engine(con, feature_set, table) if stored_rows else None
        if previous_engine not in (None, engine) and (mode != "full" or symbols):
            raise InputError(
                f"--engine {engine}: {table} holds rows built by engine {previous_engine}; "
                f"{'a --symbols' if symbols else _PARTIAL[mode]} build would mix the two "
                "engines' values in one table",
                hint="rebuild every symbol: qcli features build --full --engine "
                + engine
                + ("" if feature_set == "technical_v1" else f" --feature-set {feature_set}"),
            )
        if mode == "full" and not symbols:
            rows_deleted += _scalar(con, f"SELECT count(*) FROM {table}")
            con.execute(f"DELETE FROM {table}")
        done = 0
        per_wave = wave_size(
            getattr(pool, "workers", 1),
            shard_rows,
            len(fs.features),
            waves_alive=2 if overlap else 1,
        )
        writer = _WaveWriter(con, table, feature_set, since_dt, mode, bool(symbols), staging)
        touched = cross_section_stage.Touched(fs, table)
        try:
            for w in range(0, len(shards), per_wave):
                t0 = time.perf_counter()
                # read while no write is in flight: the connection serves one thread at a time
                tasks = [
                    ShardTask(
                        feature_set=feature_set,
                        bars=_shard_bars(con, shard, bool(symbols), stream, new_bars),
                        mode=mode,
                        since_us=since_us,
                        state={s: state[s] for s, _ in shard if s in state},
                        stored_rows={s: stored_rows[s] for s, _ in shard if s in stored_rows},
                        engine=engine,
                        stream={s: stream[s] for s, _ in shard if s in stream},
                        fingerprints={s: fp_text[s] for s, _ in shard if s in fp_text},
                    )
                    for shard in shards[w : w + per_wave]
                ]

                def _done(_i: int, _n: int = len(shards)) -> None:
                    nonlocal done
                    done += 1
                    if progress is not None:
                        progress(done, _n)

                if written is not None:  # the previous wave is written while this one computes
                    writer.start(written, background=True)
                    written = None
                results = pool.map(compute_shard, tasks, on_done=_done)
                del tasks
                t_compute += time.perf_counter() - t0
                writer.wait()
                for res in results:  # shard order, as the writer writes them
                    touched.note(con, res, since_dt)  # before the writer deletes its rows
                    rows_written += res.rows.height
                    bars_read += res.bars_read
                    rows_computed += res.rows_computed
                    warmup += res.warmup_dropped
                    rewritten += res.rewrite
                    hashes += res.hashes
                    for symbol, path in res.paths.items():
                        paths.setdefault(path, []).append(symbol)
                    _merge_stats(stats, res.stats)
                if overlap:
                    written = results
                else:
                    writer.start(results, background=False)
                results = None
            if written is not None:
                writer.start(written, background=False)
                written = None
        except BaseException:
            writer.abort()  # nothing still writes when the transaction rolls back
            raise
        finally:
            writer.close()
            if stream:
                con.unregister("stream_cut")
        rows_deleted += writer.rows_deleted
        if touched.active:  # cross-sectional columns need every symbol's rows: after all shards
            t0 = time.perf_counter()
            everything = mode == "full" and not symbols
            stats.update(
                cross_section_stage.apply_table(con, table, fs, touched.timestamps(), everything)
            )
            timings["cross_section"] = round(time.perf_counter() - t0, 4)
        t_write, t_wait = writer.seconds, writer.waited_s
        quality = _quality(stats, fs.feature_names)
        if quality["non_finite"]:
            raise InputError(
                f"{quality['non_finite']} non-finite feature value(s) computed; nothing written",
                hint="check the bars for extreme values (prices must be finite and > 0)",
            )
        input_sha = hashing.combine(hashes)
        build_id = hashlib.sha256(
            f"{input_sha}|{engine}|{built_at.isoformat()}".encode()
        ).hexdigest()[:16]
        timings["compute"] = round(t_compute, 4)
        timings["write"] = round(t_write, 4)
        timings["write_wait"] = round(t_wait, 4)
        timings["total"] = round(time.perf_counter() - t_start, 4)
        con.execute(
            resources.sql("features_record_build"),
            [
                build_id,
                built_at,
                feature_set,
                fs.version,
                table,
                mode,
                input_sha,
                json.dumps([s for s, _ in counts]),
                bars_read,
                rows_computed,
                rows_written,
                rows_deleted,
                warmup,
                json.dumps(quality, sort_keys=True),
                json.dumps(timings, sort_keys=True),
                pool.name,
                __version__,
                engine,
            ],
        )
        released.record_declaration(con, fs, build_id)
        con.execute(
            "UPDATE feature_build_state SET build_id = ? WHERE feature_set = ? AND build_id = ''",
            [build_id, feature_set],
        )
    return BuildResult(
        build_id=build_id,
        built_at=built_at,
        feature_set=feature_set,
        feature_version=fs.version,
        table=table,
        mode=mode,
        input_sha256=input_sha,
        symbols=[s for s, _ in counts],
        bars_read=bars_read,
        rows_computed=rows_computed,
        rows_written=rows_written,
        rows_deleted=rows_deleted,
        warmup_rows_dropped=warmup,
        symbols_rewritten=sorted(rewritten),
        quality=quality,
        timings_s=timings,
        executor=pool.name,
        store=str(store.path),
        engine=engine,
        previous_engine=previous_engine,
        paths={p: sorted(v) for p, v in sorted(paths.items())},
    )


@contextmanager
def _memory_limit(store: OfflineStore, limit: str) -> Iterator[None]:
    """DuckDB's ``memory_limit`` for the duration of a build, then the previous value back."""
    previous = store.con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
    try:
        store.con.execute("SET memory_limit = ?", [limit])
    except Exception as exc:  # duckdb raises its own error types for a malformed size
        raise InputError(
            f"{ENV_MEMORY_LIMIT}: DuckDB refused memory_limit {limit!r}: {exc}",
            hint="use a size such as 2GB or 512MB",
        ) from None
    try:
        yield
    finally:
        # DuckDB prints the setting rounded ("18.7 GiB"): RESET restores an untouched default
        # exactly; only a value the caller had set is written back (to that rounding)
        store.con.execute("RESET memory_limit")
        now = store.con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
        if now != previous:
            store.con.execute("SET memory_limit = ?", [previous])


def _insert_rows(con, table: str, rows: pl.DataFrame, staging: str) -> None:
    """Insert ``rows`` through an uncompressed Parquet file in ``staging``.

    Why not register the Arrow table: inside one long transaction DuckDB keeps rows appended from
    an Arrow scan in memory (measured: +0.45 GB per million feature rows, past memory_limit),
    while rows from its own Parquet reader go to the database file; a 25 M row build stays
    bounded only this way.
    """
    path = Path(staging) / f"rows-{time.perf_counter_ns()}.parquet"
    rows.write_parquet(path, compression="uncompressed", statistics=False)
    try:
        quoted = str(path).replace("'", "''")
        con.execute(f"INSERT INTO {table} SELECT * FROM read_parquet('{quoted}')")
    finally:
        path.unlink(missing_ok=True)


def _shard_bars(con, shard, scoped: bool, stream: dict, new_bars: pl.DataFrame | None):
    """One shard's bars: the whole history of its symbols that are not streamed (read from the
    store), the new bars of those that are (read once for the build by :func:`_stream_plan`)."""
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


class _WriteCancelled(Exception):
    """The build failed elsewhere; the background writer stops before its next statement."""


class _WaveWriter:
    """The one writer: deletes and inserts a computed wave, in shard order, on one connection.

    ``start(results, background=True)`` writes on a single background thread and returns at
    once, so the driver's executor computes the next wave meanwhile; ``wait()`` joins it and
    re-raises its error. The connection serves one thread at a time: the driver calls ``wait()``
    before it touches the connection again (to read the next wave's bars). ``abort()`` (the
    build failed: a shard raised, Ctrl-C) stops a write in flight -- between statements through
    a flag, inside one through DuckDB's ``interrupt`` -- and waits for the thread, so the
    transaction's ROLLBACK runs alone and nothing of the next wave is ever written.

    ``seconds`` is the time spent writing; ``waited_s`` the part of it the driver waited for
    (a synchronous write, or a background write that outlasted the next wave's compute).
    """

    def __init__(self, con, table: str, feature_set: str, since_dt, mode: str, scoped: bool,
                 staging: str) -> None:  # fmt: skip
        self._con = con
        self._args = (table, feature_set, since_dt, mode, scoped)
        self._staging = staging
        self._cancel = threading.Event()
        self._thread: ThreadPoolExecutor | None = None
        self._future: Future | None = None
        self.rows_deleted = 0
        self.seconds = 0.0
        self.waited_s = 0.0

    def start(self, results: list[ShardResult], *, background: bool) -> None:
        """Write ``results`` (one wave, shard order); in the background unless told otherwise."""
        if self._future is not None:
            raise RuntimeError("a wave is still being written; call wait() first")
        if not background:
            t0 = time.perf_counter()
            self._write(results)
            self.waited_s += time.perf_counter() - t0
            return
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="qcli-feature-writer")
        self._future = self._thread.submit(self._write, results)

    def _write(self, results: list[ShardResult]) -> None:
        t0 = time.perf_counter()
        table, feature_set, since_dt, mode, scoped = self._args
        try:
            for k, res in enumerate(results):
                results[k] = None  # type: ignore[call-overload]  # free each shard once written
                if self._cancel.is_set():
                    raise _WriteCancelled
                self.rows_deleted += _apply(self._con, table, feature_set, res, since_dt, mode,
                                            scoped)  # fmt: skip
                if res.rows.height:
                    if self._cancel.is_set():
                        raise _WriteCancelled
                    _insert_rows(self._con, table, res.rows, self._staging)
        finally:
            self.seconds += time.perf_counter() - t0

    def wait(self) -> None:
        """Join the background write (if any); its exception, if it failed, is raised here."""
        future, self._future = self._future, None
        if future is None:
            return
        t0 = time.perf_counter()
        try:
            future.result()
        finally:
            self.waited_s += time.perf_counter() - t0

    def abort(self) -> BaseException | None:
        """Stop the background write and wait until the thread no longer uses the connection.

        Returns how the write in flight ended: ``None`` if it had finished (or none was
        running), else its exception (DuckDB's ``InterruptException``, ``_WriteCancelled``).
        """
        self._cancel.set()
        future, self._future = self._future, None
        if future is None:
            return None
        if not future.done():
            self._con.interrupt()  # a long INSERT stops now instead of running to its end
        while True:  # a second Ctrl-C must not let ROLLBACK race the writer on the connection
            try:
                wait_futures([future])
                break
            except KeyboardInterrupt:
                continue
        return future.exception()

    def close(self) -> None:
        if self._thread is not None:
            self._thread.shutdown(wait=True)
            self._thread = None


#: how the refusal of an engine switch names a build that is not a full rebuild of every symbol
_PARTIAL = {"incremental": "an incremental", "since": "a --since", "full": "a --symbols"}


def _stored_rows(con, table: str, state: dict, warmup: int) -> dict[str, int]:
    """Rows per symbol in the feature table.

    When the table holds exactly the rows the recorded builds wrote (its total row count, which
    DuckDB answers from its row-group metadata, equals the sum over ``feature_build_state`` of
    ``n_bars - warmup``), those are the counts; any difference (rows deleted or added by hand,
    rows kept after a state was dropped) falls back to counting per symbol, a scan of the table.
    """
    total = _scalar(con, f"SELECT count(*) FROM {table}")
    expected = {s: max(n - warmup, 0) for s, (_ts, n, _sha) in state.items()}
    if total == sum(expected.values()):
        return {s: n for s, n in expected.items() if n}
    query = f"SELECT symbol, count(*) FROM {table} GROUP BY symbol"
    return {str(sym): int(n) for sym, n in con.execute(query).fetchall()}


def _bar_fingerprints(store) -> tuple[list[tuple[str, int]], dict[str, tuple[int, int]], bool]:
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


def _stream_plan(con, fs, engine, mode, counts, state, stored_rows, fingerprints):
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
    layout = KernelPlan.of(fs).layout_sha256
    stored = {
        str(sym): (str(lay), int(n), bytes(blob), str(fp))
        for sym, lay, n, _ts, blob, fp in con.execute(
            resources.sql("features_stream_state"), [fs.name]
        ).fetchall()
    }
    candidates = []
    for sym, n_all in counts:
        st, prior = stored.get(sym), state.get(sym)
        if st is None or prior is None or st[0] != layout or not st[3]:
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
    for k, sym in enumerate(syms):
        a, b = int(starts[k]), int(starts[k + 1])
        total = (int(hi[a:b].sum()) << 32) + int(lo[a:b].sum())
        new_fp[sym] = (b - a, total, int(np.bitwise_xor.reduce(h[a:b])))
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


def _stored_engine(con, feature_set: str, table: str) -> str | None:
    """The engine of the newest build of ``table``: every stored row was computed by it, since a
    build with another engine must rewrite the whole table. ``None`` without a recorded build."""
    row = con.execute(resources.sql("features_stored_engine"), [feature_set, table]).fetchall()
    return str(row[0][0]) if row else None


def _scalar(con, query: str, params: list | None = None) -> int:
    # fetchall, not fetchone: DuckDB 2 keeps a half-read result open and then refuses .sql()
    return int(con.execute(query, params or []).fetchall()[0][0])


def _apply(con, table: str, feature_set: str, res: ShardResult, since_dt, mode: str, scoped: bool):
    """Delete what ``res`` replaces and store its per-symbol state; returns rows deleted."""
    deleted = 0
    if res.rewrite and not (mode == "full" and not scoped):
        placeholders = ", ".join("?" for _ in res.rewrite)
        deleted += _scalar(
            con, f"SELECT count(*) FROM {table} WHERE symbol IN ({placeholders})", res.rewrite
        )
        con.execute(f"DELETE FROM {table} WHERE symbol IN ({placeholders})", res.rewrite)
    if res.since_delete:
        placeholders = ", ".join("?" for _ in res.since_delete)
        params = [*res.since_delete, since_dt]
        where = f"WHERE symbol IN ({placeholders}) AND ts >= ?"
        deleted += _scalar(con, f"SELECT count(*) FROM {table} {where}", params)
        con.execute(f"DELETE FROM {table} {where}", params)
    if res.drop_state:
        placeholders = ", ".join("?" for _ in res.drop_state)
        con.execute(
            f"DELETE FROM feature_build_state WHERE feature_set = ? AND symbol IN ({placeholders})",
            [feature_set, *res.drop_state],
        )
    if res.new_state:
        staged = pl.DataFrame(
            res.new_state,
            schema={"symbol": pl.String, "last_bar_us": pl.Int64, "n_bars": pl.Int64,
                    "history_sha256": pl.String},
            orient="row",
        ).with_columns(
            pl.from_epoch("last_bar_us", time_unit="us").dt.replace_time_zone("UTC")
            .alias("last_bar_ts")
        ).select("symbol", "last_bar_ts", "n_bars", "history_sha256")  # fmt: skip
        con.register("staged_state", staged.to_arrow())
        try:
            con.execute(resources.sql("features_state_upsert"), [feature_set, ""])
        finally:
            con.unregister("staged_state")
    if res.drop_stream:
        placeholders = ", ".join("?" for _ in res.drop_stream)
        where = f"WHERE feature_set = ? AND symbol IN ({placeholders})"
        con.execute(f"DELETE FROM feature_stream_state {where}", [feature_set, *res.drop_stream])
    if res.stream_states:
        staged = pl.DataFrame(
            res.stream_states,
            schema={"symbol": pl.String, "layout_sha256": pl.String, "n_bars": pl.Int64,
                    "last_bar_us": pl.Int64, "state": pl.Binary, "bars_fingerprint": pl.String},
            orient="row",
        ).with_columns(
            pl.from_epoch("last_bar_us", time_unit="us").dt.replace_time_zone("UTC")
            .alias("last_bar_ts")
        ).select("symbol", "layout_sha256", "n_bars", "last_bar_ts", "state",
                 "bars_fingerprint")  # fmt: skip
        con.register("staged_stream_state", staged.to_arrow())
        try:
            con.execute(resources.sql("features_stream_state_upsert"), [feature_set])
        finally:
            con.unregister("staged_stream_state")
    return deleted
