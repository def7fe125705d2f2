"""The architecture of docs/architecture.md, enforced.

1. The import-linter contracts of pyproject.toml (layers, nothing imports the CLI, store | scale |
   audit independent) hold.
2. A function-local import is a heavy or optional third-party package from :data:`HEAVY`, never a
   ``quantcli`` module (an import placed in a function to dodge a cycle hides the cycle from the
   contract's reader) and never a light package that could sit at the module top.
3. No module over :data:`MAX_MODULE_LINES` lines, no function over :data:`MAX_FUNCTION_LINES`,
   except the offenders named below; the lists only shrink, so an entry that no longer offends
   must be removed too.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "quantcli"

# Packages whose import costs a tenth of a second or more, or that are optional (TA-Lib is the
# dev extra's oracle), so a module loads them inside the function that needs them.
HEAVY = frozenset(
    {
        "mlflow",
        "feast",
        "onnxruntime",
        "onnx",
        "onnxmltools",
        "skl2onnx",
        "lightgbm",
        "sklearn",
        "ray",
        "scipy",
        "matplotlib",
        "uvicorn",
        "starlette",
        "fastapi",
        "prometheus_client",
        "pandas",
        "redis",
        "pyarrow",
        "polars",  # a quarter second; a module that reads polars input only when given it
        "duckdb",
        "google",  # protobuf, which comes with onnx and feast
        "talib",
        "typeguard",  # Feast's dependency, touched only around Feast's own import
    }
)

MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 100

# today's offenders; remove an entry when its module is split (the test fails on a stale entry)
LONG_MODULES = frozenset({})
LONG_FUNCTIONS = frozenset(
    {
        "quantcli/cli/backtest.py::cpcv",
        "quantcli/serving/onnx_export.py::convert_and_validate_pipeline",
    }
)


def _modules() -> Iterator[tuple[str, ast.Module, int]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        yield path.relative_to(ROOT).as_posix(), ast.parse(source), len(source.splitlines())


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, scope: tuple[str, ...], in_function: bool):
    """Yield ``(node, qualified name, in_function)`` for every function and import below
    ``node``, skipping ``if TYPE_CHECKING:`` blocks (annotations only, never executed)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield from _walk(other, scope, in_function)
            continue
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            yield child, ".".join((*scope, child.name)), in_function
            yield from _walk(child, (*scope, child.name), True)
        elif isinstance(child, ast.ClassDef):
            yield from _walk(child, (*scope, child.name), in_function)
        else:
            if isinstance(child, ast.Import | ast.ImportFrom):
                yield child, ".".join(scope), in_function
            yield from _walk(child, scope, in_function)


def _imported(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    return ["." * node.level + (node.module or "")]


def test_import_contracts_hold():
    # `lint-imports` reads [tool.importlinter] from pyproject.toml; its report names every chain
    # that breaks a contract, so it is the failure message as it is
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from importlinter.cli import lint_imports_command; lint_imports_command()",
            "--no-cache",
            "--no-logo",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "BROKEN" not in out.stdout and "KEPT" in out.stdout, out.stdout


def test_every_top_level_module_has_a_layer():
    # a package left out of the layers contract would be checked by nothing
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["type"] == "layers")["layers"]
    named = {name.strip("() ") for layer in layers for name in re.split(r"[|:]", layer)}
    present = {
        f"quantcli.{p.stem if p.suffix == '.py' else p.name}"
        for p in PACKAGE.iterdir()
        if (p.suffix == ".py" and p.stem not in ("__init__", "__main__"))
        or (p.is_dir() and (p / "__init__.py").is_file())
    }
    assert present - named == set(), "give these a layer in pyproject.toml [tool.importlinter]"
    assert named - present == set(), "layers name modules that do not exist"


def test_function_local_imports_are_heavy_third_party_only():
    offenders = []
    for rel, tree, _ in _modules():
        for node, scope, in_function in _walk(tree, (), False):
            if not in_function or not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for name in _imported(node):
                top = name.split(".")[0]
                if name.startswith(".") or top == "quantcli" or top not in HEAVY:
                    offenders.append(f"{rel}:{node.lineno} in {scope}(): import {name}")
    assert not offenders, (
        "function-local imports must be heavy third-party packages (tests/test_architecture.py"
        " HEAVY); move these to the module top, or fix the cycle they hide:\n  "
        + "\n  ".join(offenders)
    )


def test_modules_are_short():
    long = {rel: n for rel, _, n in _modules() if n > MAX_MODULE_LINES}
    new = {rel: n for rel, n in long.items() if rel not in LONG_MODULES}
    assert not new, f"modules over {MAX_MODULE_LINES} lines (split along a real seam): {new}"
    stale = sorted(LONG_MODULES - set(long))
    assert not stale, f"no longer over {MAX_MODULE_LINES} lines, remove from LONG_MODULES: {stale}"


def test_functions_are_short():
    long = {}
    for rel, tree, _ in _modules():
        for node, scope, _ in _walk(tree, (), False):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                size = node.end_lineno - node.lineno + 1
                if size > MAX_FUNCTION_LINES:
                    long[f"{rel}::{scope}"] = size
    new = {name: n for name, n in long.items() if name not in LONG_FUNCTIONS}
    assert not new, f"functions over {MAX_FUNCTION_LINES} lines: {new}"
    stale = sorted(LONG_FUNCTIONS - set(long))
    assert not stale, f"no longer over {MAX_FUNCTION_LINES} lines, remove: {stale}"


def test_the_checks_see_an_offender():
    # the walker must find a local import inside a method and skip a TYPE_CHECKING block, or the
    # checks above would pass on anything
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from quantcli.cli import app\n"
        "class A:\n"
        "    def f(self):\n"
        "        if True:\n"
        "            from quantcli.config import load_config\n"
        "        def g():\n"
        "            import mlflow\n"
    )
    found = [
        (scope, _imported(node), inside)
        for node, scope, inside in _walk(tree, (), False)
        if isinstance(node, ast.Import | ast.ImportFrom)
    ]
    assert found == [
        ("", ["typing"], False),
        ("A.f", ["quantcli.config"], True),
        ("A.f.g", ["mlflow"], True),
    ]
