"""Storage: the DuckDB offline store and the Feast online store."""

from quantcli.store.offline import OfflineStore, open_store

__all__ = ["OfflineStore", "open_store"]
