"""Fixtures for the model tests: the embedded store, a real `mlflow server`.

A fresh SQLite store runs MLflow's migrations for several seconds (tens of seconds on a busy
2-core machine), so ONE template store (``mlflow_template_db``, tests/conftest.py) is migrated
per session and copied into each test's $QCLI_HOME. The real server is started once per session
on a free loopback port; tests that use it register models under unique names, because the
server outlives the test.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
from _registration import FEATURES, tiny

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@pytest.fixture
def embedded_uri(qcli_home: Path, mlflow_template_db: Path) -> str:
    """The embedded store of this test's $QCLI_HOME, copied from the template."""
    shutil.copy(mlflow_template_db, qcli_home / "mlflow.db")
    return f"sqlite:///{qcli_home / 'mlflow.db'}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    """A real `mlflow server` process on a free loopback port, readied in a background thread.

    Starting it costs ~10-15 s of imports and store set-up in the server process; the thread
    waits for ``/health`` and makes the first API call (which opens the server's store), so that
    time overlaps with the tests that run before the first server test.
    """

    def __init__(self, root: Path, template_db: Path | None) -> None:
        db = root / "mlflow.db"
        if template_db is not None:
            shutil.copy(template_db, db)  # else the server migrates its empty store itself
        self.artifacts = root / "artifacts"
        self.artifacts.mkdir()
        self.log_path = root / "server.log"
        self.uri = f"http://127.0.0.1:{_free_port()}"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                f"sqlite:///{db}",
                "--artifacts-destination",
                str(self.artifacts),
                "--host",
                "127.0.0.1",
                "--port",
                self.uri.rsplit(":", 1)[1],
                "--workers",
                "1",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # no background job workers (huey): the tests use tracking and the registry only
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._ready, daemon=True)
        self._thread.start()

    def _ready(self) -> None:
        try:
            deadline = time.monotonic() + 240
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"mlflow server exited with {self.proc.returncode}:\n"
                        + self.log_path.read_text()[-3000:]
                    )
                try:
                    with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as resp:
                        if resp.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("mlflow server did not become healthy in 240 s")
                time.sleep(0.5)
            # the first API call opens the server's store: pay for it here, not in a test
            search = f"{self.uri}/api/2.0/mlflow/experiments/search?max_results=1"
            with urllib.request.urlopen(search, timeout=300) as resp:
                assert resp.status == 200
        except BaseException as exc:  # handed to the fixture, which raises it in the test
            self.error = exc

    def wait_ready(self) -> None:
        self._thread.join()
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        self._thread.join(timeout=5)
        self._log.close()


#: the server started at the end of collection, when some selected test will use it
_early: list[_Server] = []


def _uses_server(item: pytest.Item) -> bool:
    params = getattr(getattr(item, "callspec", None), "params", {})
    return "mlflow_server" in item.fixturenames or params.get("tracking") == "server"


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the server now if a selected test needs it (its start overlaps earlier tests)."""
    if session.config.option.collectonly:
        return
    if not _early and any(_uses_server(item) for item in session.items):
        _early.append(_Server(Path(tempfile.mkdtemp(prefix="qcli_mlflow_server_")), None))


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop an early server that no test ended up using (e.g. after ``-x``)."""
    while _early:
        server = _early.pop()
        server.stop()
        shutil.rmtree(server.log_path.parent, ignore_errors=True)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory, mlflow_template_db: Path):
    """A real `mlflow server` with an empty store; yields ``(uri, artifacts_dir)``.

    Usually the one started at the end of collection; else started here from the template.
    """
    server = (
        _early[0]
        if _early
        else _Server(tmp_path_factory.mktemp("mlflow_server"), mlflow_template_db)
    )
    try:
        server.wait_ready()
        yield server.uri, server.artifacts
    finally:
        if not _early:
            server.stop()


@pytest.fixture(params=["embedded", "server"])
def tracking(request, qcli_home: Path, mlflow_template_db: Path):
    """``(tracking_uri, artifacts_dir)`` for both backends: the embedded store and a server."""
    if request.param == "embedded":
        shutil.copy(mlflow_template_db, qcli_home / "mlflow.db")
        return f"sqlite:///{qcli_home / 'mlflow.db'}", qcli_home / "mlartifacts"
    uri, artifacts = request.getfixturevalue("mlflow_server")
    return uri, artifacts


@pytest.fixture
def model_name() -> str:
    """A model name unique in the session (the server is shared between tests)."""
    return f"m_{uuid.uuid4().hex[:10]}"


# -- training data ------------------------------------------------------------------------------
def training_frame(n_symbols: int, n_days: int, seed: int, ar1: float) -> pl.DataFrame:
    """``symbol, ts, <29 features>, label, label_end, fwd_return_1d``, by ``(ts, symbol)``.

    Built with the feature engine and the label module directly (what ``load_training_frame``
    reads back from the store).
    """
    from quantcli.data.synthetic import synthetic_universe
    from quantcli.features import compute_features
    from quantcli.features.labels import compute_labels

    bars = synthetic_universe(n_symbols, n_days, seed, ar1=ar1)
    feats = compute_features(bars)
    labels = compute_labels(bars, 5).collect()
    next_bar = compute_labels(bars, 1).collect().select("symbol", "ts", fwd_return_1d="label")
    return (
        feats.join(labels, on=["symbol", "ts"], how="inner")
        .join(next_bar, on=["symbol", "ts"], how="inner")
        .drop_nulls(["label", "fwd_return_1d"])
        .sort("ts", "symbol")
    )


@pytest.fixture(scope="session")
def xy_small() -> tuple[np.ndarray, np.ndarray]:
    """A small regression problem for serialization tests (500 x 5, one informative column)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 5))
    y = 0.1 * X[:, 0] + 0.02 * rng.normal(size=500)
    return X, y


def artifact_file(root: Path, run_id: str, rel: str) -> Path:
    """The stored file of artifact ``rel`` of run ``run_id`` under an artifact root on disk."""
    hits = [
        p
        for p in root.rglob(rel.split("/")[-1])
        if run_id in p.parts and p.as_posix().endswith(rel)
    ]
    assert len(hits) == 1, (root, run_id, rel, hits)
    return hits[0]


@pytest.fixture
def helpers() -> SimpleNamespace:
    """``tiny`` (``register_model`` options), ``artifact_file`` and ``FEATURES``."""
    return SimpleNamespace(tiny=tiny, artifact_file=artifact_file, FEATURES=FEATURES)
