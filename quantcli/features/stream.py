"""Feature rows for new bars in a live loop: :class:`FeatureStream` keeps each symbol's kernel
state and computes only the bars it is given.

>>> from quantcli.data.synthetic import synthetic_universe
>>> bars = synthetic_universe(2, 260, seed=1)
>>> stream = FeatureStream("technical_v1")
>>> first = stream.update(bars.filter(bars["ts"] < bars["ts"].unique().sort()[250]))
>>> rows = stream.update(bars.filter(bars["ts"] >= bars["ts"].unique().sort()[250]))
>>> rows.height  # 10 new bars of 2 symbols, all past the 199-bar warm-up
20

Each symbol's state is the one :mod:`quantcli.features.engine` carries, so the rows equal the
batch build's bit for bit, whether the stream starts empty (from each symbol's first bar), from
the states the last ``qcli features build`` stored (``FeatureStream(..., store=store)``), or
continues its own. A bar must come after the symbol's last one: a bar at or before it (a
revision, a back-fill) is refused, since the state cannot be rewound -- rebuild with
``qcli features build`` instead. The stream keeps its state in memory only; the offline store
is changed by builds alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from quantcli import resources
from quantcli.errors import InputError
from quantcli.features import state_codec
from quantcli.features.blocks import block_starts, sort_bars
from quantcli.features.cross_section_stage import apply_stream
from quantcli.features.definitions import FeatureSet, load_feature_set
from quantcli.features.engine import KernelPlan

_BAR_COLUMNS = ("open", "high", "low", "close", "volume")


def _presorted(bars: pl.DataFrame) -> bool:
    """Whether ``bars`` are few, typed and already in order (one symbol, rising ``ts``, finite
    prices): a live loop's update, read column by column without the general path's sort and
    lazy plan (which cost more than the kernels for one bar)."""
    if bars.height > 64:
        return False
    schema = bars.schema
    if schema.get("symbol") != pl.String or not isinstance(schema.get("ts"), pl.Datetime):
        return False
    if any(c not in schema for c in _BAR_COLUMNS[1:]):
        return False
    prices = [c for c in _BAR_COLUMNS if c in schema]
    if any(schema[c] != pl.Float64 or bars[c].null_count() for c in prices):
        return False
    if bars["symbol"].null_count() or bars["ts"].null_count():
        return False
    if len(set(bars["symbol"].to_list())) != 1:
        return False
    ts = bars["ts"].to_numpy().astype("datetime64[us]").view(np.int64)
    if (ts[1:] <= ts[:-1]).any():
        return False
    return all(np.isfinite(bars[c].to_numpy()).all() for c in prices)


def _frame(values: np.ndarray, names: list[str]) -> pl.DataFrame:
    """Feature columns from the engine's rows (one row per feature)."""
    if values.shape[1] == 1:
        # a live loop's one bar: one Series transposed in Rust, not one Series per feature
        return pl.DataFrame({"v": values[:, 0]}).transpose(column_names=names)
    return pl.from_numpy(values, schema=names, orient="col")


