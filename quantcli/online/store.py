"""quantcli's view of the materialized Feast store: online reads with offline fallback.

Fallback rule (:meth:`OnlineFeatureStore.get_online_features`): a symbol is served from the
offline store's latest row, and marked ``fallback``, when it is

* **missing** -- absent from the online store (every requested feature comes back null or
  NaN), or
* **stale** -- its materialized feature timestamp is older than ``data_end - ttl``, where
  ``data_end`` is the latest feature timestamp of the whole table at the last materialization
  (a symbol whose feed stopped more than ``online_ttl_days`` before the universe's last bar).

Every symbol served is counted as an online ``hit`` or a ``fallback`` (with the reason).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from quantcli import resources
from quantcli.errors import InputError, NotFoundError
from quantcli.online._feast import import_feast, quiet_feast
from quantcli.online.cache import shared_feature_store
from quantcli.online.declaration import feature_refs, load_declaration
from quantcli.online.direct_read import DirectOnlineReader, direct_reader
from quantcli.online.pit import historical_features
from quantcli.online.repo import repo_config, url_with_password
from quantcli.online.state import iso, read_state, state_path
from quantcli.workspace import Workspace

_log = logging.getLogger(__name__)
# "direct": read the online store's rows directly (quantcli.online.direct_read, proven equal
# to the SDK by tests); "feast": FeatureStore.get_online_features.
READ_PATHS = ("direct", "feast")


class OfflineReadNeeded(Exception):
    """``get_online_features(..., offline=False)`` met a symbol only the offline store has."""


@dataclass
class OnlineCounters:
    """Per-symbol serving counts since the wrapper was created."""

    hits: int = 0
    fallback_missing: int = 0
    fallback_stale: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def fallbacks(self) -> int:
        return self.fallback_missing + self.fallback_stale

    def count(self, fallback: Sequence[str | None]) -> None:
        """Count one read: ``None`` is an online hit, else the fallback's reason."""
        with self._lock:
            for reason in fallback:
                if reason is None:
                    self.hits += 1
                elif reason == "missing":
                    self.fallback_missing += 1
                else:
                    self.fallback_stale += 1

    def as_dict(self) -> dict[str, Any]:
        total = self.hits + self.fallbacks
        return {
            "hits": self.hits,
            "fallbacks": self.fallbacks,
            "fallback_missing": self.fallback_missing,
            "fallback_stale": self.fallback_stale,
            "hit_rate": self.hits / total if total else None,
            "fallback_rate": self.fallbacks / total if total else None,
        }


@dataclass(frozen=True)
class OnlineFeatures:
    """Features for a list of symbols, in request order.

    ``values[i][j]`` is feature ``features[j]`` of ``symbols[i]`` (float, NaN when null);
    ``feature_ts[i]`` its feature timestamp (``None`` if unknown); ``fallback[i]`` is ``None``
    for an online hit, else the reason (``"missing"`` or ``"stale"``) it came from the offline
    store.
    """

    symbols: list[str]
    features: list[str]
    values: np.ndarray
    feature_ts: list[str | None]
    fallback: list[str | None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "symbols": self.symbols,
            "features": self.features,
            "rows": [
                {
                    "symbol": s,
                    "feature_ts": self.feature_ts[i],
                    "fallback": self.fallback[i],
                    "values": dict(zip(self.features, self.values[i].tolist(), strict=True)),
                }
                for i, s in enumerate(self.symbols)
            ],
        }


def _response_values(response: Any, names: list[str], n: int) -> np.ndarray:
    """A Feast ``OnlineResponse`` as a float64 ``(symbols, features)`` matrix, NaN for null.

    Reads the response's protobuf directly: every field of the view is ``Float64``, so a value is
    its ``double_val`` when set and null otherwise. This skips ``to_dict()``'s per-value type
    dispatch, a large share of the SDK call, so the wrapper's extra work (fallback checks,
    counters) costs no more than it saves.
    """
    proto = response.proto
    column = {name: j for j, name in enumerate(proto.metadata.feature_names.val)}
    out = np.empty((n, len(names)), dtype=np.float64)
    nan = np.nan
    for j, name in enumerate(names):
        out[:, j] = [
            v.double_val if v.WhichOneof("val") == "double_val" else nan
            for v in proto.results[column[name]].values
        ]
    return out


