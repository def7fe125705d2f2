"""The quantcli.online front door: cheap to import, every public name resolves to its object.

Fresh interpreters: what a module import binds depends on what the process imported before.
"""

from __future__ import annotations

import os
import subprocess
import sys


def _run(code: str, env: dict[str, str] | None = None) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_importing_the_package_loads_neither_feast_nor_the_feature_engine():
    code = (
        "import sys, quantcli.online\n"
        "print(sorted(m for m in ('feast', 'numba', 'quantcli.features') if m in sys.modules))\n"
    )
    assert _run(code) == "[]"


def test_a_submodule_import_first_does_not_shadow_the_function_of_the_same_name():
    code = (
        "import inspect\n"
        "import quantcli.online as online\n"
        "online.MaterializeResult  # loads the defining module before the name is asked for\n"
        "from quantcli.online import materialize, write_latest\n"
        "assert all(getattr(online, n) is not None for n in online.__all__)\n"
        "print(inspect.isfunction(materialize), inspect.isfunction(write_latest))\n"
    )
    assert _run(code) == "True True"


def test_feast_is_imported_without_typeguard_instrumentation_and_typeguard_is_restored():
    """Feast's declarative classes skip typeguard's recompilation when quantcli imports Feast
    (the import's cost); the decorator is put back for whatever imports after."""
    code = (
        "import typeguard\n"
        "real = typeguard.typechecked\n"
        "from quantcli.online._feast import import_feast\n"
        "feast = import_feast()\n"
        "assert import_feast() is feast\n"
        "print(typeguard.typechecked is real)\n"
        "print('typeguard' in feast.Entity.__init__.__code__.co_names)\n"
        "print(feast.Entity(name='symbol', join_keys=['symbol']).join_key)\n"
    )
    assert _run(code).splitlines() == ["True", "False", "symbol"]
    # the oracle: a plain `import feast` instruments the same method
    plain = "import feast\nprint('typeguard' in feast.Entity.__init__.__code__.co_names)\n"
    assert _run(plain) == "True"


def test_feast_import_leaves_no_metrics_directory_or_environment():
    """Feast's import makes a prometheus multiprocess directory and exports it; quantcli keeps
    metrics in memory, so both are undone (a killed process used to leave the directory)."""
    code = (
        "import os\n"
        "from quantcli.online._feast import import_feast\n"
        "import_feast()\n"
        "import feast.metrics as m\n"
        "print(bool(m._prometheus_mp_dir), os.path.exists(m._prometheus_mp_dir))\n"
        "print(sorted(k for k in os.environ if k.startswith('PROMETHEUS_')))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMETHEUS_")}
    assert _run(code, env=env).splitlines() == ["True False", "[]"]
    # the oracle: a plain import keeps both while the process lives
    plain = (
        "import os\nimport feast.metrics as m\n"
        "print(os.path.isdir(m._prometheus_mp_dir), 'PROMETHEUS_MULTIPROC_DIR' in os.environ)\n"
    )
    assert _run(plain, env=env) == "True True"
