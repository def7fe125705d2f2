"""The cross-sectional post-stage: ``cs_rank`` and ``cs_zscore`` after the per-symbol features.

A cross-sectional value at ``ts`` depends on every symbol's row at ``ts``, which a sharded or
streaming per-symbol computation never holds at once. So the kernel engine leaves these
columns pending (NaN, :func:`pending_kernel`) and this stage fills them, always with the one
definition in :func:`quantcli.features.kinds.cross_section.cross_section_kernel` over the rows
of a timestamp ordered by ``symbol`` (so the same rows give the same bytes, whatever computed
them):

* :func:`apply_frame`: over the rows of an in-memory frame (``compute_features``, a shard);
* :func:`apply_table`: in a build, inside its transaction, after every shard is written: for
  each timestamp the build touched (a row written, or a row deleted), every symbol's stored row
  at that timestamp is read back and its cross-sectional columns rewritten. An incremental
  build thus recomputes the timestamps of its new bars across all symbols, and the table equals
  a full rebuild bit for bit;
* :func:`apply_stream`: ``FeatureStream.update`` ranks the rows it returns among themselves and
  the rows stored at the same timestamps for the other symbols (when the stream has a store).

The cross-section is over the rows kept in the table (past each symbol's warm-up). A feature
may not read a cross-sectional feature (its per-symbol kernel would run before the value
exists); such a set is refused by :func:`check`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
from numba import njit

from quantcli.errors import InputError
from quantcli.features.definitions import FeatureSet
from quantcli.features.kinds import get_kind
from quantcli.features.kinds.cross_section import cross_section_kernel


@njit(cache=True, nogil=True)
def pending_kernel(values, params, state, out):
    """The kernel engine's placeholder for a cross-sectional column: NaN until this stage."""
    for r in range(out.shape[0]):
        for i in range(out.shape[1]):
            out[r, i] = np.nan


@dataclass(frozen=True)
class CrossFeature:
    name: str  # the declared feature
    of: str  # the feature compared across symbols
    mode: int  # 0 rank, 1 z-score (the kernel's params[0])


def cross_features(fs: FeatureSet) -> list[CrossFeature]:
    """The cross-sectional features of ``fs``, in declaration order."""
    out = []
    for spec in fs.features:
        kind = get_kind(spec.kind)
        if kind.scope == "cross_section":
            mode = int((kind.extra or {})["mode"])
            out.append(CrossFeature(spec.name, str(spec.params["of"]), mode))
    return out


def check(fs: FeatureSet) -> None:
    """Refuse a set where a feature reads a cross-sectional feature (exit 2)."""
    cross = {c.name for c in cross_features(fs)}
    if not cross:
        return
    for spec in fs.features:
        kind = get_kind(spec.kind)
        if kind.scope == "bars":
            continue
        for role in kind.inputs:
            src = str(spec.params[role])
            if src in cross:
                raise InputError(
                    f"feature '{spec.name}' reads '{src}', a cross-sectional feature; a "
                    "cross-sectional value exists only after every symbol's per-symbol features",
                    hint=f"read the feature '{src}' is computed from instead",
                )


def compute_cross_section(
    frame: pl.DataFrame, cross: list[CrossFeature], presorted: bool = False
) -> pl.DataFrame:
    """``frame`` (``symbol, ts`` and the inputs) sorted by ``(ts, symbol)`` with the
    cross-sectional columns computed over each timestamp's rows (``presorted``: the frame
    already is, as DuckDB's ``ORDER BY ts, symbol`` returns it, which sorts faster)."""
    srt = frame if presorted else frame.sort("ts", "symbol")
    ts = srt["ts"].to_physical().to_numpy()
    cuts = np.flatnonzero(ts[1:] != ts[:-1]) + 1
    starts = np.concatenate(([0], cuts, [ts.shape[0]])).astype(np.int64)
    cols = {}
    for c in cross:
        values = np.ascontiguousarray(srt[c.of].cast(pl.Float64).to_numpy(), dtype=np.float64)
        out = np.empty(values.shape[0], dtype=np.float64)
        if values.shape[0]:
            cross_section_kernel(values, starts, np.array([float(c.mode)]), out)
        cols[c.name] = out
    return srt.select("symbol", "ts").hstack(
        pl.DataFrame(cols, schema=dict.fromkeys(cols, pl.Float64))
    )


def apply_frame(frame: pl.DataFrame, fs: FeatureSet) -> pl.DataFrame:
    """``frame`` (``symbol, ts, <features>``) with its cross-sectional columns computed over its
    own rows; the row order is kept."""
    cross = cross_features(fs)
    if not cross or frame.height == 0:
        return frame
    inputs = sorted({c.of for c in cross})
    done = compute_cross_section(frame.select("symbol", "ts", *inputs), cross)
    names = [c.name for c in cross]
    return frame.drop(names).join(done, on=["symbol", "ts"], how="left",
                                  maintain_order="left").select(frame.columns)  # fmt: skip


def _frame(con, query: str, params: list | None = None) -> pl.DataFrame:
    return con.sql(query, params=params or None).pl()


