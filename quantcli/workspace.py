"""One object for where a run's state lives: home, config, offline store, registry and tracking.

A :class:`Workspace` stands for the loose ``tracking_uri=`` / ``store=`` / ``config=`` parameters
a workflow would otherwise thread through its callees. It is resolved once, at the edge (the CLI, a
notebook, a test), from explicit values or the environment, and then passed down::

    from quantcli import Workspace

    ws = Workspace.from_env()                      # $QCLI_HOME, MLFLOW_TRACKING_URI, defaults
    ws = Workspace.at("/data/desk", config="desk.toml")
    with ws.offline(read_only=True) as store:
        store.tables()

The environment is read in :meth:`Workspace.from_env` only, so one workspace sees one home even
if ``QCLI_HOME`` changes later in the process.
"""

from __future__ import annotations

import dataclasses
import os
from functools import cached_property
from pathlib import Path
from typing import Any

from quantcli import config as _config
from quantcli.store.offline import OfflineStore, open_store


@dataclasses.dataclass(frozen=True)
class Workspace:
    """The state directory and the stores of one run (see the module docstring).

    Parameters
    ----------
    home : Path
        The state directory (``$QCLI_HOME``); absolute.
    tracking_uri : str
        The MLflow tracking and registry URI.
    config_path : Path, optional
        The TOML file whose sections override the embedded defaults; ``None`` for the defaults.
    """

    home: Path
    tracking_uri: str
    config_path: Path | None = None

    @classmethod
    def from_env(
        cls,
        *,
        tracking_uri: str | None = None,
        config: str | os.PathLike[str] | None = None,
    ) -> Workspace:
        """``$QCLI_HOME`` (default ``./.qcli``); ``tracking_uri`` or ``MLFLOW_TRACKING_URI`` or
        the embedded ``sqlite:///<home>/mlflow.db``; ``config`` or the embedded defaults."""
        return cls(
            home=_config.qcli_home(),
            tracking_uri=_config.mlflow_tracking_uri(tracking_uri),
            config_path=Path(config) if config is not None else None,
        )

    @classmethod
    def at(
        cls,
        home: str | os.PathLike[str],
        *,
        tracking_uri: str | None = None,
        config: str | os.PathLike[str] | None = None,
    ) -> Workspace:
        """A workspace rooted at ``home``; the tracking URI defaults to ``<home>/mlflow.db``."""
        root = Path(home).expanduser().resolve()
        return cls(
            home=root,
            tracking_uri=tracking_uri or f"sqlite:///{root / 'mlflow.db'}",
            config_path=Path(config) if config is not None else None,
        )

    # -- configuration ------------------------------------------------------------------------
    @cached_property
    def config(self) -> dict[str, dict[str, Any]]:
        """The embedded defaults overridden by ``config_path`` (validated once, then cached)."""
        return _config.load_config(self.config_path)

    def section(self, name: str) -> dict[str, Any]:
        """One config section (a copy, so callers may override keys locally)."""
        return dict(self.config[name])

    # -- locations ----------------------------------------------------------------------------
    @property
    def offline_path(self) -> Path:
        return self.home / "offline.duckdb"

    @property
    def artifacts_dir(self) -> Path:
        return self.home / "mlartifacts"

    @property
    def feast_repo(self) -> Path:
        return self.home / "feast"

    @property
    def keys_dir(self) -> Path:
        return self.home / "keys"

    @property
    def audit_dir(self) -> Path:
        return self.home / "audit"

    @property
    def ledger_path(self) -> Path:
        return self.audit_dir / "ledger.jsonl"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @property
    def locks_dir(self) -> Path:
        return self.home / "locks"

    @property
    def feature_defs_dir(self) -> Path:
        return self.home / "feature_defs"

    # -- stores -------------------------------------------------------------------------------
    def offline(self, read_only: bool = False) -> OfflineStore:
        """Open this workspace's DuckDB offline store (a context manager; closes on exit)."""
        return open_store(read_only=read_only, path=self.offline_path)


__all__ = ["Workspace"]
