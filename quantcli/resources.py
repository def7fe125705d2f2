"""One loader for the resources that live beside the code: ``sql/`` and ``feature_defs/``.

In a checkout (or an editable install) they are the top-level folders of the repository; in an
installed wheel they ship as package data under ``quantcli/_resources/`` (see ``setup.py``).
Every error names the file.
"""

from __future__ import annotations

import functools
from pathlib import Path

from quantcli.errors import NotFoundError

_PKG = Path(__file__).resolve().parent


@functools.cache
def resource_dir(name: str) -> Path:
    """The directory of resource ``name`` (``"sql"`` or ``"feature_defs"``)."""
    for candidate in (_PKG / "_resources" / name, _PKG.parent / name):
        if candidate.is_dir():
            return candidate
    raise NotFoundError(
        f"resource folder '{name}' not found (looked in {_PKG / '_resources'} and {_PKG.parent})",
        hint="reinstall quantcli; the wheel must ship sql/ and feature_defs/",
    )


@functools.cache
def sql(name: str) -> str:
    """The text of ``sql/<name>.sql``."""
    path = resource_dir("sql") / f"{name}.sql"
    try:
        return path.read_text()
    except FileNotFoundError:
        known = sorted(p.stem for p in resource_dir("sql").glob("*.sql"))
        raise NotFoundError(
            f"{path}: no such SQL file", hint=f"known: {', '.join(known)}"
        ) from None


def feature_def_path(feature_set: str) -> Path:
    """The declaration file of a feature set, e.g. ``feature_defs/technical_v1.toml``."""
    path = resource_dir("feature_defs") / f"{feature_set}.toml"
    if not path.is_file():
        known = sorted(p.stem for p in resource_dir("feature_defs").glob("*.toml"))
        raise NotFoundError(
            f"unknown feature set '{feature_set}' ({path} does not exist)",
            hint=f"known feature sets: {', '.join(known) or 'none'}",
        )
    return path
