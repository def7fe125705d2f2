"""Packaging: the declared dependencies are exactly the imported ones, and typing info ships."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

# Declared without a direct import, each for a stated reason.
INDIRECT = {
    # duckdb's `.pl()` and `.arrow()` hand results over as Arrow tables and need pyarrow
    "pyarrow",
}


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _imported_top_levels() -> tuple[set[str], set[str]]:
    """Third-party top-level modules imported by quantcli: (at module level, anywhere)."""
    eager: set[str] = set()
    tops: set[str] = set()
    for path in (ROOT / "quantcli").rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        guarded = [stmt for stmt in tree.body if isinstance(stmt, ast.Try | ast.If)]
        module_level = {id(n) for n in tree.body} | {id(n) for g in guarded for n in ast.walk(g)}
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module.split(".")[0]]
            elif (  # import_optional("ray") and importlib.import_module("feast")
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", getattr(node.func, "id", None))
                in ("import_optional", "import_module")
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                names = [node.args[0].value.split(".")[0]]
            tops.update(names)
            if id(node) in module_level:
                eager.update(names)
    ignore = set(sys.stdlib_module_names) | {"quantcli", "__future__"}
    return eager - ignore, tops - ignore


def _distributions(tops: set[str], declared: set[str]) -> dict[str, str]:
    mapping = packages_distributions()
    out = {}
    for top in sorted(tops):
        dists = [d.lower().replace("_", "-") for d in mapping.get(top, [])]
        assert dists, f"imported module {top!r} belongs to no installed distribution"
        # several distributions may provide one module (mlflow and mlflow-skinny; the `google`
        # namespace): a declared one satisfies the import
        out[top] = next((d for d in dists if d in declared), dists[0])
    return out


def test_declared_dependencies_are_exactly_the_imported_ones():
    runtime = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    extras = PYPROJECT["project"]["optional-dependencies"]
    optional = {_name(r) for group in ("ray", "dev") for r in extras[group]}
    eager_tops, all_tops = _imported_top_levels()
    imported = _distributions(all_tops, runtime | optional)

    undeclared = {top: d for top, d in imported.items() if d not in runtime | optional}
    assert not undeclared, f"imported but not declared: {undeclared}"
    unused = runtime - set(imported.values()) - INDIRECT
    assert not unused, f"declared but never imported: {sorted(unused)}"
    # an extra (Ray; TA-Lib, the indicators' test oracle) is imported only inside the function
    # that needs it, never when a module loads
    eager_extras = {t: imported[t] for t in eager_tops if imported[t] not in runtime}
    assert not eager_extras, f"optional packages imported at module level: {eager_extras}"
    assert imported["ray"] == "ray" and "ray" not in runtime


def test_test_tools_are_dev_only():
    runtime = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    dev = {_name(r) for r in PYPROJECT["project"]["optional-dependencies"]["dev"]}
    for tool in (
        "pytest",
        "pytest-xdist",
        "hypothesis",
        "ta-lib",
        "pytest-benchmark",
        "ruff",
        "build",
    ):
        assert tool not in runtime
        assert tool in dev


def test_sdist_manifest_and_type_marker():
    assert (ROOT / "quantcli" / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["quantcli"]
    manifest = (ROOT / "MANIFEST.in").read_text()
    # setup.py copies these into the wheel, so a wheel built from the sdist needs them there
    for line in ("recursive-include sql *.sql", "recursive-include feature_defs *.toml"):
        assert line in manifest
