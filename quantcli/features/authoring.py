"""Writing feature sets: a starting file (``qcli features new``), a check of any file
(``qcli features check``), and the list of every visible set (``qcli features list --all``).

User sets live in ``$QCLI_HOME/feature_defs/`` (or a directory named by ``--defs DIR`` /
``QCLI_FEATURE_DEFS``) and are searched before the bundled ones; a user set may not take a
bundled set's name (see :func:`quantcli.resources.feature_def_path`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantcli import resources
from quantcli.errors import InputError
from quantcli.features.definitions import FeatureSet, load_feature_set, parse_feature_set
from quantcli.results import Result
from quantcli.workspace import Workspace

_STARTER = """# Feature set {name} of quantcli; check it with: qcli features check {path_hint}
# Every [[features]] entry is one float64 column of the table {table}, in this order.
# A released version must not change: a build of version {version} with another definition is
# refused. To change a feature, copy this file to {family}_v{next_version}.toml, bump `version`
# and `table`. `qcli features list --kinds` lists every kind with its params.

[feature_set]
name = "{family}"
version = {version}
table = "{table}"
frequency = "1d"           # bar interval: "1d", "1h", "5m", ... (labels count bars)
# periods_per_year = 252   # default from frequency; e.g. 8760 for 24/7 hourly crypto
description = "{description}"

[[features]]
name = "ema_20"
kind = "ema"
params = {{ window = 20 }}
description = "EMA(close, 20), TA-Lib seeding"

[[features]]
name = "cci_14"
kind = "cci"
params = {{ window = 14 }}
description = "Commodity channel index over 14 bars"

[[features]]
name = "willr_14"
kind = "willr"
params = {{ window = 14 }}
description = "Williams' %R over 14 bars, -100..0"

[[features]]
name = "natr_14"
kind = "natr"
params = {{ window = 14 }}
description = "ATR(14) in percent of the close"

[[features]]
name = "cci_14_z"
kind = "zscore"
params = {{ of = "cci_14", window = 50 }}
description = "CCI(14) as a z-score over 50 bars"

[[labels]]
name = "fwd_return_5"
kind = "forward_return"
params = {{ horizon = 5 }}
description = "Forward return over the next 5 bars: close[t+5] / close[t] - 1"
"""

_NAME = re.compile(r"(?P<family>[a-z][a-z0-9_]*?)_v(?P<version>[1-9][0-9]*)")


@dataclass(frozen=True, kw_only=True)
class NewFeatureSet(Result):
    """What ``qcli features new`` wrote: the file, the set's name and table, its feature count
    and the set it was copied from (``None``: the starter)."""

    passed: bool = True
    path: str
    feature_set: str
    table: str
    features: int
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "feature_set": self.feature_set, "table": self.table,
                "features": self.features, "source": self.source}  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class FeatureSetCheck(Result):
    """``qcli features check``: the file loads (a problem raises, naming file, line and key);
    ``to_dict`` is ``ok`` and the parsed declaration."""

    passed: bool = True
    declaration: FeatureSet

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.passed, **self.declaration.to_dict()}


def _target_dir(directory: str | Path | None, workspace: Workspace | None) -> Path:
    if directory is not None:
        return Path(directory).expanduser().resolve()
    dirs = resources.user_feature_def_dirs()
    if dirs:
        return dirs[0]
    return (workspace or Workspace.from_env()).feature_defs_dir.resolve()


def new_feature_set(
    name: str,
    *,
    source: str | None = None,
    directory: str | Path | None = None,
    force: bool = False,
    workspace: Workspace | None = None,
) -> NewFeatureSet:
    """Write a starting declaration ``<directory>/<name>.toml`` and return what was written.

    ``name`` is ``<family>_v<version>`` (e.g. ``desk_fx_v1``); the table is
    ``<family>_features_v<version>``. With ``source`` (e.g. ``technical_v1``) the file is a copy
    of that set's declaration under the new name, table and version. ``directory`` defaults to
    the first user directory (``--defs`` / ``QCLI_FEATURE_DEFS``, else ``workspace``'s
    ``feature_defs``, by default ``$QCLI_HOME/feature_defs``).
    """
    m = _NAME.fullmatch(name)
    if m is None:
        raise InputError(
            f"NAME: {name!r} is not <family>_v<version>",
            hint="e.g. qcli features new desk_fx_v1 (lower-case letters, digits, _)",
        )
    if name in resources.bundled_feature_sets():
        raise InputError(f"NAME: {name!r} is a bundled feature set", hint="choose another name")
    family, version = m.group("family"), int(m.group("version"))
    table = f"{family}_features_v{version}"
    target = _target_dir(directory, workspace)
    path = target / f"{name}.toml"
    if path.exists() and not force:
        raise InputError(f"{path}: already exists", hint="pass --force to overwrite it")
    if source is None:
        text = _STARTER.format(
            name=name,
            family=family,
            version=version,
            next_version=version + 1,
            table=table,
            description=f"{family} features, version {version}",
            path_hint=path,
        )
    else:
        src = load_feature_set(source)
        text = _renamed(src, family, version, table)
    target.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".toml.tmp")
    tmp.write_text(text, encoding="utf-8")
    try:
        fs = parse_feature_set(tmp, name)  # what we write must check
    except InputError:
        tmp.unlink()
        raise
    tmp.replace(path)
    return NewFeatureSet(
        path=str(path), feature_set=name, table=table, features=len(fs.features), source=source
    )


def _renamed(src: FeatureSet, family: str, version: int, table: str) -> str:
    """``src``'s declaration text with the [feature_set] name, version and table replaced."""
    assert src.path is not None
    text = src.path.read_text(encoding="utf-8")
    head, sep, rest = text.partition("[[features]]")
    for key, value in (("name", f'"{family}"'), ("version", str(version)),
                       ("table", f'"{table}"')):  # fmt: skip
        head, n = re.subn(rf"(?m)^{key}\s*=.*$", f"{key} = {value}", head, count=1)
        if n == 0:
            head = head.replace("[feature_set]\n", f"[feature_set]\n{key} = {value}\n", 1)
    banner = f"# Copied from {src.name} by `qcli features new`.\n"
    return banner + head + sep + rest


def check_feature_set_file(path: str | Path) -> FeatureSetCheck:
    """Parse and check ``path``; :class:`InputError` names the file, line and key of the first
    problem. A file named like a bundled set is refused too (it could never be loaded)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    fs = parse_feature_set(path)
    bundled = resources.resource_dir("feature_defs") / path.name
    if path.stem in resources.bundled_feature_sets() and path.resolve() != bundled.resolve():
        raise InputError(
            f"{path}: the name '{path.stem}' is a bundled feature set's; quantcli would refuse it",
            hint="rename the file (and bump its table), e.g. desk_v1.toml",
        )
    return FeatureSetCheck(declaration=fs)


def list_feature_sets() -> list[dict[str, Any]]:
    """Every visible feature set (user sets first): name, origin, version, table, frequency,
    features, or the error that keeps it from loading."""
    out: list[dict[str, Any]] = []
    bundled_dir = resources.resource_dir("feature_defs")
    for name, path in resources.list_feature_sets():
        row: dict[str, Any] = {
            "name": name,
            "origin": "bundled" if path.parent == bundled_dir else "user",
            "path": str(path),
        }
        try:
            fs = load_feature_set(name)
        except InputError as exc:
            row["error"] = str(exc)
        else:
            row.update(
                version=fs.version,
                table=fs.table,
                frequency=fs.frequency,
                periods_per_year=fs.periods_per_year,
                features=len(fs.features),
            )
        out.append(row)
    return out