class Touched:
    """The timestamps a build changed, collected shard by shard before the writer applies them:
    the ts of the rows each shard writes, and of the stored rows it deletes."""

    def __init__(self, fs: FeatureSet, table: str) -> None:
        self.active = bool(cross_features(fs))
        self._table = table
        self._parts: list[pl.Series] = []

    def note(self, con, res, since_dt) -> None:
        """Record what shard result ``res`` will write and delete (call before it is applied)."""
        if not self.active:
            return
        self._parts.append(res.rows["ts"].unique())
        for symbols, extra, params in (
            (res.rewrite, "", []),
            (res.since_delete, " AND ts >= ?", [since_dt]),
        ):
            if symbols:
                marks = ", ".join("?" for _ in symbols)
                query = f"SELECT DISTINCT ts FROM {self._table} WHERE symbol IN ({marks}){extra}"
                self._parts.append(_frame(con, query, [*symbols, *params])["ts"])

    def timestamps(self) -> pl.Series | None:
        if not self._parts:
            return None
        return pl.concat([p.cast(self._parts[0].dtype) for p in self._parts]).unique().sort()


#: Rows the post-stage holds at once (whole timestamps): bounds its memory in a 25 M row build.
CHUNK_ROWS = 2_000_000


def apply_table(con, table: str, fs: FeatureSet, touched: pl.Series | None,
                everything: bool = False) -> dict[str, list[float]]:  # fmt: skip
    """Recompute the cross-sectional columns of ``table`` at the ``touched`` timestamps (every
    row when ``everything``), from every symbol's stored row there, in chunks of whole
    timestamps; returns the build's per-feature stats for those columns (over the rows
    rewritten)."""
    cross = cross_features(fs)
    if not cross:
        return {}
    names = [c.name for c in cross]
    stats = {n: [0.0, 0.0, 0.0, float("inf"), float("-inf"), 0.0, 0.0] for n in names}
    if not everything and (touched is None or touched.len() == 0):
        return stats
    inputs = sorted({c.of for c in cross})
    # rowid: the update joins on one integer instead of (symbol, ts); stable in the transaction
    select = ", ".join(["rowid AS __rowid", *(f'"{n}"' for n in ("symbol", "ts", *inputs))])
    among = "" if everything else " AND ts IN (SELECT ts FROM cs_touched)"
    if not everything:
        con.register("cs_touched", pl.DataFrame({"ts": touched}).to_arrow())
    try:
        per_ts = _frame(
            con, f"SELECT ts, count(*) AS n FROM {table} WHERE true{among} GROUP BY ts ORDER BY ts"
        )
        chunk = (per_ts["n"].cum_sum() - per_ts["n"]) // CHUNK_ROWS
        bounds = per_ts.group_by(chunk.alias("c"), maintain_order=True).agg(
            pl.col("ts").first().alias("lo"), pl.col("ts").last().alias("hi")
        )
        for lo, hi in bounds.select("lo", "hi").iter_rows():
            frame = _frame(
                con,
                f"SELECT {select} FROM {table} WHERE ts BETWEEN ? AND ?{among} ORDER BY ts, symbol",
                [lo, hi],
            )
            done = compute_cross_section(frame, cross, presorted=True)
            staged = done.drop("symbol", "ts").with_columns(frame["__rowid"])
            con.register("cs_done", staged.to_arrow())
            try:
                sets = ", ".join(f'"{n}" = cs_done."{n}"' for n in names)
                con.execute(
                    f"UPDATE {table} SET {sets} FROM cs_done WHERE {table}.rowid = cs_done.__rowid"
                )
            finally:
                con.unregister("cs_done")
            for n in names:
                _merge(stats[n], _stats(done[n].to_numpy()))
    finally:
        if not everything:
            con.unregister("cs_touched")
    return stats


def _merge(total: list[float], part: list[float]) -> None:
    for k in (0, 1, 2, 5, 6):
        total[k] += part[k]
    total[3] = min(total[3], part[3])
    total[4] = max(total[4], part[4])


def _stats(v: np.ndarray) -> list[float]:
    # the build's mergeable stats layout: count, sum, sum of squares, min, max, zeros, non-finite
    finite = np.isfinite(v)
    f = v[finite]
    return [float(f.size), float(f.sum()), float((f * f).sum()),
            float(f.min()) if f.size else float("inf"),
            float(f.max()) if f.size else float("-inf"),
            float((f == 0.0).sum()), float(v.size - f.size)]  # fmt: skip


def apply_stream(rows: pl.DataFrame, fs: FeatureSet, store, table: str) -> pl.DataFrame:
    """``rows`` from ``FeatureStream.update`` with their cross-sectional columns computed over
    themselves and, when ``store`` is given, the stored rows of other symbols at their
    timestamps (the order of ``rows`` is kept)."""
    cross = cross_features(fs)
    if not cross or rows.height == 0:
        return rows
    inputs = sorted({c.of for c in cross})
    mine = rows.select("symbol", "ts", *inputs)
    parts = [mine]
    if store is not None and store.table_exists(table):
        con = store.con
        con.register("cs_keys", mine.select("symbol", "ts").to_arrow())
        try:
            select = ", ".join(f't."{n}"' for n in ("symbol", "ts", *inputs))
            stored = _frame(
                con,
                f"SELECT {select} FROM {table} t WHERE t.ts IN (SELECT ts FROM cs_keys) AND NOT "
                "EXISTS (SELECT 1 FROM cs_keys k WHERE k.symbol = t.symbol AND k.ts = t.ts)",
            )
        finally:
            con.unregister("cs_keys")
        if stored.height:
            parts.append(stored.cast(mine.schema))
    done = compute_cross_section(pl.concat(parts), cross)
    names = [c.name for c in cross]
    return rows.drop(names).join(done, on=["symbol", "ts"], how="left",
                                 maintain_order="left").select(rows.columns)  # fmt: skip
