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
import hashlib
import json
import re
import tomllib
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from quantcli import resources
from quantcli.errors import InputError, NotFoundError
from quantcli.features.kinds import Kind, get_kind
from quantcli.frequency import (
    TRADING_DAYS,
    default_periods_per_year,
    parse_frequency,
    resolve_periods_per_year,
)

_IDENT = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_HEAD_KEYS = {
    "name",
    "version",
    "table",
    "entity",
    "timestamp",
    "inputs",
    "online_ttl_days",
    "description",
    "frequency",
    "periods_per_year",
}
_FEATURE_KEYS = {"name", "kind", "params", "output", "dtype", "description", "talib"}


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


class _Lines:
    """Line numbers of a TOML text's ``[[features]]``/``[[labels]]`` entries and their keys
    (tomllib returns values only): errors point at the line a user must edit."""

    def __init__(self, text: str) -> None:
        self.entries: dict[str, list[int]] = {"features": [], "labels": []}
        self.keys: dict[tuple[str, int], dict[str, int]] = {}
        self.head: dict[str, int] = {}
        section: tuple[str, int] | None = None
        for lineno, line in enumerate(text.splitlines(), 1):
            s = line.strip()
            m = re.fullmatch(r"\[\[\s*(features|labels)\s*\]\]", s.split("#")[0].strip())
            if m:
                self.entries[m.group(1)].append(lineno)
                section = (m.group(1), len(self.entries[m.group(1)]) - 1)
                self.keys[section] = {}
                continue
            if s.startswith("["):
                section = ("head", 0) if s.startswith("[feature_set]") else None
                continue
            k = re.match(r"([A-Za-z0-9_]+)\s*=", s)
            if k and section == ("head", 0):
                self.head.setdefault(k.group(1), lineno)
            elif k and section:
                self.keys[section].setdefault(k.group(1), lineno)

    def at(self, table: str, i: int, key: str | None = None) -> int:
        if key is not None:
            line = self.keys.get((table, i), {}).get(key)
            if line:
                return line
        entries = self.entries[table]
        return entries[i] if i < len(entries) else 0


def _where(path: Path, line: int, what: str) -> str:
    return f"{path}:{line}: {what}" if line else f"{path}: {what}"


def _check_feature(
    path: Path, lines: _Lines, i: int, raw: Any, known: dict[str, FeatureSpec], bar_inputs
) -> FeatureSpec:
    line = lines.at("features", i)
    if not isinstance(raw, dict):
        raise InputError(_where(path, line, f"[[features]] #{i + 1} must be a table"))
    label = f"[[features]] #{i + 1}" + (f" ({raw['name']})" if "name" in raw else "")
    for key in ("name", "kind"):
        if key not in raw:
            raise InputError(_where(path, line, f"{label}: missing key `{key}`"))
    for key in sorted(set(raw) - _FEATURE_KEYS):
        raise InputError(
            _where(path, lines.at("features", i, key), f"{label}: unknown key `{key}`"),
            hint=f"keys of a feature: {', '.join(sorted(_FEATURE_KEYS))}",
        )
    name = raw["name"]
    if not isinstance(name, str) or not _IDENT.fullmatch(name) or name in ("symbol", "ts"):
        raise InputError(
            _where(
                path,
                lines.at("features", i, "name"),
                f"{label}: key `name` must be a "
                f"lower-case identifier (letters, digits, _), got {name!r}",
            )
        )
    if name in known:
        raise InputError(
            _where(path, lines.at("features", i, "name"), f"duplicate feature name {name!r}")
        )
    kind_line = lines.at("features", i, "kind")
    kind = get_kind(str(raw["kind"]), where=_where(path, kind_line, f"{label}: key `kind`"))
    raw_params = raw.get("params", {})
    params_line = lines.at("features", i, "params")
    if not isinstance(raw_params, dict):
        raise InputError(_where(path, params_line, f"{label}: key `params` must be a table"))
    params = kind.check_params(raw_params, _where(path, params_line, f"{label}: key `params`"))
    dtype = raw.get("dtype", "float64")
    if dtype != "float64":
        raise InputError(
            _where(
                path,
                lines.at("features", i, "dtype"),
                f"{label}: key `dtype` must be 'float64', got {dtype!r}",
            )
        )
    output = raw.get("output", kind.outputs[0])
    if output not in kind.outputs:
        raise InputError(
            _where(
                path,
                lines.at("features", i, "output"),
                f"{label}: key `output`: kind '{kind.name}' has no output {output!r}",
            ),
            hint=f"its outputs: {', '.join(kind.outputs)}",
        )
    inputs: tuple[str, ...] = ()
    own = int(kind.lookback(params))
    if kind.scope == "bars":
        missing = [c for c in kind.inputs if c not in bar_inputs]
        if missing:
            raise InputError(
                _where(
                    path,
                    kind_line,
                    f"{label}: kind '{kind.name}' reads bar column(s) "
                    f"{missing} not in [feature_set] inputs",
                )
            )
        lookback = own
    else:
        # a feature of features: the roles (e.g. `of`, `other`) name earlier features
        inputs = tuple(str(params[role]) for role in kind.inputs)
        for ref in inputs:
            if ref not in known:
                raise InputError(
                    _where(
                        path,
                        params_line,
                        f"{label}: key `params` names feature {ref!r}, "
                        "which is not declared before it",
                    ),
                    hint=f"declared so far: {', '.join(known) or 'none'}",
                )
        lookback = max(known[r].lookback for r in inputs) + own
    return FeatureSpec(
        name=name,
        kind=kind.name,
        params=params,
        dtype=dtype,
        description=str(raw.get("description", kind.doc)),
        talib=str(raw.get("talib", kind.talib_name)),
        output=output,
        lookback=lookback,
        inputs=inputs,
        line=line,
    )


