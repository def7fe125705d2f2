"""One ``feast.FeatureStore`` per repo configuration and process.

Feast caches resolved feature references in a module-global dict tied to ONE registry snapshot:
two ``FeatureStore`` objects reading in turn clear it on every call, and each read then
re-parses the feature view, several times slower. Sharing one store per configuration keeps
that cache warm; a reused store refreshes its registry, so objects applied since (a
re-materialization) are seen.
"""

from __future__ import annotations

import threading
from typing import Any

from quantcli.online._feast import import_feast

_SHARED: dict[tuple[str, ...], Any] = {}
_LOCK = threading.Lock()
# a bound, so a process that visits many homes (a test session) does not keep them all open
_MAX = 4


def _key(cfg: Any) -> tuple[str, ...]:
    online = cfg.online_store
    return (
        cfg.project,
        str(getattr(cfg.registry, "path", cfg.registry)),
        str(getattr(online, "type", "")),
        str(getattr(online, "path", "")),
        str(getattr(online, "connection_string", "")),
        str(getattr(cfg.batch_engine, "type", "")),
    )


def shared_feature_store(cfg: Any) -> Any:
    """The process's ``feast.FeatureStore`` for the ``RepoConfig`` ``cfg`` (created once,
    registry refreshed on reuse; least recently used evicted beyond a few)."""
    FeatureStore = import_feast().FeatureStore
    key = _key(cfg)
    with _LOCK:
        fs = _SHARED.pop(key, None)
        if fs is None:
            fs = FeatureStore(config=cfg)
        else:
            fs.refresh_registry()
        _SHARED[key] = fs  # most recently used last
        while len(_SHARED) > _MAX:
            _SHARED.pop(next(iter(_SHARED)))
        return fs


__all__ = ["shared_feature_store"]
