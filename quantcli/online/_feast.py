"""Importing the Feast SDK and keeping its console output off stdout.

Feast is imported here and nowhere else, so every caller gets the same import-time guard
(:func:`import_feast`) and the same output hygiene (:func:`quiet_feast`).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import sys
import warnings
from collections.abc import Iterator
from typing import Any

_PROM_ENV = ("PROMETHEUS_MULTIPROCESS_DIR", "PROMETHEUS_MULTIPROC_DIR")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@contextlib.contextmanager
def _declarations_unchecked() -> Iterator[None]:
    """Feast wraps its declarative classes (Entity, FeatureView, Field, ...) in typeguard's
    ``@typechecked``, which re-parses and recompiles their source on import: most of the cost
    of ``import feast``, paid by every ``predict``, ``serve`` and ``materialize``. quantcli
    builds those objects from declarations it has already validated, so the classes defined
    during this import skip the instrumentation (as they do under ``python -O``). The ``feast``
    CLI in its own process keeps it."""
    try:
        import typeguard
    except ImportError:  # pragma: no cover - Feast requires it
        yield
        return

    def passthrough(target: Any = None, **_: Any) -> Any:
        return (lambda t: t) if target is None else target

    real = typeguard.typechecked
    typeguard.typechecked = passthrough
    try:
        yield
    finally:
        typeguard.typechecked = real


def import_feast() -> Any:
    """Import feast without letting it switch prometheus_client into multiprocess mode.

    ``feast.metrics`` (imported lazily by Feast's reads and materializations) sets
    ``PROMETHEUS_MULTIPROCESS_DIR`` to a temp dir in ``os.environ``; a prometheus_client imported
    after that stores every metric (ours in the HTTP service too) in mmap files there and
    subprocesses inherit it. Importing ``prometheus_client.values`` first keeps values in
    memory; the environment is then restored.
    """
    if "feast.metrics" in sys.modules:
        return sys.modules["feast"]
    saved = {k: os.environ.get(k) for k in _PROM_ENV}
    # explicit order (an import block would be re-sorted by the linter)
    importlib.import_module("prometheus_client.values")
    with _declarations_unchecked():
        feast = importlib.import_module("feast")
        importlib.import_module("feast.metrics")
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    metrics = sys.modules["feast.metrics"]
    made = getattr(metrics, "_prometheus_mp_dir", None)
    if made and getattr(metrics, "_owns_mp_dir", False) and made != saved[_PROM_ENV[0]]:
        # unused (values stay in memory); removed now, since Feast's exit hook misses a kill
        with contextlib.suppress(OSError):
            os.rmdir(made)
    return feast


class _PlainWriter:
    """A text stream that drops ANSI colour codes before writing to ``target``."""

    def __init__(self, target: Any) -> None:
        self.target = target

    def write(self, text: str) -> int:
        return self.target.write(_ANSI.sub("", text))

    def flush(self) -> None:
        self.target.flush()

    def isatty(self) -> bool:
        return False


def _feast_output() -> Any:
    """stderr, stripped of Feast's colour codes unless it is a terminal (and NO_COLOR unset)."""
    err = sys.stderr
    tty = getattr(err, "isatty", lambda: False)()
    return err if tty and not os.environ.get("NO_COLOR") else _PlainWriter(err)


@contextlib.contextmanager
def quiet_feast() -> Iterator[None]:
    """Feast prints coloured progress on stdout (which ``--json`` reserves) and ibis/duckdb warn
    about a deprecated ``fetch_arrow_table``: send the prints to stderr, without colour codes
    when stderr is not a terminal, and drop that one warning."""
    with contextlib.redirect_stdout(_feast_output()), warnings.catch_warnings():
        # a third-party deprecation inside Feast's offline store, harmless to our results
        warnings.filterwarnings("ignore", message=r"fetch_arrow_table\(\) is deprecated")
        yield


__all__ = ["import_feast", "quiet_feast"]
