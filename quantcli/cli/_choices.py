"""The fixed choices of CLI options, as Enums so help and shell completion list them.

Each option name means one thing in every command:

* ``--executor``  where work runs: ``local`` or ``ray``;
* ``--engine``    how features are computed: ``kernel`` or ``polars``;
* ``--family``    the model family to train: ``lgbm``, ``mlp`` or ``ensemble``;
* ``--model``     a registered model name;
* ``--alias``     a registry alias: ``production`` or ``staging``.

Old spellings (``features materialize --engine local|ray``, ``--model FAMILY`` in ``model
train`` and ``pipeline run``) are hidden aliases that still work for one release and print a
deprecation warning on stderr.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from quantcli.cli._common import stderr
from quantcli.errors import InputError


class Executor(StrEnum):
    local = "local"
    ray = "ray"


class Engine(StrEnum):
    kernel = "kernel"
    polars = "polars"


class Family(StrEnum):
    lgbm = "lgbm"
    mlp = "mlp"
    ensemble = "ensemble"


class Alias(StrEnum):
    production = "production"
    staging = "staging"


class OnlineStore(StrEnum):
    sqlite = "sqlite"
    redis = "redis"


class ExportFormat(StrEnum):
    parquet = "parquet"
    csv = "csv"


class Grid(StrEnum):
    none = "none"
    small = "small"


class Quantize(StrEnum):
    int8 = "int8"


class Int8Method(StrEnum):
    dynamic = "dynamic"
    static = "static"
    weight_only = "weight-only"


class RolloutMode(StrEnum):
    canary = "canary"
    shadow = "shadow"


def deprecated_alias(old: str, new: str, old_value: Any, new_value: Any, default: Any) -> Any:
    """The value of ``new``, taking ``old``'s (with a warning on stderr) when only it was given.

    Both given with different values is a usage error (exit 2).
    """
    if old_value is None:
        return new_value
    old_value = str(old_value)
    if new_value != default and str(new_value) != old_value:
        raise InputError(f"{old} is the deprecated spelling of {new}: give only {new}")
    stderr.print(
        f"Warning: {old} is deprecated here; use {new} {old_value} (the old spelling goes in "
        "the next release).",
        highlight=False,
        markup=False,
    )
    return type(default)(old_value) if default is not None else old_value


__all__ = [
    "Alias",
    "Engine",
    "Executor",
    "Family",
    "Grid",
    "Int8Method",
    "OnlineStore",
    "Quantize",
    "RolloutMode",
    "deprecated_alias",
]
