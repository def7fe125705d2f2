"""A feature-set declaration (``<name>.toml``), parsed once into one :class:`FeatureSet`.

A feature set is declared once -- names, kinds, parameters, the bar interval and periods per
year, the labels -- and everything else is generated from the object: the computation (each
feature's :class:`~quantcli.features.kinds.Kind`), the DuckDB table (:meth:`FeatureSet.table_ddl`),
the Feast fields (:meth:`FeatureSet.feast_fields`), the labels, the declaration hash a build
records (:meth:`FeatureSet.feature_hashes`) and the reference in ``docs/features.md``.

Where sets are found: the directories of ``QCLI_FEATURE_DEFS`` (``--defs DIR``), then
``$QCLI_HOME/feature_defs/``, then the bundled ``feature_defs/`` (see
:func:`quantcli.resources.feature_def_path`). Every error names the file, the line and the key.

Example
-------
>>> from quantcli.features import load_feature_set
>>> fs = load_feature_set("technical_v1")
>>> fs.table, len(fs.features), fs.features[0].name, fs.warmup, fs.periods_per_year
('technical_features_v1', 29, 'nma_9', 199, 252.0)
"""

from __future__ import annotations

import functools
from pathlib import Path

from quantcli import resources
from quantcli.features.feature_set import FeatureSet, FeatureSpec, LabelSpec
from quantcli.features.parsing import parse_feature_set
from quantcli.frequency import resolve_periods_per_year


@functools.cache
def _parse_cached(path: str, name: str, _mtime_ns: int, _size: int) -> FeatureSet:
    return parse_feature_set(Path(path), name)


def load_feature_set(name: str = "technical_v1") -> FeatureSet:
    """Find and load the feature set ``name`` (user directories first, then bundled).

    Parsed once per file version: a cached object is reused until the file changes.

    Raises
    ------
    NotFoundError
        No such feature set (the message lists the known ones).
    InputError
        The declaration is malformed (the message names the file, the line and the key), or a
        user set clashes with a bundled name.
    """
    path = resources.feature_def_path(name)
    st = path.stat()
    return _parse_cached(str(path), name, st.st_mtime_ns, st.st_size)


def feature_names(feature_set: str = "technical_v1") -> list[str]:
    """The feature columns of ``feature_set``, in declaration (= table) order."""
    return load_feature_set(feature_set).feature_names


def periods_per_year(feature_set: str | None = None, explicit: float | None = None) -> float:
    """``explicit`` if given (checked > 0), else the declared periods per year of
    ``feature_set``, else :data:`~quantcli.frequency.TRADING_DAYS`."""
    if explicit is not None or feature_set is None:
        return resolve_periods_per_year(explicit)
    return resolve_periods_per_year(declared=load_feature_set(feature_set).periods_per_year)


__all__ = [
    "FeatureSet",
    "FeatureSpec",
    "LabelSpec",
    "feature_names",
    "load_feature_set",
    "parse_feature_set",
    "periods_per_year",
]
