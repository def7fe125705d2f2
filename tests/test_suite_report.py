"""The suite's own machinery (tests/conftest.py): one Redis database per xdist worker, and the
wall-time line every run ends with."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import worker_redis_url

ROOT = Path(__file__).resolve().parents[1]


def test_each_xdist_worker_gets_its_own_redis_database():
    assert worker_redis_url("redis://127.0.0.1:6399/0", "gw0") == "redis://127.0.0.1:6399/1"
    assert worker_redis_url("redis://127.0.0.1:6399/0", "gw1") == "redis://127.0.0.1:6399/2"
    assert worker_redis_url("redis://127.0.0.1:6399", "gw0") == "redis://127.0.0.1:6399/1"
    assert worker_redis_url("redis://:pw@h:1/3", "gw2") == "redis://:pw@h:1/6"
    with pytest.raises(RuntimeError, match="database 16"):
        worker_redis_url("redis://h:1/0", "gw15")


def test_every_run_ends_with_its_wall_time_workers_and_cpus(tmp_path: Path):
    probe = tmp_path / "test_probe.py"
    # each test records the Redis URL its process sees, under the process's worker name
    probe.write_text(
        "import os, pathlib, pytest\n\n"
        "@pytest.mark.parametrize('i', range(4))\n"
        "def test_records_its_redis_url(i):\n"
        "    name = os.environ.get('PYTEST_XDIST_WORKER', 'serial')\n"
        "    url = os.environ['QCLI_TEST_REDIS_URL']\n"
        "    pathlib.Path(f'{name}.url').write_text(url)\n"
    )
    (tmp_path / "conftest.py").write_text("from tests.conftest import *  # noqa: F403\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
    env |= {"PYTHONPATH": str(ROOT), "QCLI_TEST_REDIS_URL": "redis://127.0.0.1:6399/0"}
    env["QCLI_TEST_WARM_KERNELS"] = "0"  # the probe computes nothing: no Numba cache to fill
    env.pop("QCLI_TEST_REDIS_SERIAL_URL", None)
    base = [sys.executable, "-m", "pytest", str(probe), "-p", "no:cacheprovider"]
    cpus = len(os.sched_getaffinity(0))
    serial = subprocess.run(base, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert serial.returncode == 0, serial.stdout + serial.stderr
    assert re.search(
        rf"^suite wall time: \d+\.\d s \(1 process \(no xdist\), {cpus} CPUs, load average ",
        serial.stdout,
        re.M,
    ), serial.stdout
    assert (tmp_path / "serial.url").read_text() == "redis://127.0.0.1:6399/0"  # as given
    parallel = subprocess.run(
        [*base, "-n", "2"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert parallel.returncode == 0, parallel.stdout + parallel.stderr
    lines = [line for line in parallel.stdout.splitlines() if line.startswith("suite wall time")]
    assert len(lines) == 1 and f"(2 xdist workers, {cpus} CPUs, load average " in lines[0]
    # each worker that ran a test flushed its own database, never the serial run's
    seen = {p.stem: p.read_text() for p in tmp_path.glob("gw*.url")}
    assert seen and all(
        url == f"redis://127.0.0.1:6399/{int(w[2:]) + 1}" for w, url in seen.items()
    )
