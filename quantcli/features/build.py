"""Build a feature table in the offline store from ``bars``: sharded, incremental, one transaction.

Flow of :func:`build_features`:

1. Plan shards: the symbols in scope, in name order, cut into shards of about
   ``shard_rows`` bars (whole symbols only). A symbol that streams (below) counts its new bars
   only.
2. For each shard the driver reads the bars from DuckDB and hands them to
   :func:`compute_shard`, a pure top-level function mapped through
   :func:`quantcli.scale.get_executor` (``local`` or ``ray``) in waves of
   :func:`~quantcli.features.build_plan.wave_size` shards -- two per executor worker, capped
   so the waves in memory fit in ``WAVE_MEMORY_BYTES`` -- so memory stays bounded (a 25 M bar
   build never holds all bars).
3. The one writer (:class:`~quantcli.features.build_writer.WaveWriter`) deletes stale rows and
   inserts the new ones, in shard order, on a background thread: it writes wave *k* while the
   executor computes wave *k + 1* (two waves alive, hence ``waves_alive=2`` in the memory cap).
   The connection is used by one thread at a time (the driver reads the next wave's bars
   before handing a wave to the writer and joins it before reading again). ``overlap=False``
   alternates compute and write instead; the bytes written are the same.
4. The writes, ``feature_build_state``, the kernels' states (``feature_stream_state``) and the
   ``feature_builds`` record are ONE transaction: a failed build (a shard, the writer, Ctrl-C)
   stops the writer, waits for its thread, and rolls back -- the store is exactly as it was, and
   the wave computed meanwhile is never written.

Modes and paths, per symbol (``BuildResult.paths``):

* ``incremental`` (default): if the symbol's bars up to the last bar the previous build saw are
  unchanged, only rows with ``ts`` after that bar are written. With the kernel engine the symbol
  then continues from its stored kernel state over its new bars only (path ``stream``: see
  :func:`~quantcli.features.build_plan.stream_plan` for the checks), else it is recomputed
  from its first bar (``recompute``); otherwise (bars revised or back-filled, or a first
  build) the symbol is rewritten (``rewrite``). The table is then identical to a full
  rebuild, bit for bit.
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

Bar spacing: a symbol read from its first bar whose median bar spacing contradicts the set's
declared ``frequency`` (daily bars under ``"1h"``, or the reverse) is named in
``BuildResult.warnings``; the build still runs.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from quantcli import __version__, resources
from quantcli.config import env_memory_limit
from quantcli.data.spacing import SPACING_FACTOR, SpacingReport
from quantcli.errors import InputError, NotFoundError
from quantcli.features import cross_section_stage, hashing, released
from quantcli.features.build_plan import (
    WAVE_MEMORY_BYTES,
    BuildOptions,
    BuildScope,
    bar_fingerprints,
    read_scope,
    shard_tasks,
    table_ident,
    to_utc,
    wave_size,
)
from quantcli.features.build_writer import (
    DEFAULT_MEMORY_LIMIT,
    ENV_MEMORY_LIMIT,
    WaveWriter,
    memory_limit,
    migrate_stream_state,
    scalar,
)
from quantcli.features.definitions import FeatureSet, load_feature_set
from quantcli.features.expressions import DEFAULT_ENGINE, check_engine
from quantcli.features.shard import (
    ShardResult,
    ShardTask,
    compute_shard,
    feature_quality,
    merge_stats,
)
from quantcli.results import Result
from quantcli.scale import get_executor
from quantcli.store.offline import OfflineStore, staging_prefix
from quantcli.workspace import Workspace

#: Bars per shard (whole symbols): 250 k bars x 31 columns of float64 is ~60 MB of features.
DEFAULT_SHARD_ROWS = 250_000

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True, kw_only=True)
class BuildResult(Result):
    """What one feature build did (also the ``--json`` output of ``qcli features build``).

    A build that fails raises, so a result has passed; ``warnings`` lists what the user must
    see anyway (symbols whose bars contradict the set's declared ``frequency``).
    """

    passed: bool = True
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
    #: the bar spacing check against the declared frequency (symbols read from their first bar)
    spacing: SpacingReport | None = None

    @property
    def warnings(self) -> list[str]:
        return self.spacing.messages() if self.spacing is not None else []

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
            "warnings": self.warnings,
        }


@dataclass
class _Totals:
    """What the shards of a build add up to, in shard order."""

    rows_written: int = 0
    rows_deleted: int = 0
    bars_read: int = 0
    rows_computed: int = 0
    warmup: int = 0
    rewritten: list[str] = field(default_factory=list)
    paths: dict[str, list[str]] = field(default_factory=dict)
    hashes: list[tuple[str, int, str]] = field(default_factory=list)
    stats: dict[str, list[float]] = field(default_factory=dict)
    spacing_us: dict[str, float] = field(default_factory=dict)
    compute_s: float = 0.0

    def add(self, res: ShardResult) -> None:
        self.rows_written += res.rows.height
        self.bars_read += res.bars_read
        self.rows_computed += res.rows_computed
        self.warmup += res.warmup_dropped
        self.rewritten += res.rewrite
        self.hashes += res.hashes
        for symbol, path in res.paths.items():
            self.paths.setdefault(path, []).append(symbol)
        merge_stats(self.stats, res.stats)
        self.spacing_us.update(res.median_spacing_us)


def _check_options(
    feature_set: str,
    symbols: Sequence[str] | None,
    since: str | date | datetime | None,
    full: bool,
    shard_rows: int,
    engine: str,
) -> BuildOptions:
    if shard_rows < 1:
        raise InputError(f"`shard_rows` must be at least 1, got `shard_rows={shard_rows}`.")
    engine = check_engine(engine)
    since_dt = to_utc(since)
    if full and since_dt is not None:
        raise InputError("--full and --since exclude each other", hint="use one of them")
    mode = "full" if full else ("since" if since_dt is not None else "incremental")
    fs = load_feature_set(feature_set)
    return BuildOptions(fs, table_ident(fs.table), mode, since_dt, engine, tuple(symbols or ()))


def _in_scope(counts: list[tuple[str, int]], symbols: tuple[str, ...]) -> list[tuple[str, int]]:
    """The bar counts of the symbols the build covers (``--symbols``, or all)."""
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
    return counts


def _run_waves(
    con, opts: BuildOptions, scope: BuildScope, pool, writer: WaveWriter, touched, *,
    shard_rows: int, overlap: bool, progress: ProgressFn | None, totals: _Totals,
) -> None:  # fmt: skip
    """Compute the shards wave by wave and hand each wave to ``writer``; with ``overlap`` a
    wave is written on the writer's thread while the executor computes the next one."""
    per_wave = wave_size(
        getattr(pool, "workers", 1), shard_rows, len(opts.fs.features),
        waves_alive=2 if overlap else 1,
    )  # fmt: skip
    n_shards, done = len(scope.shards), 0
    written: list[ShardResult] | None = None  # the computed wave waiting for the writer

    def _done(_i: int, _n: int = n_shards) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, _n)

    try:
        for w in range(0, n_shards, per_wave):
            t0 = time.perf_counter()
            # read while no write is in flight: the connection serves one thread at a time
            tasks = shard_tasks(con, opts, scope, scope.shards[w : w + per_wave])
            if written is not None:  # the previous wave is written while this one computes
                writer.start(written, background=True)
                written = None
            results = pool.map(compute_shard, tasks, on_done=_done)
            del tasks
            totals.compute_s += time.perf_counter() - t0
            writer.wait()
            for res in results:  # shard order, as the writer writes them
                touched.note(con, res, opts.since_dt)  # before the writer deletes its rows
                totals.add(res)
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
        if scope.stream:
            con.unregister("stream_cut")
    totals.rows_deleted += writer.rows_deleted


