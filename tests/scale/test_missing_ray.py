"""Without Ray installed, asking for the Ray executor fails with one line naming the extra."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# A sitecustomize that makes `import ray` fail as if the package were not installed.
BLOCK_RAY = """
import importlib.abc, sys

class _NoRay(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "ray" or name.startswith("ray."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NoRay())
"""


def _env_without_ray(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "sitecustomize.py").write_text(BLOCK_RAY)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), env.get("PYTHONPATH")]))
    env.pop("QCLI_RAY_ADDRESS", None)
    return env


def test_library_raises_missing_dependency_naming_the_extra(tmp_path):
    code = (
        "from quantcli.errors import MissingDependencyError\n"
        "from quantcli.scale import get_executor\n"
        "try:\n"
        "    get_executor('ray')\n"
        "except MissingDependencyError as exc:\n"
        "    print(exc.exit_code, exc, '|', exc.hint)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=_env_without_ray(tmp_path),
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == (
        "2 the optional package 'ray' is not installed (needed for --executor ray) | "
        'install it: pip install -e ".[ray]"  (or: pip install "quantcli[ray]")'
    )


def test_the_blocker_really_blocks_ray(tmp_path):
    """Guard for the test above: under the sitecustomize, `import ray` itself must fail."""
    out = subprocess.run(
        [sys.executable, "-c", "import ray"],
        capture_output=True,
        text=True,
        env=_env_without_ray(tmp_path),
        timeout=60,
    )
    assert out.returncode == 1
    assert "ModuleNotFoundError: No module named 'ray'" in out.stderr
