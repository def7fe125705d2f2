"""A direct read of Feast's online store: the same values as ``FeatureStore.get_online_features``.

Feast's SDK spends almost all of an online read in Python (registry lookups, entity
de-duplication, one protobuf per value, the response proto). The storage itself is a single
indexed SQLite query or one Redis pipeline of ``HMGET``\\ s. :class:`DirectOnlineReader` issues
exactly that query, with Feast's own key encoding, and decodes the stored ``ValueProto`` bytes
in bulk.

What it returns is what the SDK returns (tested against the SDK on SQLite and on a real
redis-server, ``tests/online/test_online_read.py``):

* ``values[i, j]``: feature ``names[j]`` of ``symbols[i]`` as float64; NaN when the SDK gives
  null (entity absent, feature absent, or a stored value that is not a ``double_val``).
* ``event_ts[i]``: the row's event timestamp in **epoch seconds** (UTC), ``0`` when the entity is
  absent (the SDK's null ``Timestamp``). Feast's online read applies no TTL: an old row is
  returned as it is; quantcli's staleness rule lives in the wrapper
  (:class:`quantcli.online.store.OnlineFeatureStore`), above both read paths. A Redis key
  expired by ``key_ttl_seconds`` is absent for both.

Layouts read (Feast 0.67, ``entity_key_serialization_version=3``, no feature-view versioning):

* SQLite: table ``<project>_<view>`` with one row per ``(entity_key, feature_name)``: ``value``
  (serialised ``ValueProto``) and ``event_ts`` (epoch seconds).
* Redis: one hash per entity at ``serialize_entity_key(key) + project``; field
  ``mmh3("<view>:<feature>")`` holds the serialised ``ValueProto``, field ``_ts:<view>`` the
  serialised ``Timestamp``.

Anything else (a cluster or sentinel Redis, versioned views) is not read directly:
:func:`direct_reader` returns ``None`` and the wrapper keeps using the SDK.
"""

from __future__ import annotations

import sqlite3
import struct
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from quantcli.online._feast import import_feast

# A ValueProto holding only a double: field 5, wire type 1 (tag byte 0x29) + 8 bytes little-endian.
_DOUBLE_TAG = 0x29
_DOUBLE_LEN = 9
_DOUBLE_RECORD = np.dtype([("tag", "u1"), ("value", "<f8")])
# Entity keys are cached per symbol; bounded so a stream of junk tickers cannot grow it forever.
_KEY_CACHE_MAX = 100_000


def _decode_values(blobs: Sequence[bytes | None]) -> np.ndarray:
    """Serialised ``ValueProto``\\ s -> float64, NaN for anything that is not a ``double_val``."""
    out = np.full(len(blobs), np.nan)
    if not blobs:
        return out
    if None not in blobs and set(map(len, blobs)) == {_DOUBLE_LEN}:
        rec = np.frombuffer(b"".join(blobs), dtype=_DOUBLE_RECORD)  # type: ignore[arg-type]
        if (rec["tag"] == _DOUBLE_TAG).all():
            return rec["value"].astype(np.float64)
    from feast.protos.feast.types.Value_pb2 import Value as ValueProto

    for k, b in enumerate(blobs):
        if not b:
            continue
        if len(b) == _DOUBLE_LEN and b[0] == _DOUBLE_TAG:
            out[k] = struct.unpack_from("<d", b, 1)[0]
            continue
        v = ValueProto()
        v.ParseFromString(b)
        if v.WhichOneof("val") == "double_val":
            out[k] = v.double_val
    return out