class FeatureStream:
    """Feature rows of ``feature_set`` for bars as they arrive (see the module docstring).

    Parameters
    ----------
    feature_set
        A feature-set name (or a loaded :class:`FeatureSet`).
    store
        An open :class:`~quantcli.store.offline.OfflineStore`: start every symbol from the kernel
        state its last build stored (states of another plan layout are ignored). Without it,
        every symbol starts before its first bar.
    """

    def __init__(self, feature_set: str | FeatureSet = "technical_v1", store: Any = None) -> None:
        self.feature_set = (
            feature_set if isinstance(feature_set, FeatureSet) else load_feature_set(feature_set)
        )
        self.plan = KernelPlan.of(self.feature_set)
        self._state: dict[str, np.ndarray] = {}
        self._bars: dict[str, int] = {}  # bars seen per symbol
        self._last_us: dict[str, int] = {}  # last bar's ts, epoch microseconds
        self._init = self.plan.init_states(1)[0]
        self._rows = self.plan.feature_rows()
        self._names = self.feature_set.feature_names
        self._store = store  # a cross-sectional feature also ranks against its stored rows
        self._cross = any(g.scope == "cross_section" for g in self.plan.groups)
        if store is not None:
            self._load(store)

    def _load(self, store: Any) -> None:
        if not store.table_exists("feature_stream_state"):
            return
        layout = self.plan.layout_sha256
        rows = store.con.execute(
            resources.sql("features_stream_state"), [self.feature_set.name]
        ).fetchall()
        for symbol, row_layout, n, last_ts, blob, _fingerprint, codec in rows:
            raw = state_codec.decode(blob, codec, self.plan.state_size)
            if row_layout != layout or raw is None:
                continue
            self._state[str(symbol)] = np.frombuffer(raw, dtype="<f8").copy()
            self._bars[str(symbol)] = int(n)
            self._last_us[str(symbol)] = int(last_ts.timestamp() * 1_000_000)

    @property
    def symbols(self) -> list[str]:
        """Symbols with a state, sorted."""
        return sorted(self._state)

    def bars_seen(self, symbol: str) -> int:
        """Bars of ``symbol`` the state has consumed (0 for an unknown symbol)."""
        return self._bars.get(symbol, 0)

    def state(self, symbol: str) -> np.ndarray:
        """A copy of ``symbol``'s state vector (``plan.state_size`` float64)."""
        if symbol not in self._state:
            raise InputError(f"FeatureStream: no state for symbol {symbol!r}")
        return self._state[symbol].copy()

    def update(self, bars: pl.DataFrame) -> pl.DataFrame:
        """Feed new bars; returns their feature rows (``symbol, ts, <features>``, sorted).

        ``bars`` has ``symbol, ts, high, low, close, volume`` (and ``open`` if a kind reads it),
        any number of symbols, each symbol's bars after its last one. Bars still inside a
        symbol's warm-up (its first ``FeatureSet.warmup`` bars) update the state but give no
        row. Nothing changes when a bar is refused (:class:`InputError` naming it).
        A cross-sectional feature (``cs_rank``, ``cs_zscore``) is computed over the rows of this
        call plus, with a ``store``, the stored rows of the other symbols at the same ``ts``.
        """
        if bars.height == 0:
            return self._empty()
        if _presorted(bars):
            srt = bars
            ts_us = bars["ts"].to_numpy().astype("datetime64[us]").view(np.int64)
            starts = np.array([0, bars.height], dtype=np.int64)
            symbols = [bars["symbol"][0]]
        else:
            srt = sort_bars(bars)
            ts_us = srt["ts"].dt.epoch("us").to_numpy()
            starts, symbols = block_starts(srt)
        for k, symbol in enumerate(symbols):
            last = self._last_us.get(symbol)
            if last is not None and int(ts_us[int(starts[k])]) <= last:
                raise InputError(
                    f"FeatureStream.update: bar (symbol {symbol}, ts {srt['ts'][int(starts[k])]})"
                    " is not after the symbol's last bar",
                    hint="a revised or back-filled bar needs a rebuild: qcli features build",
                )
        seen = np.array([self._bars.get(s, 0) for s in symbols], dtype=np.int64)
        states = np.empty((len(symbols), self.plan.state_size), dtype=np.float64)
        for k, symbol in enumerate(symbols):
            states[k] = self._state.get(symbol, self._init)
        skips = np.maximum(self.plan.warmup - seen, 0)
        lengths = np.diff(starts)
        arrays = {c: srt[c].to_numpy() for c in _BAR_COLUMNS if c in srt.columns}
        threads = 1 if srt.height < 20_000 else None
        out, _ = self.plan.run(arrays, starts, skips, states, threads=threads)
        for k, symbol in enumerate(symbols):
            self._state[symbol] = states[k].copy()
            self._bars[symbol] = int(seen[k] + lengths[k])
            self._last_us[symbol] = int(ts_us[int(starts[k + 1]) - 1])
        if not out.shape[1]:
            return self._empty()
        keys = pl.DataFrame([srt["symbol"], srt["ts"]])
        if (skips > 0).any():
            position = np.arange(srt.height) - np.repeat(starts[:-1], lengths)
            keys = keys.filter(pl.Series(position >= np.repeat(skips, lengths)))
        values = out[self._rows]
        rows = keys.hstack(_frame(values, self._names))
        if self._cross:
            rows = apply_stream(rows, self.feature_set, self._store, self.feature_set.table)
        return rows

    def _empty(self) -> pl.DataFrame:
        schema = {"symbol": pl.String, "ts": pl.Datetime("us", "UTC")}
        schema.update(dict.fromkeys(self.feature_set.feature_names, pl.Float64))
        return pl.DataFrame(schema=schema)