class OnlineFeatureStore:
    """quantcli's view of the Feast store: online reads with offline fallback, PIT history.

    Obtain it with :func:`get_feature_store`. Thread-safe for concurrent reads.
    """

    def __init__(
        self,
        feature_set: str = "technical_v1",
        *,
        read_path: str = "direct",
        workspace: Workspace | None = None,
    ) -> None:
        if read_path not in READ_PATHS:
            raise InputError(
                f"`read_path` must be one of {READ_PATHS}, got `read_path={read_path!r}`."
            )
        import_feast()
        self.workspace = workspace or Workspace.from_env()
        self.decl = load_declaration(feature_set)
        state = read_state(self.workspace.feast_repo).get(feature_set)
        if state is None:
            raise NotFoundError(
                f"feature set '{feature_set}' has not been materialized to the online store",
                hint=f"run `qcli features materialize --feature-set {feature_set}` first",
            )
        self.online_store = state["online_store"]
        self._cfg = repo_config(
            self.online_store,
            url_with_password(state["redis_url"]) if state.get("redis_url") else None,
            state.get("engine", "local"),
            workspace=self.workspace,
        )
        with quiet_feast():
            self._fs = shared_feature_store(self._cfg)
        self._direct = self._direct_reader() if read_path == "direct" else None
        self.read_path = "direct" if self._direct is not None else "feast"
        self.counters = OnlineCounters()
        self._state_file = state_path(self.workspace.feast_repo)
        self._state_mtime = 0.0
        self._state_checked = 0.0
        self._refs_cache: dict[tuple[str, ...] | None, tuple[list[str], list[str]]] = {}
        self._load_state(force=True)
        if self._direct is not None and not self._direct_agrees_with_sdk():
            # a layout this module does not know (another Feast version?): never serve it
            _log.warning("direct online read disagrees with Feast's SDK: using the SDK")
            self._direct, self.read_path = None, "feast"

    @property
    def feast(self) -> Any:
        """The underlying ``feast.FeatureStore`` (the raw SDK)."""
        return self._fs

    def _direct_agrees_with_sdk(self) -> bool:
        """Start-up self-check: the direct read of one materialized symbol (all features) equals
        the SDK's, bit for bit. Also warms both readers up."""
        symbols = sorted(self._entity_ts)[:1]
        if not symbols:
            return True
        names = self.decl.feature_names
        response = self._fs.get_online_features(
            features=self.feature_refs(names), entity_rows=[{self.decl.entity: symbols[0]}]
        )
        want = _response_values(response, names, 1)
        got = self._direct.read(symbols, names)[0]
        return bool(np.array_equal(got, want, equal_nan=True))

    def _direct_reader(self) -> DirectOnlineReader | None:
        """The direct online-store reader, when Feast's registry holds the view exactly as the
        declaration says (else the SDK is the only faithful reader: ``None``)."""
        from feast.errors import FeatureViewNotFoundException

        try:
            view = self._fs.get_feature_view(self.decl.view_name)
        except FeatureViewNotFoundException:  # the SDK path reports it on every read
            return None
        if sorted(f.name for f in view.features) != sorted(self.decl.feature_names):
            return None
        if list(view.join_keys) != [self.decl.entity]:
            return None
        return direct_reader(self._fs, self.decl.view_name, self.decl.entity)

    def _load_state(self, force: bool = False) -> None:
        """Re-read the materialization state when the file changed (checked at most once a
        second: a concurrent ``materialize`` is picked up within a second)."""
        now = time.monotonic()
        if not force and now - self._state_checked < 1.0:
            return
        self._state_checked = now
        mtime = self._state_file.stat().st_mtime
        if mtime == self._state_mtime:
            return
        state = read_state(self.workspace.feast_repo)[self.decl.feature_set]
        if self._state_mtime and self._direct is not None:
            self._direct.reset()  # re-materialized: reopen the online store
        self._entity_ts: dict[str, str] = state["entity_ts"]
        data_end = datetime.fromisoformat(state["data_end"])
        self._stale_before = iso(data_end - self.decl.ttl)
        self.data_end = state["data_end"]
        self._state_mtime = mtime

    def known_symbols(self) -> list[str]:
        """The symbols written to the online store by the last materialization, sorted."""
        self._load_state()
        return sorted(self._entity_ts)

    def feature_refs(self, features: Sequence[str] | None = None) -> list[str]:
        """``view:feature`` references; accepts bare names, full references or the view's name.

        The view's name alone (``technical_features_v1``) stands for all of its features, in
        declaration order, as Feast's feature services do.
        """
        return feature_refs(self.decl, features)

    def _refs_and_names(self, features: Sequence[str] | None) -> tuple[list[str], list[str]]:
        key = None if features is None else tuple(features)
        cached = self._refs_cache.get(key)
        if cached is None:
            refs = self.feature_refs(features)
            cached = (refs, [r.rpartition(":")[2] for r in refs])
            self._refs_cache[key] = cached
        return cached

    def get_online_features(
        self,
        symbols: Sequence[str],
        feature_refs: Sequence[str] | None = None,
        *,
        offline: bool = True,
    ) -> OnlineFeatures:
        """Latest features of ``symbols`` from the online store, offline fallback when needed.

        Parameters
        ----------
        symbols
            Tickers, served in this order (duplicates allowed).
        feature_refs
            Feature names (``rsi_14``) or references (``technical_features_v1:rsi_14``);
            default all declared features in declaration order.
        offline
            False: raise :class:`OfflineReadNeeded` instead of reading the offline store (which
            may wait seconds for a writer's lock), for a caller that must not block there.
        """
        if isinstance(symbols, str) or not len(symbols):
            raise InputError("`symbols` must be a non-empty list of tickers")
        refs, names = self._refs_and_names(feature_refs)
        self._load_state()
        if self._direct is not None:
            values = self._direct.read(symbols, names)[0]
        else:
            response = self._fs.get_online_features(
                features=refs, entity_rows=[{self.decl.entity: s} for s in symbols]
            )
            values = _response_values(response, names, len(symbols))
        absent = np.isnan(values).all(axis=1)
        feature_ts: list[str | None] = []
        fallback: list[str | None] = []
        need: dict[str, str] = {}
        for i, s in enumerate(symbols):
            ts = self._entity_ts.get(s)
            if ts is None or absent[i]:
                need[s] = "missing"
            elif ts < self._stale_before:  # ISO-8601 UTC strings order like the instants
                need[s] = "stale"
            feature_ts.append(ts)
            fallback.append(need.get(s))
        if need and not offline:
            raise OfflineReadNeeded(f"{len(need)} symbol(s) need the offline store")
        if need:
            self._fill_from_offline(symbols, names, need, values, feature_ts)
        self.counters.count(fallback)
        return OnlineFeatures(list(symbols), names, values, feature_ts, fallback)

    def _fill_from_offline(
        self,
        symbols: Sequence[str],
        names: list[str],
        need: dict[str, str],
        values: np.ndarray,
        feature_ts: list[str | None],
    ) -> None:
        """Overwrite the rows of the symbols in ``need`` with their latest offline row."""
        offline = self._latest_offline(list(need), names)
        for i, s in enumerate(symbols):
            if s in need:
                if s not in offline:
                    raise NotFoundError(
                        f"unknown symbol '{s}': neither the online nor the offline store "
                        f"has features for it (table {self.decl.table})"
                    )
                feature_ts[i], values[i] = offline[s]

    def _latest_offline(
        self, symbols: list[str], names: list[str]
    ) -> dict[str, tuple[str, np.ndarray]]:
        cols = ", ".join(f'"{n}"' for n in names)
        with self.workspace.offline(read_only=True) as store:
            rows = store.con.execute(
                resources.sql("feast_latest_rows").format(table=self.decl.table, columns=cols),
                [symbols],
            ).fetchall()
        return {
            r[0]: (iso(r[1]), np.array([np.nan if v is None else v for v in r[2:]], dtype=float))
            for r in rows
        }

    def get_historical_features(self, entity_df: Any, features: Sequence[str] | None = None) -> Any:
        """Point-in-time correct features for ``entity_df`` through Feast's offline store.

        ``entity_df`` (polars, pandas or pyarrow) has ``symbol`` and ``ts`` (or
        ``event_timestamp``), timezone-aware. ``features`` are feature names, ``view:feature``
        references or the view's name for all of its features (default all). Each row gets the
        latest feature row of its symbol with feature ``ts <= `` the row's ``ts``, provided it is
        at most the TTL old; else nulls. Returns ``symbol, ts, <features>`` in ``entity_df``'s
        row order: a pandas DataFrame for a pandas ``entity_df``, else polars.
        """
        return historical_features(self._fs, self.decl, entity_df, features)

    def stats(self) -> dict[str, Any]:
        """Counters plus the store's identity (for ``/metrics`` and ``/health``)."""
        return {
            "online_store": self.online_store,
            "read_path": self.read_path,
            "feature_view": self.decl.view_name,
            "data_end": self.data_end,
            **self.counters.as_dict(),
        }


def get_feature_store(
    feature_set: str = "technical_v1",
    *,
    read_path: str = "direct",
    workspace: Workspace | None = None,
) -> OnlineFeatureStore:
    """The quantcli wrapper over the materialized Feast store of ``feature_set``.

    ``read_path="direct"`` (default) reads the online store's rows without the SDK's per-value
    Python work (same values, tested); ``"feast"`` goes through
    ``FeatureStore.get_online_features``. Both share the fallback rule and the counters.
    ``workspace`` says where the Feast repo and the offline store live (default
    ``Workspace.from_env()``).

    Examples
    --------
    >>> fs = get_feature_store()  # doctest: +SKIP
    >>> fs.get_online_features(symbols=["SPY", "QQQ"], feature_refs=["rsi_14"]).values
    array([[55.2], [61.7]])
    """
    return OnlineFeatureStore(feature_set, read_path=read_path, workspace=workspace)


__all__ = [
    "READ_PATHS",
    "OfflineReadNeeded",
    "OnlineCounters",
    "OnlineFeatureStore",
    "OnlineFeatures",
    "get_feature_store",
]
