"""Reading a feature-set file (``<name>.toml``) into a :class:`FeatureSet`, checked.

Every error names the file, the line and the key a user must edit: tomllib returns values only,
so :class:`_Lines` maps each ``[[features]]``/``[[labels]]`` entry and key to its line.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from quantcli import resources
from quantcli.errors import InputError
from quantcli.features.feature_set import FeatureSet, FeatureSpec, LabelSpec
from quantcli.features.kinds import BAR_INPUTS, Kind, get_kind
from quantcli.frequency import default_periods_per_year, parse_frequency

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


class _Feature:
    """The checks of one ``[[features]]`` entry, in the order a user reads the entry."""

    def __init__(self, path: Path, lines: _Lines, i: int, raw: Any) -> None:
        self.path, self.lines, self.i, self.raw = path, lines, i, raw
        self.line = lines.at("features", i)
        if not isinstance(raw, dict):
            raise InputError(_where(path, self.line, f"[[features]] #{i + 1} must be a table"))
        self.label = f"[[features]] #{i + 1}" + (f" ({raw['name']})" if "name" in raw else "")

    def at(self, key: str, what: str) -> str:
        """``what`` located at ``key``'s line, prefixed with the entry's label."""
        return _where(self.path, self.lines.at("features", self.i, key), f"{self.label}: {what}")

    def name(self, known: dict[str, FeatureSpec]) -> str:
        for key in ("name", "kind"):
            if key not in self.raw:
                raise InputError(_where(self.path, self.line, f"{self.label}: missing key `{key}`"))
        for key in sorted(set(self.raw) - _FEATURE_KEYS):
            raise InputError(
                self.at(key, f"unknown key `{key}`"),
                hint=f"keys of a feature: {', '.join(sorted(_FEATURE_KEYS))}",
            )
        name = self.raw["name"]
        if not isinstance(name, str) or not _IDENT.fullmatch(name) or name in ("symbol", "ts"):
            raise InputError(
                self.at(
                    "name",
                    "key `name` must be a lower-case identifier (letters, digits, _), "
                    f"got {name!r}",
                )
            )
        if name in known:
            raise InputError(
                _where(
                    self.path,
                    self.lines.at("features", self.i, "name"),
                    f"duplicate feature name {name!r}",
                )
            )
        return name

    def kind(self) -> tuple[Kind, dict[str, Any], str, str]:
        """The kind, its checked params, the dtype and the output."""
        kind = get_kind(str(self.raw["kind"]), where=self.at("kind", "key `kind`"))
        raw_params = self.raw.get("params", {})
        if not isinstance(raw_params, dict):
            raise InputError(self.at("params", "key `params` must be a table"))
        params = kind.check_params(raw_params, self.at("params", "key `params`"))
        dtype = self.raw.get("dtype", "float64")
        if dtype != "float64":
            raise InputError(self.at("dtype", f"key `dtype` must be 'float64', got {dtype!r}"))
        output = self.raw.get("output", kind.outputs[0])
        if output not in kind.outputs:
            raise InputError(
                self.at("output", f"key `output`: kind '{kind.name}' has no output {output!r}"),
                hint=f"its outputs: {', '.join(kind.outputs)}",
            )
        return kind, params, dtype, output

    def inputs(
        self, kind: Kind, params: dict[str, Any], known: dict[str, FeatureSpec], bar_inputs
    ) -> tuple[tuple[str, ...], int]:
        """The features it reads (none for a kind of bars) and its lookback in bars."""
        own = int(kind.lookback(params))
        if kind.scope == "bars":
            missing = [c for c in kind.inputs if c not in bar_inputs]
            if missing:
                raise InputError(
                    self.at(
                        "kind",
                        f"kind '{kind.name}' reads bar column(s) {missing} not in "
                        "[feature_set] inputs",
                    )
                )
            return (), own
        # a feature of features: the roles (e.g. `of`, `other`) name earlier features
        inputs = tuple(str(params[role]) for role in kind.inputs)
        for ref in inputs:
            if ref not in known:
                raise InputError(
                    self.at(
                        "params",
                        f"key `params` names feature {ref!r}, which is not declared before it",
                    ),
                    hint=f"declared so far: {', '.join(known) or 'none'}",
                )
        return inputs, max(known[r].lookback for r in inputs) + own


def _check_feature(
    path: Path, lines: _Lines, i: int, raw: Any, known: dict[str, FeatureSpec], bar_inputs
) -> FeatureSpec:
    entry = _Feature(path, lines, i, raw)
    name = entry.name(known)
    kind, params, dtype, output = entry.kind()
    inputs, lookback = entry.inputs(kind, params, known, bar_inputs)
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
        line=entry.line,
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


def _read(path: Path) -> tuple[str, dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read: {exc}") from None
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML: {exc}") from None


class _Head:
    """The checked keys of the ``[feature_set]`` table."""

    def __init__(self, path: Path, lines: _Lines, decl: dict[str, Any]) -> None:
        self.path, self.lines = path, lines
        head = decl.get("feature_set")
        if not isinstance(head, dict):
            raise InputError(f"{path}: missing the [feature_set] table")
        for key in sorted(set(head) - _HEAD_KEYS):
            raise InputError(
                self.at(key, f"[feature_set]: unknown key `{key}`"),
                hint=f"keys of [feature_set]: {', '.join(sorted(_HEAD_KEYS))}",
            )
        for key in sorted(set(decl) - {"feature_set", "features", "labels"}):
            raise InputError(
                f"{path}: unknown table [{key}]", hint="tables: feature_set, features, labels"
            )
        self.head = head

    def at(self, key: str, what: str) -> str:
        return _where(self.path, self.lines.head.get(key, 0), what)

    def value(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        value = self.head.get(key, default)
        if isinstance(value, bool) or not isinstance(value, kind):
            raise InputError(
                self.at(key, f"[feature_set]: key `{key}` has the wrong type: {value!r}")
            )
        return value

    def table(self) -> str:
        table = self.value("table", str, None) if "table" in self.head else None
        if table is None:
            raise InputError(f"{self.path}: [feature_set]: missing key `table`")
        if not _IDENT.fullmatch(table):
            raise InputError(
                self.at(
                    "table",
                    "[feature_set]: key `table` must be a lower-case SQL identifier, "
                    f"got {table!r}",
                )
            )
        if table in resources.reserved_table_names():
            # a build deletes and rewrites its table: on the store's own tables that would
            # replace the bars or the build records with feature rows
            raise InputError(
                self.at("table", f"[feature_set]: key `table` names a table of the store "
                        f"itself ({table!r}); give the feature set a table of its own"),
                hint=f'e.g. table = "{self.path.stem}_features"',
            )  # fmt: skip
        return table

    def key_column(self, key: str, column: str) -> str:
        """``entity``/``timestamp``: feature rows are keyed by the bars' own ``symbol`` and
        ``ts`` columns, so these may only restate them (they name the Feast entity and
        timestamp field, and are spliced into the table's DDL)."""
        value = self.value(key, str, column)
        if value != column:
            raise InputError(
                self.at(key, f"[feature_set]: key `{key}` must be {column!r} (the bars' key "
                        f"column feature rows are stored under), got {value!r}")
            )  # fmt: skip
        return value

    def bar_inputs(self) -> tuple[str, ...]:
        inputs = self.value("inputs", list, list(BAR_INPUTS))
        bad = [c for c in inputs if c not in BAR_INPUTS]
        if bad or not inputs or len(set(inputs)) != len(inputs):
            raise InputError(
                self.at("inputs", f"[feature_set]: key `inputs` must list distinct bar "
                        f"columns of {', '.join(BAR_INPUTS)}; got {inputs!r}")
            )  # fmt: skip
        return tuple(inputs)

    def online_ttl_days(self) -> int:
        ttl = self.value("online_ttl_days", int, 5)
        if not 1 <= ttl <= 36_500:
            raise InputError(
                self.at("online_ttl_days", f"[feature_set]: key `online_ttl_days` must be "
                        f"between 1 and 36500, got {ttl}")
            )  # fmt: skip
        return ttl

    def version(self) -> int:
        version = self.value("version", int, 1)
        if version < 1:
            raise InputError(self.at("version", "[feature_set]: key `version` must be >= 1"))
        return version

    def frequency(self) -> tuple[str, float]:
        """The bar interval as written and the periods per year (declared or implied)."""
        frequency = self.value("frequency", str, "1d")
        interval = parse_frequency(
            frequency, self.at("frequency", "[feature_set]: key `frequency`")
        )
        ppy = self.value("periods_per_year", (int, float), default_periods_per_year(interval))
        if not 0 < ppy <= 366 * 24 * 3600:
            raise InputError(
                self.at(
                    "periods_per_year",
                    f"[feature_set]: key `periods_per_year` must be > 0, got {ppy!r}",
                )
            )
        return frequency, float(ppy)


def parse_feature_set(path: Path, name: str | None = None) -> FeatureSet:
    """Parse and check the declaration file ``path`` (any location; ``qcli features check``).

    Raises :class:`InputError` naming the file, the line and the key of the first problem.
    """
    path = Path(path)
    name = name or path.stem
    text, decl = _read(path)
    lines = _Lines(text)
    head = _Head(path, lines, decl)
    table, version = head.table(), head.version()
    frequency, ppy = head.frequency()
    bar_inputs = head.bar_inputs()
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
        family=str(head.value("name", str, name)),
        version=version,
        table=table,
        entity=head.key_column("entity", "symbol"),
        timestamp=head.key_column("timestamp", "ts"),
        inputs=bar_inputs,
        online_ttl_days=head.online_ttl_days(),
        description=str(head.value("description", str, "")),
        features=tuple(known.values()),
        labels=labels,
        frequency=frequency,
        periods_per_year=ppy,
        path=path,
    )


__all__ = ["parse_feature_set"]
