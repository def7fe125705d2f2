"""One loader for the resources that live beside the code: ``sql/`` and ``feature_defs/``,
and for the feature sets users write (``$QCLI_HOME/feature_defs``, ``QCLI_FEATURE_DEFS``).

In a checkout (or an editable install) they are the top-level folders of the repository; in an
installed wheel they ship as package data under ``quantcli/_resources/`` (see ``setup.py``).
Every error names the file.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

from quantcli.config import qcli_home
from quantcli.errors import InputError, NotFoundError

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


#: Names the code registers on a store connection (Arrow frames and staging views): a table of
#: the same name would be shadowed by them mid-build (tests/test_resources.py keeps this complete).
WORKING_NAMES = frozenset({
    "_incoming", "_outcomes", "cs_done", "cs_keys", "cs_touched", "fingerprint_delta",
    "pit_entities", "staged_bars", "staged_state", "staged_stream_state", "stream_cut",
})  # fmt: skip


@functools.cache
def reserved_table_names() -> frozenset[str]:
    """The store's own tables (every ``CREATE TABLE`` in ``sql/``) and :data:`WORKING_NAMES`:
    names a feature set may not take for its table."""
    created = set()
    for path in resource_dir("sql").glob("*.sql"):
        created.update(
            m.lower()
            for m in re.findall(
                r"CREATE\s+(?:OR\s+REPLACE\s+)?(?:TEMP(?:ORARY)?\s+)?TABLE\s+"
                r"(?:IF\s+NOT\s+EXISTS\s+)?([A-Za-z_][A-Za-z0-9_]*)",
                path.read_text(),
                flags=re.I,
            )
        )
    return frozenset(created | WORKING_NAMES)


#: Extra feature-set directories (``os.pathsep``-separated), searched before ``$QCLI_HOME``'s.
ENV_FEATURE_DEFS = "QCLI_FEATURE_DEFS"


def user_feature_def_dirs() -> list[Path]:
    """Where user feature sets are looked up, in search order: the directories named by
    ``QCLI_FEATURE_DEFS`` (``qcli features --defs DIR`` sets it), then ``$QCLI_HOME/feature_defs``.

    A named directory that does not exist is an :class:`InputError` (a typo would otherwise
    silently fall back to the bundled sets); ``$QCLI_HOME/feature_defs`` is optional.
    """
    dirs: list[Path] = []
    for raw in os.environ.get(ENV_FEATURE_DEFS, "").split(os.pathsep):
        if not raw.strip():
            continue
        path = Path(raw).expanduser().resolve()
        if not path.is_dir():
            raise InputError(
                f"{ENV_FEATURE_DEFS} / --defs: {path} is not a directory",
                hint="name a directory holding <name>.toml feature sets",
            )
        dirs.append(path)
    home = qcli_home() / "feature_defs"
    if home.is_dir():
        dirs.append(home.resolve())
    return dirs


def bundled_feature_sets() -> list[str]:
    """Names of the feature sets shipped with quantcli (``technical_v1``, ...)."""
    return sorted(p.stem for p in resource_dir("feature_defs").glob("*.toml"))


def _check_set_name(feature_set: str) -> None:
    # the name becomes a file name and, through the declaration, a table name
    if not _SET_NAME.fullmatch(feature_set):
        raise InputError(
            f"feature set name {feature_set!r} is not valid",
            hint="use lower-case letters, digits and _ (start with a letter), e.g. desk_fx_v1",
        )


_SET_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")


def feature_def_path(feature_set: str) -> Path:
    """The declaration file of a feature set: the first ``<feature_set>.toml`` in the user
    directories (:func:`user_feature_def_dirs`), else the bundled ``feature_defs/``.

    A user file named like a bundled set is refused (:class:`InputError`): a bundled set's
    name always means the bundled declaration.
    """
    _check_set_name(feature_set)
    bundled = resource_dir("feature_defs") / f"{feature_set}.toml"
    for directory in user_feature_def_dirs():
        path = directory / f"{feature_set}.toml"
        if path.is_file():
            if bundled.is_file():
                raise InputError(
                    f"{path}: feature set '{feature_set}' clashes with the bundled set of "
                    "that name",
                    hint="rename the file (and its table), e.g. to "
                    f"{feature_set.rsplit('_v', 1)[0]}_desk_v1.toml",
                )
            return path
    if bundled.is_file():
        return bundled
    known = sorted({*bundled_feature_sets(), *(s for s, _ in list_feature_sets())})
    raise NotFoundError(
        f"unknown feature set '{feature_set}' (no {feature_set}.toml in "
        f"{', '.join(str(d) for d in user_feature_def_dirs()) or 'the user directories'} "
        "or the bundled feature_defs/)",
        hint=f"known feature sets: {', '.join(known) or 'none'}",
    )


def list_feature_sets() -> list[tuple[str, Path]]:
    """Every visible feature set as ``(name, path)``: user sets first (search order; a name
    seen twice keeps its first file), then the bundled ones."""
    seen: dict[str, Path] = {}
    for directory in user_feature_def_dirs():
        for path in sorted(directory.glob("*.toml")):
            seen.setdefault(path.stem, path)
    for name in bundled_feature_sets():
        seen.setdefault(name, resource_dir("feature_defs") / f"{name}.toml")
    return list(seen.items())
