"""What Feast needs from a feature-set declaration (``feature_defs/<name>.toml``).

The declaration is parsed once, by :func:`quantcli.features.load_feature_set`; this module only
checks that it can become a Feast feature view and keeps the fields Feast sees.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from quantcli.errors import InputError, NotFoundError
from quantcli.features.definitions import load_feature_set

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class FeastDeclaration:
    """The Feast-relevant part of a feature-set declaration."""

    feature_set: str
    version: int
    table: str
    entity: str
    timestamp: str
    ttl_days: int
    description: str
    features: tuple[tuple[str, str], ...]  # (name, description), declaration order

    @property
    def feature_names(self) -> list[str]:
        return [name for name, _ in self.features]

    @property
    def view_name(self) -> str:
        """The Feast feature view is named after the offline table (``technical_features_v1``)."""
        return self.table

    @property
    def ttl(self) -> timedelta:
        return timedelta(days=self.ttl_days)

    def fingerprint(self) -> str:
        """Changes whenever a field Feast sees changes (forces a full materialization)."""
        blob = json.dumps([self.table, self.ttl_days, self.feature_names]).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def load_declaration(feature_set: str = "technical_v1") -> FeastDeclaration:
    """The Feast-relevant part of ``feature_set``.

    Raises
    ------
    InputError
        A table, entity or feature name is not an identifier (it is spliced into SQL and into
        the generated definitions), a feature is not ``float64``, or no feature is declared.
    NotFoundError
        No such feature set.
    """
    fs = load_feature_set(feature_set)
    where = fs.path or feature_set
    for name in [fs.table, fs.entity, fs.timestamp, *fs.feature_names]:
        if not _IDENT.match(name):
            raise InputError(f"{where}: '{name}' is not a valid table/feature identifier")
    for f in fs.features:
        if f.dtype != "float64":
            raise InputError(f"{where}: feature '{f.name}' must be float64 for Feast (Float64)")
    if not fs.features:
        raise InputError(f"{where}: declares no [[features]]")
    return FeastDeclaration(
        feature_set=feature_set,
        version=int(fs.version),
        table=fs.table,
        entity=fs.entity,
        timestamp=fs.timestamp,
        ttl_days=int(fs.online_ttl_days),
        description=fs.description,
        features=tuple((f.name, f.description) for f in fs.features),
    )


def feature_refs(decl: FeastDeclaration, features: Sequence[str] | None = None) -> list[str]:
    """``view:feature`` references; accepts bare names, full references or the view's name.

    The view's name alone (``technical_features_v1``) stands for all of its features, in
    declaration order, as Feast's feature services do; ``None`` means all of them.
    """
    if isinstance(features, str):
        raise InputError("`features` must be a list of names, got a single string")
    names = decl.feature_names if features is None else list(features)
    if not names:
        raise InputError("`feature_refs` is empty: name at least one feature")
    if decl.view_name in names:
        expanded: list[str] = []
        for n in names:
            expanded += decl.feature_names if n == decl.view_name else [n]
        names = list(dict.fromkeys(expanded))
    refs = []
    known = set(decl.feature_names)
    for n in names:
        view, _, bare = n.rpartition(":")
        if (view and view != decl.view_name) or bare not in known:
            raise NotFoundError(
                f"unknown feature '{n}' in feature view '{decl.view_name}'",
                hint=f"known: {', '.join(decl.feature_names[:5])}, ...",
            )
        refs.append(f"{decl.view_name}:{bare}")
    return refs


__all__ = ["FeastDeclaration", "feature_refs", "load_declaration"]
