"""Several `qcli predict` and `qcli serve` processes started together on one cold ONNX cache.

Each process resolves the registered graph, finds the cache empty, downloads it and loads it.
The cache file is written to a private temporary directory and renamed into place, and each
runtime builds its session from the bytes it verified, so no process may crash, and all of them
serve the same graph.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _registration import register_model

# four interpreters importing MLflow and Feast at once: about a minute on an idle 2-core box
pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_PREDICT, N_SERVE = 2, 2


@pytest.fixture(scope="module")
def registered_home(module_home, signed_model, materialized, mlflow_template_db):
    """Features materialized and version 1 of model ``race`` registered with its ONNX graph."""
    shutil.copy(mlflow_template_db, module_home / "mlflow.db")
    graph = Path(signed_model["onnx_path"]).read_bytes()
    register_model("race", kind="onnx", features=signed_model["feature_names"], onnx=graph)
    return module_home


def test_predict_and_serve_processes_on_one_cold_cache(registered_home, tmp_path):
    import httpx

    from serving._deploy import free_port

    qcli_home = registered_home
    cache = qcli_home / "cache" / "onnx"
    assert not cache.exists()

    env = {**os.environ, "QCLI_HOME": str(qcli_home)}
    env.pop("QCLI_API_TOKEN", None)
    qcli = [sys.executable, "-m", "quantcli"]
    procs, ports = [], []
    for _ in range(N_SERVE):
        port = free_port()
        ports.append(port)
        log = open(tmp_path / f"serve_{port}.log", "wb")  # noqa: SIM115 (a file, not a pipe)
        procs.append(
            subprocess.Popen(
                [*qcli, "serve", "--model", "race", "--alias", "staging", "--port", str(port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        log.close()
    predicts = [
        subprocess.Popen(
            [*qcli, "predict", "SYM0000", "--model", "race", "--alias", "staging", "--json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(N_PREDICT)
    ]
    try:
        outs = [p.communicate(timeout=300) for p in predicts]
        for p, (_out, err) in zip(predicts, outs, strict=True):
            assert p.returncode == 0, err.decode()[-2000:]
            assert b"Traceback" not in err
        preds = [json.loads(out)["predictions"][0] for out, _ in outs]
        assert len({p["prediction"] for p in preds}) == 1
        assert len({p["onnx_model"]["sha256"] for p in preds}) == 1
        deadline = time.monotonic() + 300
        for port, proc in zip(ports, procs, strict=True):
            while True:
                assert proc.poll() is None, (tmp_path / f"serve_{port}.log").read_text()[-2000:]
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "service did not become healthy"
                time.sleep(0.2)
            r = httpx.post(
                f"http://127.0.0.1:{port}/predict", json={"symbols": ["SYM0000"]}, timeout=30
            )
            assert r.status_code == 200, r.text
            assert r.json()["predictions"][0]["prediction"] == preds[0]["prediction"]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for p in predicts:
            if p.poll() is None:
                p.kill()
                p.wait()
    for port in ports:
        assert "Traceback" not in (tmp_path / f"serve_{port}.log").read_text()
    # one graph in the cache, no temporary download left behind
    files = sorted(p.relative_to(cache) for p in cache.rglob("*") if p.is_file())
    assert [f.name for f in files] == ["model.fp32.onnx"]
    assert not [p for p in cache.rglob(".download-*")]
    from quantcli.audit import verify_ledger

    res = verify_ledger()
    assert res["ok"], res["first_broken"]
    assert res["records"] == N_PREDICT + N_SERVE


def test_predict_refuses_to_extend_a_truncated_ledger(registered_home, qcli):
    from quantcli.audit import ledger_path, verify_ledger

    code, _, err = qcli("predict", "SYM0001", "--model", "race", "--alias", "staging")
    assert code == 0, err
    before = verify_ledger()["records"]
    lines = ledger_path().read_bytes().splitlines(keepends=True)
    ledger_path().write_bytes(b"".join(lines[:-1]))  # the last prediction removed
    code, out, err = qcli("predict", "SYM0001", "--model", "race", "--alias", "staging")
    assert code == 2
    assert "its signed head counts" in err and "refusing to append" in err
    assert "Traceback" not in err and out == ""
    assert len(ledger_path().read_bytes().splitlines()) == before - 1  # nothing appended