class DirectOnlineReader:
    """Reads one feature view of Feast's SQLite or Redis online store without the SDK.

    Build it with :func:`direct_reader`. Thread-safe: SQLite connections are per thread, the
    Redis client is a connection pool.

    Parameters
    ----------
    kind
        ``"sqlite"`` or ``"redis"``.
    project, view, entity
        Feast project, feature-view name and entity join key (``symbol``).
    sqlite_path
        The SQLite online store file (``kind="sqlite"``).
    redis_kwargs
        ``redis.Redis(**redis_kwargs)`` arguments, parsed by Feast from its connection string
        (``kind="redis"``).
    """

    def __init__(
        self,
        kind: str,
        project: str,
        view: str,
        entity: str,
        *,
        sqlite_path: str | None = None,
        redis_kwargs: dict[str, Any] | None = None,
    ) -> None:
        import_feast()  # first, so Feast's package import is the guarded one
        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
        from feast.protos.feast.types.Value_pb2 import Value as ValueProto

        if kind not in ("sqlite", "redis"):
            raise ValueError(f"`kind` must be 'sqlite' or 'redis', got kind={kind!r}")
        self.kind = kind
        self.project = project
        self.view = view
        self.entity = entity
        self._serialize = serialize_entity_key
        self._key_proto = EntityKeyProto
        self._value_proto = ValueProto
        self._keys: dict[str, bytes] = {}
        self._sqlite_path = sqlite_path
        self._table = f'"{project}_{view}"'
        self._local = threading.local()
        self._generation = 0
        self._redis = None
        if kind == "redis":
            import redis

            self._redis = redis.Redis(**(redis_kwargs or {}))
            self._fields: dict[tuple[str, ...], list[bytes | str]] = {}
            self._ts_field = f"_ts:{view}"

    # -- keys ---------------------------------------------------------------------------------
    def entity_key(self, symbol: str) -> bytes:
        """Feast's serialised entity key of ``symbol`` (v3 encoding; cached)."""
        key = self._keys.get(symbol)
        if key is None:
            proto = self._key_proto(
                join_keys=[self.entity], entity_values=[self._value_proto(string_val=symbol)]
            )
            key = self._serialize(proto, entity_key_serialization_version=3)
            if len(self._keys) >= _KEY_CACHE_MAX:
                self._keys.clear()
            self._keys[symbol] = key
        return key

    def reset(self) -> None:
        """Drop the open connections (the store was re-materialized: the file may be new)."""
        self._generation += 1

    # -- reads --------------------------------------------------------------------------------
    def read(self, symbols: Sequence[str], names: Sequence[str]) -> tuple[np.ndarray, list[int]]:
        """``(values, event_ts)`` of ``symbols`` (request order, duplicates allowed) x ``names``.

        ``values`` is float64 ``(len(symbols), len(names))``, NaN where the SDK returns null;
        ``event_ts`` is epoch seconds per symbol, 0 when the entity is absent.
        """
        unique = list(dict.fromkeys(symbols))
        if self.kind == "sqlite":
            vals, ts = self._read_sqlite(unique, names)
        else:
            vals, ts = self._read_redis(unique, names)
        if len(unique) == len(symbols):
            return vals, ts
        pos = {s: k for k, s in enumerate(unique)}
        idx = [pos[s] for s in symbols]
        return vals[idx], [ts[k] for k in idx]

    def _sqlite_con(self) -> sqlite3.Connection:
        local = self._local
        con = getattr(local, "con", None)
        if con is None or local.generation != self._generation:
            if con is not None:
                con.close()
            # read-only, no type detection: event_ts comes back as Feast stored it (epoch int)
            uri = Path(self._sqlite_path).resolve().as_uri() + "?mode=ro"
            con = sqlite3.connect(uri, uri=True, check_same_thread=False)
            local.con, local.generation = con, self._generation
        return con

    def _read_sqlite(self, symbols: list[str], names: Sequence[str]) -> tuple[np.ndarray, list]:
        keys = [self.entity_key(s) for s in symbols]
        row_of = {k: i for i, k in enumerate(keys)}
        col_of = {n: j for j, n in enumerate(names)}
        try:
            rows = (
                self._sqlite_con()
                .execute(
                    f"SELECT entity_key, feature_name, value, event_ts FROM {self._table} "
                    f"WHERE entity_key IN ({','.join('?' * len(keys))})",
                    keys,
                )
                .fetchall()
            )
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise
            rows = []  # nothing materialized for this view: every entity is absent
        out = np.full((len(symbols), len(names)), np.nan)
        ts = [0] * len(symbols)
        if not rows:
            return out, ts
        entity_keys, features, blobs, event_ts = zip(*rows, strict=True)
        cells_i = [row_of[k] for k in entity_keys]
        cells_j = [col_of.get(f, -1) for f in features]
        # Feast reports the entity's event_ts (one materialization writes all its features)
        for i, t in dict(zip(cells_i, event_ts, strict=True)).items():
            ts[i] = int(t)
        if -1 in cells_j:  # stored features that were not requested
            keep = [k for k, j in enumerate(cells_j) if j >= 0]
            cells_i = [cells_i[k] for k in keep]
            cells_j = [cells_j[k] for k in keep]
            blobs = tuple(blobs[k] for k in keep)
        if blobs:
            out[cells_i, cells_j] = _decode_values(blobs)
        return out, ts

    def _read_redis(self, symbols: list[str], names: Sequence[str]) -> tuple[np.ndarray, list]:
        key = tuple(names)
        fields = self._fields.get(key)
        if fields is None:
            from feast.infra.online_stores.helpers import _mmh3

            fields = [_mmh3(f"{self.view}:{n}") for n in names] + [self._ts_field]
            self._fields[key] = fields
        project = self.project.encode("utf-8")
        assert self._redis is not None
        with self._redis.pipeline(transaction=False) as pipe:
            for s in symbols:
                pipe.hmget(self.entity_key(s) + project, fields)
            replies = pipe.execute()
        n = len(names)
        out = np.full((len(symbols), n), np.nan)
        ts = [0] * len(symbols)
        for i, reply in enumerate(replies):
            out[i] = _decode_values(reply[:n])
            if reply[n]:
                ts[i] = _timestamp_seconds(reply[n])
        return out, ts


def _timestamp_seconds(blob: bytes) -> int:
    """Seconds of a serialised ``google.protobuf.Timestamp`` (Feast writes whole seconds)."""
    from google.protobuf.timestamp_pb2 import Timestamp

    t = Timestamp()
    t.ParseFromString(blob)
    return int(t.seconds)


def direct_reader(feast_store: Any, view_name: str, entity: str) -> DirectOnlineReader | None:
    """A :class:`DirectOnlineReader` for ``view_name`` of ``feast_store``, or ``None`` when its
    online store is not one whose layout this module reads (then use the SDK)."""
    cfg = feast_store.config
    online = cfg.online_store
    kind = getattr(online, "type", "sqlite")
    if getattr(cfg.registry, "enable_online_feature_view_versioning", False):
        return None
    if cfg.entity_key_serialization_version != 3:
        return None
    if kind == "sqlite":
        path = Path(online.path)
        if not path.is_absolute():
            path = Path(cfg.repo_path or ".") / path
        return DirectOnlineReader(kind, cfg.project, view_name, entity, sqlite_path=str(path))
    redis_type = getattr(online, "redis_type", None)
    if kind == "redis" and getattr(redis_type, "value", redis_type) == "redis":
        import_feast()
        from feast.infra.online_stores.redis import RedisOnlineStore

        nodes, kwargs = RedisOnlineStore._parse_connection_string(online.connection_string)
        kwargs["host"], kwargs["port"] = nodes[0]["host"], nodes[0]["port"]
        return DirectOnlineReader(kind, cfg.project, view_name, entity, redis_kwargs=kwargs)
    return None


__all__ = ["DirectOnlineReader", "direct_reader"]
