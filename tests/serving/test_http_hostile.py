"""Hostile HTTP requests against the real service (uvicorn on loopback): every malformed request
a 4xx JSON error naming the problem, never a 500 or a traceback, every response counted."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quantcli.online import get_feature_store
from quantcli.serving.http import WAITING_PER_THREAD, create_app
from quantcli.serving.predict import Predictor
from serving._deploy import ThreadedService
from serving._model import load_runtime

pytestmark = pytest.mark.integration

TOKEN = "tök-ü"  # a non-ASCII token: compared as bytes
AUTH = {"Authorization": f"Bearer {TOKEN}".encode(), "Content-Type": "application/json"}
LIMIT = 256 * 1024


@pytest.fixture(scope="module")
def predictor(module_home, materialized, signed_model):
    p = Predictor(load_runtime(module_home), get_feature_store(), alias="production")
    yield p
    p.close()


@pytest.fixture(scope="module")
def svc(predictor):
    app = create_app(predictor, api_token=TOKEN, max_body_bytes=LIMIT)
    with ThreadedService(app) as s:
        yield s


@pytest.fixture(scope="module")
def client(svc):
    with httpx.Client(base_url=svc.url, timeout=30) as c:
        yield c


def metric(client, name: str) -> float:
    text = client.get("/metrics", headers=AUTH).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def assert_json_error(r: httpx.Response, status: int, needle: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"error"} and needle in body["error"], body
    assert "Traceback" not in r.text


@pytest.mark.parametrize("path", ["/predict", "/metrics"])
@pytest.mark.parametrize(
    "value", [b"Bearer \xff", b"Bearer \xc3\xb6", b"Bearer", b"Basic abc", b"bearer  \x80\xfe"]
)
def test_any_bad_token_is_401_whatever_its_bytes(client, path, value):
    method = client.post if path == "/predict" else client.get
    headers = {"Authorization": value, "Content-Type": "application/json"}
    r = method(
        path, headers=headers, **({"json": {"symbols": ["SYM0001"]}} if path == "/predict" else {})
    )
    assert_json_error(r, 401, "bearer token")


def test_the_right_non_ascii_token_is_accepted(client):
    r = client.post("/predict", headers=AUTH, json={"symbols": ["SYM0001"]})
    assert r.status_code == 200 and r.json()["arm"] == "production"


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"[" * 100_000, "nests too deeply"),
        (b'{"symbols": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "nests too deeply"),
        (b'{"symbols": ["SYM0000"', "not JSON"),
        (b"\xff\xfe\x00", "not JSON"),
        (b"", "not JSON"),
    ],
    ids=["100k-brackets", "nested-symbols", "truncated", "not-utf8", "empty"],
)
def test_malformed_json_is_400(client, body, needle):
    before = metric(client, 'qcli_http_errors_total{kind="malformed_json"}')
    r = client.post("/predict", headers=AUTH, content=body)
    assert_json_error(r, 400, needle)
    assert metric(client, 'qcli_http_errors_total{kind="malformed_json"}') == before + 1


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"symbols": ["SPX\n"]}, "invalid ticker"),
        ({"symbols": ["\ud800"]}, "invalid ticker"),  # a lone surrogate, echoed escaped
        ({"symbols": ["SYM0001"], "\udfff": 1}, "unknown field"),
        ({"symbols": ["SYM0001"], "key": 5}, "`key` must be a string"),
        ({"symbols": ["SYM0001"], "key": "k" * 257}, "`key` must be a string"),
        ({"symbols": ["SYM0001"], "x" * 5000: 1}, "unknown field"),
        ({"symbols": [["SYM0001"]]}, "invalid ticker"),
        ({"symbols": ["SYM0001"] * 101}, "too many symbols"),
    ],
)
def test_bad_fields_are_422(client, body, needle):
    r = client.post("/predict", headers=AUTH, content=json.dumps(body).encode())
    assert_json_error(r, 422, needle)
    assert len(r.text) < 600  # the error names the problem without echoing the body


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; b=x", "json"],
)
def test_a_wrong_content_type_is_415(client, content_type):
    headers = {"Authorization": AUTH["Authorization"]}
    if content_type is not None:
        headers["Content-Type"] = content_type
    r = client.post("/predict", headers=headers, content=b'{"symbols": ["SYM0001"]}')
    assert_json_error(r, 415, "application/json")


def test_json_with_a_charset_is_accepted(client):
    headers = {**AUTH, "Content-Type": "Application/JSON; charset=utf-8"}
    r = client.post("/predict", headers=headers, content=b'{"symbols": ["SYM0001"]}')
    assert r.status_code == 200


def test_a_body_over_the_limit_is_413_by_its_declared_length(client):
    body = b'{"symbols": [' + b'"A",' * LIMIT + b'"A"]}'
    r = client.post("/predict", headers=AUTH, content=body)
    assert_json_error(r, 413, f"exceeds {LIMIT} bytes")


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_a_chunked_body_is_refused_while_reading(client):
    """No Content-Length: the limit is enforced as chunks arrive, and the connection is closed,
    so the server neither buffers nor drains the rest (the service runs in this process: its
    peak memory would grow by the body's size otherwise)."""
    sent = 0
    peak = _peak_rss_mb()

    def chunks():
        nonlocal sent
        yield b'{"symbols": ['
        for _ in range(100_000):  # 100 MB if it were all read
            sent += 1024
            yield b'"A",' * 256

    try:
        r = client.post("/predict", headers=AUTH, content=chunks())
    except httpx.TransportError:  # the server may close the socket before we finish writing
        r = None
    if r is not None:
        assert_json_error(r, 413, f"exceeds {LIMIT} bytes")
    assert sent < 50_000_000  # the server closed the connection long before the end
    assert _peak_rss_mb() - peak < 50
    assert client.get("/health").status_code == 200


def test_a_bad_content_length_is_4xx(svc):
    import socket

    for value in (b"abc", b"-5", b"99999999999999999999999", b"\xb2", b"1 2"):
        request = (
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: "
            + AUTH["Authorization"]
            + b"\r\nContent-Length: "
            + value
            + b"\r\n\r\n{}"
        )
        with socket.create_connection(("127.0.0.1", svc.port), timeout=10) as sock:
            sock.sendall(request)
            status = sock.recv(200).split(b"\r\n", 1)[0]
        assert status.split()[1] in (b"400", b"413"), (value, status)


def test_a_server_fault_is_a_json_500_and_counted(client, predictor):
    class Broken:
        def __getattr__(self, name):
            return getattr(store, name)

        def get_online_features(self, *a, **k):
            raise RuntimeError("disk on fire /secret/path")

    store = predictor.store
    before = metric(client, 'qcli_http_requests_total{endpoint="/predict",status="500"}')
    predictor.store = Broken()
    try:
        r = client.post("/predict", headers=AUTH, json={"symbols": ["SYM0001"]})
    finally:
        predictor.store = store
    assert_json_error(r, 500, "internal error (RuntimeError)")
    assert "/secret/path" not in r.text
    after = metric(client, 'qcli_http_requests_total{endpoint="/predict",status="500"}')
    assert after == before + 1


def test_unknown_paths_and_methods_are_json_and_counted(client):
    r = client.get("/predict")
    assert_json_error(r, 405, "Method Not Allowed")
    r = client.get("/nope")
    assert_json_error(r, 404, "Not Found")
    assert metric(client, 'qcli_http_requests_total{endpoint="other",status="404"}') >= 1


def test_a_broken_ledger_at_start_answers_503_with_the_reason(module_home, predictor):
    """`qcli serve` on a broken ledger: starts, and every /predict is a 503 naming it."""
    from quantcli.audit._ledger import ledger_path
    from quantcli.serving.predict import open_service_ledger

    # at least one record to tear, whichever tests of this module ran before on this worker
    predictor.predict(["SYM0001"], source="test")
    predictor.ledger.flush()
    path = ledger_path()
    saved = path.read_bytes()
    try:
        path.write_bytes(saved[:-10])  # a torn last record
        ledger, reason = open_service_ledger()
        assert reason is not None and reason.startswith("audit ledger broken: ")
        p = Predictor(predictor.runtime, predictor.store, ledger, alias="production")
        p.unavailable = reason
        with ThreadedService(create_app(p, api_token=TOKEN)) as s:
            r = httpx.post(f"{s.url}/predict", headers=AUTH, json={"symbols": ["SYM0001"]})
            h = httpx.get(f"{s.url}/health").json()
        assert_json_error(r, 503, "audit ledger broken")
        assert h["status"] == "unavailable" and h["reason"].startswith("audit ledger broken: ")
        # unauthenticated bodies name the file, never where it is (that is for /admin/reload)
        assert str(module_home) in reason
        assert str(module_home) not in r.text and str(module_home) not in json.dumps(h)
        assert f"{path.name}: " in h["reason"] and f"{path.name}: " in r.json()["error"]
    finally:
        path.write_bytes(saved)


@contextlib.contextmanager
def _offline_store_held(home):
    """Another process holding the offline store's write lock (a nightly ingest, say)."""
    hold = "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('held', flush=True); "
    hold += "time.sleep(60)"
    writer = subprocess.Popen(
        [sys.executable, "-c", hold, str(home / "offline.duckdb")], stdout=subprocess.PIPE
    )
    try:
        assert writer.stdout.readline().strip() == b"held"
        yield
    finally:
        writer.kill()
        writer.wait()
        writer.stdout.close()


def test_requests_waiting_on_the_offline_store_do_not_stall_health(module_home, predictor):
    """Unknown tickers fall back to the offline store; while another process holds its write
    lock, each such request waits up to the busy timeout -- on a worker thread, so /health and
    other requests are answered meanwhile."""
    with _offline_store_held(module_home):
        with ThreadedService(create_app(predictor, api_token=TOKEN)) as s:

            def unknown(i: int) -> httpx.Response:
                body = {"symbols": [f"ZZQ{i}"]}
                return httpx.post(f"{s.url}/predict", headers=AUTH, json=body, timeout=60)

            with ThreadPoolExecutor(5) as pool:
                waiting = [pool.submit(unknown, i) for i in range(5)]
                time.sleep(1.0)  # the five requests are in, each waiting for the lock
                t0 = time.monotonic()
                health = httpx.get(f"{s.url}/health", timeout=60)
                took = time.monotonic() - t0
                answers = [f.result() for f in waiting]
        assert health.status_code == 200
        assert took < 1.0, f"/health took {took:.1f} s behind the waiting requests"
        for r in answers:
            assert_json_error(r, 503, "store is busy")
            assert str(module_home) not in r.text


def test_requests_past_the_waiting_bound_are_refused_at_once(module_home, predictor):
    """One worker may have four requests waiting behind it: while a writer holds the offline
    store, the sixth and later unknown tickers get 503 at once instead of queueing."""
    with _offline_store_held(module_home):
        app = create_app(predictor, api_token=TOKEN, predict_threads=1)
        with ThreadedService(app) as s:

            def unknown(i: int) -> tuple[httpx.Response, float]:
                t0 = time.monotonic()
                body = {"symbols": [f"ZZW{i}"]}
                r = httpx.post(f"{s.url}/predict", headers=AUTH, json=body, timeout=60)
                return r, time.monotonic() - t0

            n = 1 + WAITING_PER_THREAD + 3
            with ThreadPoolExecutor(n) as pool:
                answers = list(pool.map(unknown, range(n)))
        busy = [(r, took) for r, took in answers if "too many requests" in r.text]
        assert len(busy) == 3
        for r, took in busy:
            assert_json_error(r, 503, "too many requests are waiting on the offline store")
            assert took < 1.0


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    body=st.one_of(
        st.binary(max_size=2000),
        st.recursive(
            st.none() | st.booleans() | st.floats() | st.text(max_size=40) | st.integers(),
            lambda inner: (
                st.lists(inner, max_size=5)
                | st.dictionaries(st.text(max_size=10), inner, max_size=5)
            ),
            max_leaves=30,
        ).map(lambda v: json.dumps({"symbols": v}).encode()),
    )
)
def test_arbitrary_bodies_never_get_a_500(client, body):
    r = client.post("/predict", headers=AUTH, content=body)
    assert r.status_code in (200, 400, 404, 413, 422), (body[:80], r.text)
    if r.status_code != 200:
        assert set(r.json()) == {"error"}