def _spacing(fs: FeatureSet, spacing_us: dict[str, float]) -> SpacingReport:
    """Symbols whose median bar spacing is more than :data:`SPACING_FACTOR` away from the set's
    declared ``frequency`` (as ingest reports them)."""
    mismatched = {}
    for symbol in sorted(spacing_us):
        step = timedelta(microseconds=round(spacing_us[symbol]))
        ratio = step / fs.interval
        if ratio > SPACING_FACTOR or ratio < 1 / SPACING_FACTOR:
            mismatched[symbol] = str(step)
    return SpacingReport(
        frequency=fs.frequency, mismatched=mismatched, declared_by=f"the feature set {fs.name}"
    )


def _record(con, opts: BuildOptions, scope: BuildScope, totals: _Totals, quality, built_at, timings,
            executor: str) -> str:  # fmt: skip
    """Write the ``feature_builds`` record and the declaration; returns the build id."""
    input_sha = hashing.combine(totals.hashes)
    build_id = hashlib.sha256(
        f"{input_sha}|{opts.engine}|{built_at.isoformat()}".encode()
    ).hexdigest()[:16]
    con.execute(
        resources.sql("features_record_build"),
        [
            build_id, built_at, opts.fs.name, opts.fs.version, opts.table, opts.mode, input_sha,
            json.dumps([s for s, _ in scope.counts]), totals.bars_read, totals.rows_computed,
            totals.rows_written, totals.rows_deleted, totals.warmup,
            json.dumps(quality, sort_keys=True), json.dumps(timings, sort_keys=True),
            executor, __version__, opts.engine,
        ],
    )  # fmt: skip
    released.record_declaration(con, opts.fs, build_id)
    con.execute(
        "UPDATE feature_build_state SET build_id = ? WHERE feature_set = ? AND build_id = ''",
        [build_id, opts.fs.name],
    )
    return build_id


