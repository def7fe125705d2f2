"""A released feature set cannot change silently: its declaration hash is recorded per build.

Every build records, in ``feature_builds``, the sha256 of the declaration and of each feature's
definition (:meth:`~quantcli.features.definitions.FeatureSet.feature_hashes`). A later build of
the same feature set and version whose declaration differs is refused with an
:class:`~quantcli.errors.InputError` (exit 2) naming the added, removed and changed features:
changing a definition means a new version (a new file, e.g. ``desk_v2.toml``, and a new table),
so the rows already stored, and the models trained on them, keep the meaning they were built with.
Descriptions are not hashed: rewording one is not a new version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from quantcli import resources
from quantcli.errors import InputError
from quantcli.features.definitions import FeatureSet


@dataclass(frozen=True)
class DeclarationChange:
    """How the declaration differs from the one the last build of the same version recorded."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]
    other: bool  # table, order, frequency, periods per year or labels differ

    @property
    def any(self) -> bool:
        return bool(self.added or self.removed or self.changed or self.other)

    def describe(self) -> str:
        parts = []
        for what, names in (("changed", self.changed), ("added", self.added),
                            ("removed", self.removed)):  # fmt: skip
            if names:
                parts.append(f"{what}: {', '.join(names)}")
        if self.other and not parts:
            parts.append("order, table, frequency, periods_per_year or labels changed")
        return "; ".join(parts)


def diff(old: dict[str, str], new: dict[str, str], same_whole: bool) -> DeclarationChange:
    """Compare two ``name -> sha256`` maps (the stored and the current declaration)."""
    return DeclarationChange(
        added=tuple(n for n in new if n not in old),
        removed=tuple(n for n in old if n not in new),
        changed=tuple(n for n in new if n in old and old[n] != new[n]),
        other=not same_whole,
    )


def check_declaration(con, fs: FeatureSet) -> None:
    """Refuse (:class:`InputError`) a build of ``fs`` whose declaration differs from the one
    the newest earlier build of the same feature set and version recorded. Run inside the
    build's transaction, before anything is written."""
    con.execute(resources.sql("schema_declarations"))
    rows = con.execute(
        "SELECT declaration_sha256, feature_sha256 FROM feature_builds "
        "WHERE feature_set = ? AND feature_version = ? AND declaration_sha256 IS NOT NULL "
        "ORDER BY built_at DESC LIMIT 1",
        [fs.name, fs.version],
    ).fetchall()
    if not rows:
        return
    stored_sha, stored_features = rows[0]
    if stored_sha == fs.declaration_sha256():
        return
    change = diff(json.loads(stored_features), fs.feature_hashes(), same_whole=False)
    where = fs.path or fs.name
    raise InputError(
        f"{where}: feature set '{fs.name}' version {fs.version} was built with another "
        f"definition ({change.describe()})",
        hint=f"a released version cannot change: bump `version` and the table (e.g. "
        f"{fs.family}_v{fs.version + 1}.toml), or restore the released definition",
    )


def check_table(con, fs: FeatureSet) -> None:
    """Refuse (:class:`InputError`) a build into a table another feature set has built, or one
    whose columns are not ``fs``'s: a build deletes and rewrites rows of its table, so sharing
    one would silently replace the other set's features (and the owner's next incremental
    build would find its row counts intact and rewrite nothing)."""
    owners = con.execute(
        "SELECT DISTINCT feature_set FROM feature_builds WHERE table_name = ? AND feature_set <> ?",
        [fs.table, fs.name],
    ).fetchall()
    where = fs.path or fs.name
    hint = "a table belongs to one feature set: give this one its own `table` in [feature_set]"
    if owners:
        raise InputError(
            f"{where}: table '{fs.table}' holds feature set "
            f"'{', '.join(sorted(o[0] for o in owners))}', not '{fs.name}'",
            hint=hint,
        )
    columns = [r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
        "AND table_schema = current_schema() ORDER BY ordinal_position", [fs.table],
    ).fetchall()]  # fmt: skip
    expected = [fs.entity, fs.timestamp, *fs.feature_names]
    if columns != expected:
        raise InputError(
            f"{where}: table '{fs.table}' exists with other columns than feature set "
            f"'{fs.name}' declares ({', '.join(columns[:8])}{', ...' if len(columns) > 8 else ''})",
            hint=hint,
        )


def record_declaration(con, fs: FeatureSet, build_id: str) -> None:
    """Store ``fs``'s hashes on the ``feature_builds`` row ``build_id`` (same transaction)."""
    con.execute(
        "UPDATE feature_builds SET declaration_sha256 = ?, feature_sha256 = ? WHERE build_id = ?",
        [fs.declaration_sha256(), json.dumps(fs.feature_hashes(), sort_keys=True), build_id],
    )
