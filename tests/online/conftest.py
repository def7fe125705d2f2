"""Fixtures for the online feature store tests: a materialized feature store and a real
redis-server (the serving tests have their own copies in tests/serving/conftest.py)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from scale.conftest import ray_cluster  # noqa: F401  (one Ray cluster per session)

from online._features import feature_frame, write_feature_table

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def module_home(tmp_path_factory) -> Iterator[Path]:
    """A $QCLI_HOME shared by one test module (for read-only tests; saves Feast set-up time)."""
    home = tmp_path_factory.mktemp("qcli_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QCLI_HOME", str(home))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("QCLI_API_TOKEN", raising=False)
        yield home


@pytest.fixture(scope="module")
def features(module_home):
    """The stand-in feature table (6 symbols x 80 days), written to the offline store."""
    frame = feature_frame()
    write_feature_table(frame)
    return frame


@pytest.fixture(scope="module")
def materialized(features):
    """The feature table materialized into the SQLite online store."""
    from quantcli.online import materialize

    return materialize("technical_v1")


# -- redis -------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """``$QCLI_TEST_REDIS_URL`` (started by .ci/run), else a redis-server of our own on a free port.

    Skipped only when the redis-server binary is absent (CI installs it).
    """
    url = os.environ.get("QCLI_TEST_REDIS_URL")
    if url:
        yield url
        return
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install -y redis-server)")
    with redis_server() as port:
        yield f"redis://127.0.0.1:{port}/0"


@contextlib.contextmanager
def redis_server(*options: str, password: str | None = None) -> Iterator[int]:
    """A redis-server of our own on a free loopback port (``--requirepass`` with ``password``),
    up and answering PING when the block starts, stopped after it; yields the port."""
    import redis

    binary = shutil.which("redis-server")
    assert binary is not None, "redis-server is not installed (apt-get install -y redis-server)"
    port = free_port()
    auth = ["--requirepass", password] if password else []
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         *auth, *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(host="127.0.0.1", port=port, password=password)
    try:
        for _ in range(100):
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                time.sleep(0.05)
        else:
            raise RuntimeError("redis-server did not start")
        yield port
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)
