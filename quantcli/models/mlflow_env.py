"""MLflow's process environment as quantcli wants it: quiet, quick to fail, without Feast's
request-header plugin; and which tracking URIs are the embedded store.

Every module that talks to MLflow calls :func:`quiet_mlflow` before it imports MLflow.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import sys
from pathlib import Path
from urllib.parse import urlsplit

from quantcli.errors import InputError


def quiet_mlflow() -> None:
    """No artifact progress bars or INFO chatter from MLflow on the user's terminal."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    # an unreachable --tracking-uri should fail in seconds, not after minutes of retries
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    _request_headers_without_feast()


#: MLflow request-header plugins quantcli does not load (entry point value prefixes).
IGNORED_HEADER_PLUGINS = ("feast.",)


def _request_headers_without_feast() -> None:
    """Load MLflow's request-header plugins except Feast's, before MLflow loads them all.

    Feast registers an ``mlflow.request_header_provider`` entry point. MLflow loads every such
    plugin on its first HTTP request, which imports all of Feast (seconds added to every
    ``qcli model ...`` call against a tracking server) and lets Feast attach a bearer token --
    from a Kubernetes service-account file, say -- to quantcli's MLflow requests. quantcli
    imports MLflow's registry module once with the entry-point lookup filtered, so those
    plugins are never loaded; every other plugin still is.
    """
    name = "mlflow.tracking.request_header.registry"
    if name in sys.modules:
        return
    import mlflow.utils.plugins as plugins

    lookup = plugins.get_entry_points

    def filtered(group: str):
        found = lookup(group)
        if group != "mlflow.request_header_provider":
            return found
        return [ep for ep in found if not ep.value.startswith(IGNORED_HEADER_PLUGINS)]

    plugins.get_entry_points = filtered
    try:
        importlib.import_module(name)
    finally:
        plugins.get_entry_points = lookup


def is_local_store(tracking_uri: str) -> bool:
    """True for the embedded store (``sqlite:`` or another database URI), False for a server."""
    return not tracking_uri.startswith(("http://", "https://", "databricks"))


#: The tracking-store schemes MLflow opens (its own list, less the hosted-only ones).
TRACKING_SCHEMES = (
    "sqlite", "file", "http", "https", "postgresql", "mysql", "mssql", "databricks",
)  # fmt: skip


def check_tracking_uri(tracking_uri: str) -> None:
    """:class:`InputError` for a URI MLflow would refuse with a traceback (an unknown scheme)
    or would quietly create an empty store for (a SQLite file in a directory that does not
    exist: a typo, not a new registry)."""
    parts = urlsplit(tracking_uri)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme not in TRACKING_SCHEMES:
        shown = f"{parts.scheme}:" if parts.scheme else "(none)"
        raise InputError(
            f"--tracking-uri {tracking_uri!r}: unsupported scheme {shown}",
            hint=f"use one of {', '.join(s + ':' for s in TRACKING_SCHEMES)} "
            "(e.g. sqlite:///path/mlflow.db)",
        )
    if scheme == "sqlite":
        db = tracking_uri.split(":///", 1)[1] if ":///" in tracking_uri else ""
        if db and db != ":memory:" and not Path(db).parent.is_dir():
            raise InputError(
                f"--tracking-uri {tracking_uri!r}: directory {Path(db).parent} does not exist",
                hint="check the path; the embedded registry is $QCLI_HOME/mlflow.db",
            )


#: Seconds a tracking server has to accept a connection before a command gives up on it.
PROBE_TIMEOUT_S = 5.0


def probe_tracking_server(tracking_uri: str) -> None:
    """:class:`InputError` when an ``http(s)`` tracking server does not accept a connection:
    MLflow's client would retry for about 15 s and then fail with a traceback."""
    parts = urlsplit(tracking_uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        with socket.create_connection((parts.hostname, port), timeout=PROBE_TIMEOUT_S):
            pass
    except (OSError, ValueError) as exc:
        where = f"{parts.scheme}://{parts.hostname}{':' + str(parts.port) if parts.port else ''}"
        raise InputError(
            f"cannot reach the MLflow tracking server at {where}: "
            f"{getattr(exc, 'strerror', None) or exc}",
            hint="check --tracking-uri / $MLFLOW_TRACKING_URI and that `mlflow server` is up",
        ) from None


__all__ = [
    "IGNORED_HEADER_PLUGINS", "TRACKING_SCHEMES", "check_tracking_uri", "is_local_store",
    "probe_tracking_server", "quiet_mlflow",
]  # fmt: skip
