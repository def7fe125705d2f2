"""The live service under change and under abuse: `qcli serve` as a real process on loopback.

Each benchmark runs its peer in the same run, side by side, and reports both:

* **hot swap** -- 8 paced clients (40 requests/s each) for ``PHASE_S`` seconds without swaps
  (the peer), then the same load while the production alias moves every second and
  ``POST /admin/reload`` swaps it in. Budget: 0 failed requests, p99 < 20 ms, one swap per
  second observed in ``/metrics``.
* **rollback** -- ``qcli model rollback`` (a fresh process, as an operator runs it) to the first
  prediction from the previous version, with the default poll interval. Budget: < 10 s.
* **shadow** -- one client, sequential requests, blocks alternating without and with a shadow
  (a stored ``rollout --mode shadow`` swapped in by ``/admin/reload``). Budget: the shadow adds
  at most 1 ms to p99.
* **abusive client** -- 4 paced clients alone (the peer), then the same with one client (its
  own process) posting 25 MB bodies in a loop (with and without ``Content-Length``). Budget:
  the other clients' p99 < 20 ms.

Universe: 500 symbols x 60 days, SQLite online store, the embedded MLflow store; the models are
the linear test graphs of ``tests/serving/_deploy.py`` (each version predicts its own bias).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the online helpers

from _registration import register_model
from online._features import feature_frame, write_feature_table
from serving._deploy import force_promote, free_port, linear

pytestmark = pytest.mark.slow
SYMBOLS = ["SYM0007", "SYM0123"]
ADMIN = "bench-admin"
JSON = {"Content-Type": "application/json"}


def _pct(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples) * 1e3, q)) if samples else float("nan")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A materialized store, a registry with v1 (production) and v2, and `qcli serve`."""
    import httpx

    from quantcli.online import load_declaration, materialize

    home = tmp_path_factory.mktemp("follow_bench")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QCLI_HOME", str(home))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("QCLI_API_TOKEN", raising=False)
        write_feature_table(feature_frame(n_symbols=500, n_days=60, seed=9))
        materialize("technical_v1")
        names = load_declaration().feature_names
        name = "bench_follow"
        v1 = register_model(name, **linear(names, bias=1.0)).version
        force_promote(name, v1)
        v2 = register_model(name, **linear(names, bias=2.0)).version
        port = free_port()
        env = dict(os.environ, QCLI_HOME=str(home), QCLI_ADMIN_TOKEN=ADMIN)
        log = open(home / "serve.log", "wb")  # noqa: SIM115 - a file, not an undrained pipe
        proc = subprocess.Popen(
            [sys.executable, "-m", "quantcli", "serve", "--model", name, "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, (home / "serve.log").read_text()[-3000:]
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "qcli serve did not start"
            time.sleep(0.2)
        try:
            yield {"url": url, "name": name, "v1": v1, "v2": v2, "home": home, "env": env}
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _paced_clients(url: str, n: int, rate: float, seconds: float) -> tuple[list[float], list]:
    """``n`` clients, each posting at ``rate`` requests/s for ``seconds``: latencies, failures."""
    import httpx

    lat: list[float] = []
    fails: list = []
    stop = time.perf_counter() + seconds

    def run() -> None:
        with httpx.Client(timeout=10) as c:
            nxt = time.perf_counter()
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                try:
                    r = c.post(f"{url}/predict", json={"symbols": SYMBOLS}, headers=JSON)
                    if r.status_code != 200:
                        fails.append(r.status_code)
                except httpx.HTTPError as exc:
                    fails.append(type(exc).__name__)
                lat.append(time.perf_counter() - t0)
                nxt += 1.0 / rate
                time.sleep(max(0.0, nxt - time.perf_counter()))

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lat, fails


def _reload(url: str) -> dict:
    import httpx

    r = httpx.post(f"{url}/admin/reload", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def _metric(url: str, name: str) -> float:
    import httpx

    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_hot_swap_every_second_under_8_clients(benchmark, served):
    from quantcli.models.registry import ModelRegistry

    url, name = served["url"], served["name"]
    seconds = 3.0 if benchmark.disabled else 15.0
    _paced_clients(url, 2, 50, 1.0)  # warm the connections and the JIT-free paths
    base_lat, base_fails = _paced_clients(url, 8, 40, seconds)

    client = ModelRegistry().client
    done = threading.Event()
    swaps_before = _metric(url, "qcli_swaps_total")
    flips = []

    def swapper() -> None:
        version = served["v1"]
        while not done.wait(1.0):
            version = served["v2"] if version == served["v1"] else served["v1"]
            client.set_registered_model_alias(name, "production", version)
            flips.append(_reload(url)["serving"]["production"]["version"] == version)

    t = threading.Thread(target=swapper)
    t.start()
    try:
        lat, fails = _paced_clients(url, 8, 40, seconds)
    finally:
        done.set()
        t.join()
    swaps = _metric(url, "qcli_swaps_total") - swaps_before
    client.set_registered_model_alias(name, "production", served["v1"])
    _reload(url)
    benchmark.pedantic(lambda: None, rounds=1)
    stats = {
        "no_swap_p50_ms": _pct(base_lat, 50),
        "no_swap_p99_ms": _pct(base_lat, 99),
        "swap_p50_ms": _pct(lat, 50),
        "swap_p99_ms": _pct(lat, 99),
        "p99_ratio": _pct(lat, 99) / _pct(base_lat, 99),
        "requests": len(lat),
        "failed": len(fails),
        "swaps": swaps,
        "load_1min": os.getloadavg()[0],
    }
    benchmark.extra_info.update(stats)
    print(f"\nhot swap, 8 clients x 40 req/s, {seconds:.0f} s per phase: {stats}")
    assert not base_fails and not fails, fails[:5]
    assert all(flips) and swaps == len(flips) >= seconds / 2
    if not benchmark.disabled:
        assert stats["swap_p99_ms"] < 20.0


def test_rollback_command_to_first_previous_prediction(benchmark, served):
    import httpx

    url, name = served["url"], served["name"]
    force_promote(name, served["v2"])
    _reload(url)
    with httpx.Client() as c:
        assert (
            c.post(f"{url}/predict", json={"symbols": SYMBOLS}, headers=JSON).json()["predictions"][
                0
            ]["prediction"]
            == 2.0
        )
        t0, wall0 = time.perf_counter(), time.time()
        proc = subprocess.Popen(
            [sys.executable, "-m", "quantcli", "model", "rollback", name, "--reason", "bench"],
            env=served["env"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        command_s = None
        while True:
            r = c.post(f"{url}/predict", json={"symbols": SYMBOLS}, headers=JSON)
            if r.json()["predictions"][0]["prediction"] == 1.0:
                served_s = time.perf_counter() - t0
                break
            if command_s is None and proc.poll() is not None:
                command_s = time.perf_counter() - t0
            assert time.perf_counter() - t0 < 60, "rollback never reached the service"
            time.sleep(0.01)
    proc.wait(timeout=60)
    err = proc.stderr.read().decode()
    proc.stderr.close()  # an unclosed pipe is a ResourceWarning, an error under pytest's filter
    assert proc.returncode == 0, err[-2000:]
    # when the registry moved (the event's timestamp): the rest is the service's part
    import duckdb

    from quantcli.config import offline_store_path

    con = duckdb.connect(str(offline_store_path()), read_only=True)
    try:
        (moved,) = con.execute(
            "SELECT max(ts) FROM registry_events WHERE action = 'rollback' AND model_name = ?",
            [name],
        ).fetchone()
    finally:
        con.close()
    registry_moved_s = moved.timestamp() - wall0
    benchmark.pedantic(lambda: None, rounds=1)
    stats = {
        "rollback_to_served_s": served_s,
        "command_to_registry_moved_s": registry_moved_s,
        "registry_moved_to_served_s": served_s - registry_moved_s,
        "rollback_command_s": command_s,
        "poll_interval_s": 2.0,
        "load_1min": os.getloadavg()[0],
    }
    benchmark.extra_info.update(stats)
    print(f"\nrollback command -> first prediction from the previous version: {stats}")
    assert served_s < 10.0


def test_shadow_adds_at_most_1ms_to_p99(benchmark, served):
    import httpx

    from quantcli.models import deployment
    from quantcli.models.registry import ModelRegistry

    url, name = served["url"], served["name"]
    reg = ModelRegistry()
    n = 150 if benchmark.disabled else 1500
    off: list[float] = []
    on: list[float] = []

    def block(out: list[float]) -> None:
        with httpx.Client() as c:
            for _ in range(n):
                t0 = time.perf_counter()
                r = c.post(f"{url}/predict", json={"symbols": SYMBOLS}, headers=JSON)
                out.append(time.perf_counter() - t0)
                assert r.status_code == 200

    scored0 = _metric(url, 'qcli_shadow_symbols_total{outcome="scored"}')
    for _ in range(4):  # interleaved blocks: the machine's load drifts equally over both
        block(off)
        deployment.rollout(reg, name, served["v2"], 0, mode="shadow")
        assert _reload(url)["serving"]["shadow"]["version"] == served["v2"]
        block(on)
        deployment.rollout(reg, name, served["v2"], 0.0, reason="bench: shadow off")
        assert _reload(url)["serving"]["shadow"] is None
    time.sleep(0.5)
    scored = _metric(url, 'qcli_shadow_symbols_total{outcome="scored"}') - scored0
    dropped = _metric(url, 'qcli_shadow_symbols_total{outcome="dropped"}')
    benchmark.pedantic(lambda: None, rounds=1)
    stats = {
        "no_shadow_p50_ms": _pct(off, 50),
        "no_shadow_p99_ms": _pct(off, 99),
        "shadow_p50_ms": _pct(on, 50),
        "shadow_p99_ms": _pct(on, 99),
        "p99_added_ms": _pct(on, 99) - _pct(off, 99),
        "shadow_scored_symbols": scored,
        "shadow_dropped": dropped,
        "load_1min": os.getloadavg()[0],
    }
    benchmark.extra_info.update(stats)
    print(f"\nshadow scoring, 1 client, {4 * n} requests per arm: {stats}")
    assert scored == 2 * len(on) and dropped == 0
    if not benchmark.disabled:
        assert stats["p99_added_ms"] <= 1.0


ABUSER = r"""
import json, socket, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
body = b'{"symbols": [' + b'"SPY",' * (25 * 2**20 // 6) + b'"SPY"]}'
sent = {"requests": 0, "refused_413": 0}
chunked, stop = False, time.monotonic() + seconds + 0.5
while time.monotonic() < stop:
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    head += (b"Transfer-Encoding: chunked\r\n\r\n" if chunked
             else b"Content-Length: %d\r\n\r\n" % len(body))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(head)
            for i in range(0, len(body), 1 << 20):
                part = body[i : i + (1 << 20)]
                s.sendall(b"%x\r\n%s\r\n" % (len(part), part) if chunked else part)
            if chunked:
                s.sendall(b"0\r\n\r\n")
            answer = s.recv(64)
    except OSError:  # the server answered 413 and closed the connection mid-body
        answer = b""
    sent["requests"] += 1
    sent["refused_413"] += b" 413 " in answer or answer == b""
    chunked = not chunked
print(json.dumps(sent))
"""


def test_abusive_25mb_client_does_not_stall_the_others(benchmark, served):
    url = served["url"]
    port = int(url.rsplit(":", 1)[1])
    seconds = 3.0 if benchmark.disabled else 15.0
    base_lat, base_fails = _paced_clients(url, 4, 40, seconds)

    # the abusive client is its own process, as it would be: it must not share this process's
    # interpreter lock with the clients being measured
    abuser = subprocess.Popen(
        [sys.executable, "-c", ABUSER, str(port), str(seconds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    time.sleep(0.5)  # let it start sending
    lat, fails = _paced_clients(url, 4, 40, seconds)
    out, err = abuser.communicate(timeout=120)
    assert abuser.returncode == 0, err.decode()[-2000:]
    sent = json.loads(out)
    benchmark.pedantic(lambda: None, rounds=1)
    stats = {
        "alone_p50_ms": _pct(base_lat, 50),
        "alone_p99_ms": _pct(base_lat, 99),
        "with_abuser_p50_ms": _pct(lat, 50),
        "with_abuser_p99_ms": _pct(lat, 99),
        "p99_ratio": _pct(lat, 99) / _pct(base_lat, 99),
        "abusive_requests": sent["requests"],
        "load_1min": os.getloadavg()[0],
    }
    benchmark.extra_info.update(stats)
    print(f"\n4 clients x 40 req/s, one client posting 25 MB bodies: {stats}")
    assert not base_fails and not fails
    assert sent["requests"] >= 1 and sent["refused_413"] == sent["requests"]
    if not benchmark.disabled:
        assert stats["with_abuser_p99_ms"] < 20.0