def _check_label(path: Path, lines: _Lines, i: int, raw: Any) -> LabelSpec:
    line = lines.at("labels", i)
    if not isinstance(raw, dict) or "name" not in raw:
        raise InputError(_where(path, line, f"[[labels]] #{i + 1}: missing key `name`"))
    params = raw.get("params", {})
    horizon = params.get("horizon") if isinstance(params, dict) else None
    if raw.get("kind") != "forward_return":
        raise InputError(
            _where(
                path,
                lines.at("labels", i, "kind"),
                f"label '{raw['name']}': key `kind` must be 'forward_return'",
            )
        )
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise InputError(
            _where(
                path,
                lines.at("labels", i, "params"),
                f"label '{raw['name']}': key `params.horizon` must be an integer >= 1 "
                f"(bars), got {horizon!r}",
            )
        )
    return LabelSpec(
        name=str(raw["name"]),
        kind="forward_return",
        params=dict(params),
        description=str(raw.get("description", "")),
    )


def parse_feature_set(path: Path, name: str | None = None) -> FeatureSet:
    """Parse and check the declaration file ``path`` (any location; ``qcli features check``).

    Raises :class:`InputError` naming the file, the line and the key of the first problem.
    """
    path = Path(path)
    name = name or path.stem
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read: {exc}") from None
    try:
        decl = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML: {exc}") from None
    lines = _Lines(text)
    head = decl.get("feature_set")
    if not isinstance(head, dict):
        raise InputError(f"{path}: missing the [feature_set] table")
    for key in sorted(set(head) - _HEAD_KEYS):
        raise InputError(
            _where(path, lines.head.get(key, 0), f"[feature_set]: unknown key `{key}`"),
            hint=f"keys of [feature_set]: {', '.join(sorted(_HEAD_KEYS))}",
        )
    for key in sorted(set(decl) - {"feature_set", "features", "labels"}):
        raise InputError(
            f"{path}: unknown table [{key}]", hint="tables: feature_set, features, labels"
        )

    def head_value(key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        value = head.get(key, default)
        if isinstance(value, bool) or not isinstance(value, kind):
            raise InputError(
                _where(
                    path,
                    lines.head.get(key, 0),
                    f"[feature_set]: key `{key}` has the wrong type: {value!r}",
                )
            )
        return value

    table = head_value("table", str, None) if "table" in head else None
    if table is None:
        raise InputError(f"{path}: [feature_set]: missing key `table`")
    if not _IDENT.fullmatch(table):
        raise InputError(
            _where(
                path,
                lines.head.get("table", 0),
                f"[feature_set]: key `table` must be a lower-case SQL identifier, got {table!r}",
            )
        )
    version = head_value("version", int, 1)
    if version < 1:
        raise InputError(
            _where(path, lines.head.get("version", 0), "[feature_set]: key `version` must be >= 1")
        )
    frequency = head_value("frequency", str, "1d")
    interval = parse_frequency(
        frequency, _where(path, lines.head.get("frequency", 0), "[feature_set]: key `frequency`")
    )
    ppy = head_value("periods_per_year", (int, float), default_periods_per_year(interval))
    if not 0 < ppy <= 366 * 24 * 3600:
        raise InputError(
            _where(
                path,
                lines.head.get("periods_per_year", 0),
                f"[feature_set]: key `periods_per_year` must be > 0, got {ppy!r}",
            )
        )
    bar_inputs = tuple(head_value("inputs", list, ["open", "high", "low", "close", "volume"]))
    raw_features = decl.get("features", [])
    if not isinstance(raw_features, list) or not raw_features:
        raise InputError(f"{path}: declares no [[features]]")
    known: dict[str, FeatureSpec] = {}
    for i, raw in enumerate(raw_features):
        spec = _check_feature(path, lines, i, raw, known, bar_inputs)
        known[spec.name] = spec
    raw_labels = decl.get("labels", [])
    labels = tuple(_check_label(path, lines, i, lab) for i, lab in enumerate(raw_labels))
    return FeatureSet(
        name=name,
        family=str(head_value("name", str, name)),
        version=version,
        table=table,
        entity=str(head_value("entity", str, "symbol")),
        timestamp=str(head_value("timestamp", str, "ts")),
        inputs=bar_inputs,
        online_ttl_days=int(head_value("online_ttl_days", int, 5)),
        description=str(head_value("description", str, "")),
        features=tuple(known.values()),
        labels=labels,
        frequency=frequency,
        periods_per_year=float(ppy),
        path=path,
    )


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
