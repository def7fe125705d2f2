"""MLflow's process environment as quantcli wants it: quiet, quick to fail, without Feast's
request-header plugin; and which tracking URIs are the embedded store.

Every module that talks to MLflow calls :func:`quiet_mlflow` before it imports MLflow.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys


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


__all__ = ["IGNORED_HEADER_PLUGINS", "is_local_store", "quiet_mlflow"]
