"""Lazy import of optional or heavy packages through one helper.

Heavy libraries (mlflow, feast, onnxruntime, lightgbm, ray) are imported inside the functions that
need them, so ``qcli --help`` stays instant; ``tests/test_cli_shell.py`` checks ``sys.modules``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from quantcli.errors import MissingDependencyError

# package -> the install command that brings it
_INSTALL_HINTS = {
    "ray": 'pip install -e ".[ray]"  (or: pip install "quantcli[ray]")',
    "talib": 'pip install -e ".[dev]"  (TA-Lib is a test oracle, in the dev extra)',
    "skfolio": 'pip install -e ".[dev]"',
}


def import_optional(name: str, *, purpose: str | None = None) -> ModuleType:
    """Import ``name`` or raise :class:`MissingDependencyError` naming what to install."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        top = name.split(".")[0]
        hint = _INSTALL_HINTS.get(top, f"pip install {top}")
        what = f" (needed for {purpose})" if purpose else ""
        raise MissingDependencyError(
            f"the optional package '{top}' is not installed{what}", hint=f"install it: {hint}"
        ) from exc
