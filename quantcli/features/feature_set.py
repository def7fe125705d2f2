"""The feature-set model: :class:`FeatureSet` (one parsed declaration), :class:`FeatureSpec` and
:class:`LabelSpec`; everything else -- the table DDL, the Feast fields, the declaration hash --
is generated from these objects. :mod:`quantcli.features.parsing` builds them from a file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from quantcli import resources
from quantcli.errors import NotFoundError
from quantcli.features.kinds import Kind, get_kind
from quantcli.frequency import TRADING_DAYS, parse_frequency


@dataclass(frozen=True)
class FeatureSpec:
    """One declared feature: a float64 column of the feature table.

    ``lookback`` is the bar of the symbol's history from which the feature is defined (TA-Lib's
    lookback; for a feature of features, its inputs' lookback plus its own). ``inputs`` names
    the features it reads (empty for a kind of bars).
    """

    name: str
    kind: str
    params: dict[str, Any]
    dtype: str
    description: str
    talib: str = ""
    output: str = ""
    lookback: int = 0
    inputs: tuple[str, ...] = ()
    line: int = 0

    @property
    def kind_def(self) -> Kind:
        """The registered :class:`~quantcli.features.kinds.Kind` of this feature."""
        return get_kind(self.kind)

    def canonical(self) -> dict[str, Any]:
        """What defines the feature's values (not its description): the hash input."""
        return {
            "kind": self.kind,
            "params": {k: self.params[k] for k in sorted(self.params)},
            "output": self.output,
            "dtype": self.dtype,
        }


@dataclass(frozen=True)
class LabelSpec:
    """One declared label: a forward return over ``params['horizon']`` bars (not days)."""

    name: str
    kind: str
    params: dict[str, Any]
    description: str

    @property
    def horizon(self) -> int:
        """Bars ahead of the label (its duration is ``horizon * FeatureSet.interval``)."""
        return int(self.params["horizon"])


@dataclass(frozen=True)
class FeatureSet:
    """A loaded feature-set declaration.

    Attributes
    ----------
    name
        The file stem, e.g. ``technical_v1`` (what ``--feature-set`` takes).
    family, version
        ``[feature_set] name`` and ``version`` of the declaration (``technical``, ``1``).
    table
        The offline-store table, e.g. ``technical_features_v1``.
    frequency, interval
        The declared bar interval (``"1d"``) and the same as a ``timedelta``.
    periods_per_year
        Bars per year, the annualization factor of every Sharpe ratio and volatility computed on
        this set's rows (declared, or :func:`default_periods_per_year`).
    features, labels
        The declared features (in column order) and labels.
    path
        The declaration file it was loaded from.
    """

    name: str
    family: str
    version: int
    table: str
    entity: str
    timestamp: str
    inputs: tuple[str, ...]
    online_ttl_days: int
    description: str
    features: tuple[FeatureSpec, ...]
    labels: tuple[LabelSpec, ...] = field(default=())
    frequency: str = "1d"
    periods_per_year: float = float(TRADING_DAYS)
    path: Path | None = None

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def interval(self) -> timedelta:
        return parse_frequency(self.frequency)

    @property
    def warmup(self) -> int:
        """Bars dropped at the start of every symbol: the largest lookback of the set."""
        return max(f.lookback for f in self.features)

    @property
    def bundled(self) -> bool:
        """Whether this is a set shipped with quantcli (not a user's)."""
        return self.path is not None and self.path.parent == resources.resource_dir("feature_defs")

    def feature(self, name: str) -> FeatureSpec:
        for spec in self.features:
            if spec.name == name:
                return spec
        raise NotFoundError(
            f"unknown feature '{name}' in feature set '{self.name}'",
            hint=f"known features: {', '.join(self.feature_names)}",
        )

    def label(self, name: str) -> LabelSpec:
        """The declared label ``name``; :class:`NotFoundError` names the known ones."""
        for spec in self.labels:
            if spec.name == name:
                return spec
        raise NotFoundError(
            f"unknown label '{name}' in feature set '{self.name}'",
            hint=f"known labels: {', '.join(s.name for s in self.labels)}",
        )

    def table_ddl(self) -> str:
        """``CREATE TABLE IF NOT EXISTS`` of the feature table: ``symbol, ts``, then one
        ``DOUBLE NOT NULL`` column per feature in declaration order.

        No PRIMARY KEY: the key ``(symbol, ts)`` is unique by construction (a build deletes a
        symbol's rows before rewriting them), and DuckDB's in-memory ART index of a 24 M row
        table does not fit a bounded build's memory limit.
        """
        cols = [
            f"    {self.entity} VARCHAR NOT NULL",
            f"    {self.timestamp} TIMESTAMP WITH TIME ZONE NOT NULL",
            *(f"    {f.name} DOUBLE NOT NULL" for f in self.features),
        ]
        return f"CREATE TABLE IF NOT EXISTS {self.table} (\n" + ",\n".join(cols) + "\n)"

    def feast_fields(self) -> list[tuple[str, str]]:
        """``(name, dtype)`` of every feature, in column order: the Feast view's schema."""
        return [(f.name, f.dtype) for f in self.features]

    def feature_hashes(self) -> dict[str, str]:
        """sha256 of each feature's definition (kind, params, output, dtype, and the
        definitions of the features it reads), keyed by name. Descriptions are not hashed."""
        out: dict[str, str] = {}
        for spec in self.features:  # inputs come first (checked at load)
            body = {**spec.canonical(), "inputs": [out[n] for n in spec.inputs]}
            out[spec.name] = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        return out

    def declaration_sha256(self) -> str:
        """sha256 of what a released version may not change: the features, their order, the
        table, the bar interval and periods per year, and the labels."""
        body = {
            "table": self.table,
            "features": list(self.feature_hashes().items()),
            "frequency": self.frequency,
            "periods_per_year": self.periods_per_year,
            "labels": [(lab.name, lab.kind, sorted(lab.params.items())) for lab in self.labels],
        }
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "family": self.family,
            "version": self.version,
            "table": self.table,
            "frequency": self.frequency,
            "periods_per_year": self.periods_per_year,
            "warmup": self.warmup,
            "path": str(self.path) if self.path else None,
            "features": [
                {
                    "name": f.name,
                    "kind": f.kind,
                    "params": f.params,
                    "output": f.output,
                    "lookback": f.lookback,
                    "description": f.description,
                }
                for f in self.features
            ],
            "labels": [
                {"name": lab.name, "horizon_bars": lab.horizon, "description": lab.description}
                for lab in self.labels
            ],
            "declaration_sha256": self.declaration_sha256(),
        }


__all__ = ["FeatureSet", "FeatureSpec", "LabelSpec"]