def _prepare(con, opts: BuildOptions, refresh_fingerprints: bool) -> None:
    """The build's tables, inside its transaction; a released set cannot change silently."""
    con.execute(resources.sql("schema_features"))
    migrate_stream_state(con)
    con.execute(opts.fs.table_ddl())
    released.check_table(con, opts.fs)  # exits 2 when the table is another set's
    if refresh_fingerprints:  # the next build reads them instead of every bar
        con.execute(resources.sql("schema_bar_fingerprints"))
        con.execute(resources.sql("bar_fingerprints_refresh"))
    released.check_declaration(con, opts.fs)  # exits 2 naming the changed features


def _finish(con, opts: BuildOptions, totals: _Totals, touched, timings) -> dict[str, Any]:
    """The cross-sectional post-stage (it needs every symbol's rows: after all shards), then
    the quality record; a non-finite value refuses the build before anything is recorded."""
    if touched.active:
        t0 = time.perf_counter()
        everything = opts.mode == "full" and not opts.scoped
        totals.stats.update(
            cross_section_stage.apply_table(
                con, opts.table, opts.fs, touched.timestamps(), everything
            )
        )
        timings["cross_section"] = round(time.perf_counter() - t0, 4)
    quality = feature_quality(totals.stats, opts.fs.feature_names)
    if quality["non_finite"]:
        raise InputError(
            f"{quality['non_finite']} non-finite feature value(s) computed"
            f"{_first_non_finite(con, opts)}; nothing written",
            hint="check the bars for extreme values (prices must be finite and > 0)",
        )
    return quality


def _first_non_finite(con, opts: BuildOptions) -> str:
    """`` (first: SYMBOL at TS, feature NAME)``: where to look, read back from this build's
    rows in the open transaction (earlier builds stored finite values only)."""
    names = opts.fs.feature_names
    rows = con.execute(
        f"SELECT symbol, ts, {', '.join(names)} FROM {opts.table} "
        f"WHERE {' OR '.join(f'NOT isfinite({n})' for n in names)} ORDER BY symbol, ts LIMIT 1"
    ).fetchall()
    if not rows:
        return ""
    symbol, ts, *values = rows[0]
    feature = next(n for n, v in zip(names, values, strict=True) if not math.isfinite(v))
    return f" (first: {symbol} at {ts.isoformat()}, feature {feature})"


def _result(
    opts: BuildOptions, scope: BuildScope, totals: _Totals, build_id: str, built_at: datetime,
    quality: dict[str, Any], timings: dict[str, float], executor: str, store: str,
) -> BuildResult:  # fmt: skip
    return BuildResult(
        build_id=build_id,
        built_at=built_at,
        feature_set=opts.fs.name,
        feature_version=opts.fs.version,
        table=opts.table,
        mode=opts.mode,
        input_sha256=hashing.combine(totals.hashes),
        symbols=[s for s, _ in scope.counts],
        bars_read=totals.bars_read,
        rows_computed=totals.rows_computed,
        rows_written=totals.rows_written,
        rows_deleted=totals.rows_deleted,
        warmup_rows_dropped=totals.warmup,
        symbols_rewritten=sorted(totals.rewritten),
        quality=quality,
        timings_s=timings,
        executor=executor,
        store=store,
        engine=opts.engine,
        previous_engine=scope.previous_engine,
        paths={p: sorted(v) for p, v in sorted(totals.paths.items())},
        spacing=_spacing(opts.fs, totals.spacing_us),
    )


