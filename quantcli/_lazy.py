"""Lazy re-exports for package ``__init__`` modules (PEP 562 module ``__getattr__``).

A package lists ``{public name: defining module}``; the defining module is imported on first
access only, so ``import quantcli.models`` stays cheap and ``qcli --help`` imports none of the
heavy libraries (mlflow, lightgbm, onnxruntime, ...) those modules need.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` re-exporting ``exports`` on first use.

    The resolved object is cached in the package's namespace, so later accesses are plain
    attribute lookups.
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
