"""Build hook: ship the top-level ``sql/`` and ``feature_defs/`` inside the wheel.

The repository keeps them at the top level (the layout the users fixed); an installed wheel finds
them under ``quantcli/_resources/`` through :mod:`quantcli.resources`.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithResources(build_py):
    def run(self):
        super().run()
        target = Path(self.build_lib) / "quantcli" / "_resources"
        for name in ("sql", "feature_defs"):
            src = ROOT / name
            dst = target / name
            if dst.exists():
                shutil.rmtree(dst)
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildPyWithResources})