def _build(
    store: OfflineStore, opts: BuildOptions, pool, counts, fingerprints, refresh_fingerprints,
    timings: dict[str, float], t_start: float, *, shard_rows: int, overlap: bool,
    progress: ProgressFn | None,
) -> BuildResult:  # fmt: skip
    """The build's one transaction: plan, waves, cross-sectional stage, record."""
    built_at = datetime.now(UTC)
    totals = _Totals()
    with (
        # the pid in the name lets the next writer remove it if this process is killed
        tempfile.TemporaryDirectory(prefix=staging_prefix(), dir=store.path.parent) as staging,
        memory_limit(store, env_memory_limit(ENV_MEMORY_LIMIT, DEFAULT_MEMORY_LIMIT)),
        store.transaction() as con,
    ):
        _prepare(con, opts, refresh_fingerprints)
        scope = read_scope(con, opts, counts, fingerprints, shard_rows, timings)
        if opts.mode == "full" and not opts.scoped:
            totals.rows_deleted += scalar(con, f"SELECT count(*) FROM {opts.table}")
            con.execute(f"DELETE FROM {opts.table}")
        writer = WaveWriter(con, opts.table, opts.fs.name, opts.since_dt, opts.mode,
                            opts.scoped, staging)  # fmt: skip
        touched = cross_section_stage.Touched(opts.fs, opts.table)
        _run_waves(
            con, opts, scope, pool, writer, touched, shard_rows=shard_rows, overlap=overlap,
            progress=progress, totals=totals,
        )  # fmt: skip
        quality = _finish(con, opts, totals, touched, timings)
        timings["compute"] = round(totals.compute_s, 4)
        timings["write"] = round(writer.seconds, 4)
        timings["write_wait"] = round(writer.waited_s, 4)
        timings["total"] = round(time.perf_counter() - t_start, 4)
        build_id = _record(con, opts, scope, totals, quality, built_at, timings, pool.name)
    return _result(opts, scope, totals, build_id, built_at, quality, timings, pool.name,
                   str(store.path))  # fmt: skip


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
    workspace: Workspace | None = None,
) -> BuildResult:
    """Compute ``feature_set`` from ``bars`` and write its table, in one transaction.

    Parameters
    ----------
    store
        An open writable :class:`OfflineStore`; default: the offline store of ``workspace``
        (default :meth:`Workspace.from_env`), opened and closed here.
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
        (default). ``False`` alternates compute and write on one thread
        (``benchmarks/test_features_bench.py`` compares both). The table and the
        ``feature_builds`` record are the same bytes either way (timings aside).

    Returns
    -------
    BuildResult
        Counts (bars read, rows computed/written/deleted, warm-up rows dropped), the input hash,
        per-feature quality statistics and timings; the same record is in ``feature_builds``.
        ``warnings`` names the symbols whose bars contradict the set's declared frequency.

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
        with (workspace or Workspace.from_env()).offline() as own:
            return build_features(
                own, feature_set, symbols, since, executor, ray_address, progress,
                full=full, shard_rows=shard_rows, engine=engine, overlap=overlap,
            )  # fmt: skip
    opts = _check_options(feature_set, symbols, since, full, shard_rows, engine)
    pool = get_executor(executor, ray_address)
    store.require_table("bars", hint="run `qcli data ingest PATH` (or `--sample`) first")
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    # the counts and the fingerprints a streaming build checks
    counts, fingerprints, refresh_fingerprints = bar_fingerprints(store)
    timings["bar_scan"] = round(time.perf_counter() - t_start, 4)
    counts = _in_scope(counts, opts.symbols)
    return _build(
        store, opts, pool, counts, fingerprints, refresh_fingerprints, timings, t_start,
        shard_rows=shard_rows, overlap=overlap, progress=progress,
    )  # fmt: skip


__all__ = [
    "DEFAULT_SHARD_ROWS",
    "WAVE_MEMORY_BYTES",
    "BuildResult",
    "ShardResult",
    "ShardTask",
    "build_features",
    "compute_shard",
    "wave_size",
]
