"""Two `qcli serve` replicas against a real `mlflow server` and a real Redis online store
converge on the same version after a promote, a rollback and a halt, without a restart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from _registration import register_model
from models.conftest import _Server
from online._features import feature_frame, write_feature_table

from quantcli.online import load_declaration
from serving._deploy import force_promote, free_port, linear

pytestmark = pytest.mark.integration
NAMES = load_declaration().feature_names
POLL_S = 0.5
HEADERS = {"Content-Type": "application/json"}


def _own_db(url: str) -> str:
    """The test Redis, database 7: other tests flush database 0."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/7", "", ""))


def _start(home: Path, name: str, uri: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, QCLI_HOME=str(home), QCLI_API_TOKEN="", QCLI_ADMIN_TOKEN="")
    log = open(home / f"serve_{port}.log", "wb")  # noqa: SIM115 - a file, not an undrained pipe
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "quantcli", "serve", "--model", name, "--port", str(port)),
            *("--tracking-uri", uri, "--poll-interval", str(POLL_S)),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    return proc, f"http://127.0.0.1:{port}"


def _wait_healthy(proc: subprocess.Popen, url: str, log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"qcli serve exited {proc.returncode}: {log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError("qcli serve did not become healthy")


def _served(url: str) -> tuple[int, object]:
    r = httpx.post(f"{url}/predict", json={"symbols": ["SYM0001"]}, headers=HEADERS, timeout=10)
    if r.status_code == 200:
        return 200, r.json()["predictions"][0]["prediction"]
    return r.status_code, r.json().get("error")


def _converge(urls: list[str], want: tuple[int, object], timeout: float = 10.0) -> float:
    """Seconds until every replica answers ``want``."""
    t0 = time.monotonic()
    pending = set(urls)
    while pending:
        pending = {u for u in pending if _served(u) != want}
        if pending:
            assert time.monotonic() - t0 < timeout, {u: _served(u) for u in pending}
            time.sleep(0.02)
    return time.monotonic() - t0


def test_two_replicas_follow_promote_rollback_and_halt(
    tmp_path_factory, mlflow_template_db, redis_url, monkeypatch, qcli
):
    import redis

    home = tmp_path_factory.mktemp("replicas")
    monkeypatch.setenv("QCLI_HOME", str(home))
    monkeypatch.delenv("QCLI_API_TOKEN", raising=False)
    (home / "mlflow").mkdir()
    server = _Server(home / "mlflow", mlflow_template_db)
    procs: list[subprocess.Popen] = []
    try:
        url = _own_db(redis_url)
        redis.Redis.from_url(url).flushdb()
        write_feature_table(feature_frame())
        code, _out, err = qcli(
            "features", "materialize", "--online-store", "redis", "--redis-url", url, "--json"
        )
        assert code == 0, err
        server.wait_ready()
        uri = server.uri
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        name = f"r{uuid.uuid4().hex[:8]}"
        v1 = register_model(name, **linear(NAMES, bias=1.0), tracking_uri=uri).version
        force_promote(name, v1, uri)
        v2 = register_model(name, **linear(NAMES, bias=2.0), tracking_uri=uri).version
        urls = []
        for _ in range(2):
            proc, u = _start(home, name, uri)
            procs.append(proc)
            urls.append(u)
        for proc, u in zip(procs, urls, strict=True):
            _wait_healthy(proc, u, home / f"serve_{u.rsplit(':', 1)[1]}.log")
        assert {_served(u) for u in urls} == {(200, 1.0)}

        force_promote(name, v2, uri)
        t_promote = _converge(urls, (200, 2.0))

        t0 = time.monotonic()
        code, _, err = qcli("model", "rollback", name, "--reason", "replica test", "--json")
        assert code == 0, err
        t_rollback = time.monotonic() - t0 + _converge(urls, (200, 1.0))

        code, _, err = qcli("model", "halt", name, "--reason", "replica halt", "--json")
        assert code == 0, err
        t_halt = _converge(urls, (503, "model halted: replica halt"))
        for u in urls:
            h = httpx.get(f"{u}/health").json()
            assert h["status"] == "halted" and h["reason"] == "replica halt"
        code, _, err = qcli("model", "resume", name, "--reason", "fixed", "--json")
        assert code == 0, err
        _converge(urls, (200, 1.0))
        print(
            json.dumps(
                {
                    "promote_to_served_s": round(t_promote, 3),
                    "rollback_command_to_served_s": round(t_rollback, 3),
                    "halt_to_503_s": round(t_halt, 3),
                    "poll_interval_s": POLL_S,
                }
            )
        )
        # the deployment converged within a few poll intervals (loading a version included)
        assert max(t_promote, t_rollback, t_halt) < 10
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        server.stop()
