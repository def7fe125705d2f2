"""The declaration of a feature set (``feature_defs/<name>.toml``), loaded and checked.

A feature set is declared once -- names, kinds, parameters, dtypes, descriptions, version and the
labels -- and everything else is generated from it: the lazy Polars expressions that compute it
(:mod:`quantcli.features.expressions`), the DuckDB table's column order, and the Feast feature
view.

Example
-------
>>> from quantcli.features import load_feature_set
>>> fs = load_feature_set("technical_v1")
>>> fs.table, len(fs.features), fs.features[0].name, fs.warmup
('technical_features_v1', 29, 'nma_9', 199)
"""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass, field
from typing import Any

from quantcli import resources
from quantcli.errors import InputError, NotFoundError

# The kinds the engines know, with the parameters each one requires. Keep in sync with
# quantcli.features.expressions (KIND_CODES and the polars builders; tests check both).
KIND_PARAMS: dict[str, tuple[str, ...]] = {
    "nma": ("window",),
    "bb_pct": ("window", "nbdev"),
    "bb_width": ("window", "nbdev"),
    "volume_z": ("window",),
    "rsi": ("window",),
    "roc": ("window",),
    "macd": ("fast", "slow", "signal"),
    "macd_signal": ("fast", "slow", "signal"),
    "macd_hist": ("fast", "slow", "signal"),
    "adx": ("window",),
    "plus_di": ("window",),
    "minus_di": ("window",),
    "atr": ("window",),
    "volatility": ("window",),
    "stoch_k": ("fastk", "slowk", "slowd"),
    "stoch_d": ("fastk", "slowk", "slowd"),
    "obv": (),
    "obv_ema": ("window",),
    "return": ("window",),
}


def lookback(kind: str, params: dict[str, Any]) -> int:
    """Index of the first defined value of a feature in a symbol's history (TA-Lib's lookback).

    Bars ``0 .. lookback - 1`` of every symbol are warm-up: the feature is undefined there.
    """
    p = params
    if kind in ("nma", "bb_pct", "bb_width", "volume_z"):
        return int(p["window"]) - 1
    if kind in ("rsi", "roc", "return", "atr", "plus_di", "minus_di", "volatility"):
        # volatility: STDDEV(n) of ROCP(1), which itself starts at bar 1
        return int(p["window"])
    if kind in ("macd", "macd_signal", "macd_hist"):
        return max(int(p["fast"]), int(p["slow"])) - 1 + int(p["signal"]) - 1
    if kind == "adx":
        return 2 * int(p["window"]) - 1
    if kind in ("stoch_k", "stoch_d"):
        return int(p["fastk"]) - 1 + int(p["slowk"]) - 1 + int(p["slowd"]) - 1
    if kind == "obv":
        return 0
    if kind == "obv_ema":
        return int(p["window"]) - 1
    raise InputError(
        f"unknown feature kind '{kind}'", hint=f"known kinds: {', '.join(KIND_PARAMS)}"
    )


@dataclass(frozen=True)
class FeatureSpec:
    """One declared feature: a float64 column of the feature table."""

    name: str
    kind: str
    params: dict[str, Any]
    dtype: str
    description: str
    talib: str = ""

    @property
    def lookback(self) -> int:
        """Warm-up bars before the first defined value (see :func:`lookback`)."""
        return lookback(self.kind, self.params)


@dataclass(frozen=True)
class LabelSpec:
    """One declared label (a forward return over ``params['horizon']`` bars)."""

    name: str
    kind: str
    params: dict[str, Any]
    description: str

    @property
    def horizon(self) -> int:
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
    features, labels
        The declared features (in column order) and labels.
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

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def warmup(self) -> int:
        """Bars dropped at the start of every symbol: the largest lookback of the set."""
        return max(f.lookback for f in self.features)

    def label(self, name: str) -> LabelSpec:
        """The declared label ``name``; :class:`NotFoundError` names the known ones."""
        for spec in self.labels:
            if spec.name == name:
                return spec
        raise NotFoundError(
            f"unknown label '{name}' in feature set '{self.name}'",
            hint=f"known labels: {', '.join(s.name for s in self.labels)}",
        )


def _check_feature(path: str, i: int, raw: dict[str, Any]) -> FeatureSpec:
    where = f"{path}: [[features]] #{i + 1}"
    for key in ("name", "kind", "dtype", "description"):
        if key not in raw:
            raise InputError(f"{where}: missing key '{key}'")
    kind = raw["kind"]
    if kind not in KIND_PARAMS:
        raise InputError(
            f"{where} ({raw['name']}): unknown kind '{kind}'",
            hint=f"known kinds: {', '.join(KIND_PARAMS)}",
        )
    params = dict(raw.get("params", {}))
    missing = [p for p in KIND_PARAMS[kind] if p not in params]
    if missing:
        raise InputError(f"{where} ({raw['name']}): kind '{kind}' needs params {missing}")
    for p in KIND_PARAMS[kind]:
        value = params[p]
        if not isinstance(value, int | float) or value < 1:
            raise InputError(
                f"{where} ({raw['name']}): param `{p}` must be a number >= 1, got `{p}={value!r}`"
            )
    if raw["dtype"] != "float64":
        raise InputError(f"{where} ({raw['name']}): dtype must be 'float64', got {raw['dtype']!r}")
    return FeatureSpec(
        name=raw["name"],
        kind=kind,
        params=params,
        dtype=raw["dtype"],
        description=raw["description"],
        talib=raw.get("talib", ""),
    )


@functools.cache
def load_feature_set(name: str = "technical_v1") -> FeatureSet:
    """Load and check the declaration ``feature_defs/<name>.toml``.

    Raises
    ------
    NotFoundError
        No such feature set (the message lists the known ones).
    InputError
        The declaration is malformed (the message names the file and the entry).
    """
    path = resources.feature_def_path(name)
    try:
        decl = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML: {exc}") from None
    head = decl.get("feature_set")
    if not isinstance(head, dict):
        raise InputError(f"{path}: missing the [feature_set] table")
    raw_features = decl.get("features", [])
    features = tuple(_check_feature(str(path), i, f) for i, f in enumerate(raw_features))
    if not features:
        raise InputError(f"{path}: declares no [[features]]")
    names = [f.name for f in features]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"{path}: duplicate feature names {dupes}")
    labels = tuple(
        LabelSpec(
            name=lab["name"],
            kind=lab["kind"],
            params=dict(lab.get("params", {})),
            description=lab.get("description", ""),
        )
        for lab in decl.get("labels", [])
    )
    for lab in labels:
        if lab.kind != "forward_return" or int(lab.params.get("horizon", 0)) < 1:
            raise InputError(
                f"{path}: label '{lab.name}' must be kind 'forward_return' with horizon >= 1"
            )
    return FeatureSet(
        name=name,
        family=head.get("name", name),
        version=int(head.get("version", 1)),
        table=head["table"],
        entity=head.get("entity", "symbol"),
        timestamp=head.get("timestamp", "ts"),
        inputs=tuple(head.get("inputs", ("open", "high", "low", "close", "volume"))),
        online_ttl_days=int(head.get("online_ttl_days", 5)),
        description=head.get("description", ""),
        features=features,
        labels=labels,
    )


def feature_names(feature_set: str = "technical_v1") -> list[str]:
    """The feature columns of ``feature_set``, in declaration (= table) order."""
    return load_feature_set(feature_set).feature_names
