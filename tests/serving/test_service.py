"""The prediction service as a real uvicorn process on a free port, called over HTTP; the
in-process predictor; the audit ledger written by both."""

from __future__ import annotations

import json
import signal

import httpx
import numpy as np
import polars as pl
import pytest
from online._features import latest_rows

from quantcli.audit import features_sha256, verify_ledger
from quantcli.audit._ledger import ledger_path
from quantcli.errors import InputError, NotFoundError
from quantcli.online import get_feature_store, load_declaration
from quantcli.serving.predict import Predictor
from serving._model import load_runtime
from serving.conftest import start_service, stop_service

NAMES = load_declaration().feature_names
TAGS = (
    "model_version",
    "model_run_id",
    "feature_version",
    "dataset_manifest_id",
    "onnx_model",
    "inference_latency_ms",
    "deployed_at",
)

pytestmark = pytest.mark.integration


TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def service(module_home, materialized, signed_model):
    """ONE service process for the module (start-up imports Feast: seconds), token required.
    The last test of the module kills it with SIGKILL."""
    svc = start_service(module_home, token=TOKEN)
    yield svc
    stop_service(svc)


def post(svc, **kwargs) -> httpx.Response:
    headers = {**AUTH, "Content-Type": "application/json"}
    return httpx.post(f"{svc.url}/predict", headers=headers, timeout=10, **kwargs)


def ledger_records() -> list[dict]:
    return [json.loads(line) for line in ledger_path().read_text().splitlines()]


def expected_predictions(signed_model, features, symbols):
    """The oracle: LightGBM's own predict on the offline store's latest rows (float32 inputs)."""
    latest = latest_rows(features)
    rows = [latest.filter(pl.col("symbol") == s).select(NAMES).to_numpy()[0] for s in symbols]
    X = np.asarray(rows, dtype=np.float32).astype(np.float64)
    return signed_model["booster"].predict(X), np.asarray(rows)


def test_predict_over_http_matches_lightgbm_and_is_in_the_ledger(service, signed_model, features):
    before = len(ledger_records()) if ledger_path().exists() else 0
    symbols = ["SYM0003", "SYM0000"]
    r = post(service, json={"symbols": symbols})
    assert r.status_code == 200, r.text
    body = r.json()
    want, inputs = expected_predictions(signed_model, features, symbols)
    got = [p["prediction"] for p in body["predictions"]]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)  # float32 thresholds in ONNX
    meta = signed_model["audit_tags"]
    for p, sym in zip(body["predictions"], symbols, strict=True):
        assert p["symbol"] == sym and p["fallback"] is None
        assert set(TAGS) <= set(p)
        assert p["model_version"] == "3" and p["model_run_id"] == meta["model_run_id"]
        assert p["feature_version"] == "technical_v1@1"
        assert p["dataset_manifest_id"] == "manifest-123"
        assert p["onnx_model"] == {"name": "model.onnx", "sha256": signed_model["sha256"]}
        assert p["deployed_at"] == meta["deployed_at"]
        assert p["inference_latency_ms"] > 0
    recs = ledger_records()[before:]
    assert [r["symbol"] for r in recs] == symbols
    assert {r["request_id"] for r in recs} == {body["request_id"]}
    assert [r["prediction"] for r in recs] == got
    assert [r["features_sha256"] for r in recs] == [features_sha256(row) for row in inputs]
    assert all(r["source"] == "http" and r["alias"] == "production" for r in recs)
    assert verify_ledger()["ok"]


def test_health_and_metrics(service):
    h = httpx.get(f"{service.url}/health", timeout=10)
    assert h.status_code == 200
    assert h.json()["status"] == "ok" and h.json()["model_version"] == "3"
    assert h.json()["online_store"]["read_path"] == "direct"
    for _ in range(3):
        r = post(service, json={"symbols": ["SYM0001"]})
        assert r.status_code == 200
    post(service, json={"symbols": []})
    text = httpx.get(f"{service.url}/metrics", headers=AUTH, timeout=10).text
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
    assert samples['qcli_http_requests_total{endpoint="/predict",status="200"}'] >= 3
    assert samples['qcli_http_requests_total{endpoint="/predict",status="422"}'] >= 1
    assert samples['qcli_http_errors_total{kind="bad_request"}'] >= 1
    assert samples['qcli_http_request_latency_seconds_count{endpoint="/predict"}'] >= 4
    assert samples["qcli_online_hits_total"] >= 3
    assert 'qcli_online_fallbacks_total{reason="missing"}' in samples
    assert samples["qcli_predictions_total"] >= 3
    assert any(k.startswith("qcli_model_info{") and 'model_version="3"' in k for k in samples)


@pytest.mark.parametrize(
    ("kwargs", "status", "needle"),
    [
        ({"content": b'{"symbols": ["SYM0000"'}, 400, "not JSON"),
        ({"content": b"\xff\xfe"}, 400, "not JSON"),
        ({"json": {"symbols": []}}, 422, "empty"),
        ({"json": {"symbols": ["SYM0000"] * 101}}, 422, "too many symbols"),
        ({"json": {"symbols": "SYM0000"}}, 422, "list"),
        ({"json": {"symbols": [1, 2]}}, 422, "invalid ticker"),
        ({"json": {"symbols": ["SYM0000"], "x": 1}}, 422, "unknown field"),
        ({"json": ["SYM0000"]}, 422, "symbols"),
        ({"json": {"tickers": ["SYM0000"]}}, 422, "symbols"),
        ({"json": {"symbols": ["SYM0000", "NOSUCH"]}}, 404, "unknown symbol 'NOSUCH'"),
    ],
)
def test_bad_requests_get_4xx_with_a_message_and_write_nothing(service, kwargs, status, needle):
    before = len(ledger_records()) if ledger_path().exists() else 0
    r = post(service, **kwargs)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]
    after = len(ledger_records()) if ledger_path().exists() else 0
    assert after == before


def test_wrong_method_and_path_are_4xx(service):
    wrong_method = httpx.get(f"{service.url}/predict", headers=AUTH)
    assert wrong_method.status_code == 405 and wrong_method.json()["error"] == "Method Not Allowed"
    wrong_path = httpx.get(f"{service.url}/nope", headers=AUTH)
    assert wrong_path.status_code == 404 and wrong_path.json()["error"] == "Not Found"


def test_bearer_token_required_when_set(service):
    url = f"{service.url}/predict"
    body = {"symbols": ["SYM0000"]}
    missing = httpx.post(url, json=body)
    assert missing.status_code == 401 and "token" in missing.json()["error"]
    wrong = httpx.post(url, json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert httpx.post(url, json=body, headers={"Authorization": "Basic s3cret"}).status_code == 401
    assert httpx.post(url, json=body, headers=AUTH).status_code == 200
    assert httpx.get(f"{service.url}/metrics").status_code == 401
    assert httpx.get(f"{service.url}/health").status_code == 200  # probes carry no token


def test_in_process_predictor_same_numbers_as_http(
    module_home, materialized, signed_model, service
):
    predictor = Predictor(load_runtime(module_home), get_feature_store(), alias="staging")
    try:
        n_before = len(ledger_records())
        predictor.warm_up()  # what `serve` does before accepting traffic: not recorded, not counted
        assert len(ledger_records()) == n_before
        assert predictor.store.counters.as_dict()["hits"] == 0
        local = predictor.predict(["SYM0002"], source="cli")
        remote = post(service, json={"symbols": ["SYM0002"]}).json()
        assert local["predictions"][0]["prediction"] == remote["predictions"][0]["prediction"]
        assert ledger_records()[-2]["source"] == "cli"
        assert ledger_records()[-2]["alias"] == "staging"
        with pytest.raises(InputError, match="empty"):
            predictor.predict([])
        with pytest.raises(NotFoundError):
            predictor.predict(["ZZZ"])
    finally:
        predictor.close()
    assert verify_ledger()["ok"]


def test_ledger_keeps_every_answered_prediction_when_the_service_is_killed(service):
    """Last test of the module: it kills the shared service."""
    svc = service
    before = len(ledger_records()) if ledger_path().exists() else 0
    for _ in range(20):
        r = post(svc, json={"symbols": ["SYM0004", "SYM0005"]})
        assert r.status_code == 200
    svc.proc.send_signal(signal.SIGKILL)  # no shutdown hook, no final fsync
    svc.proc.wait(timeout=10)
    res = verify_ledger()
    assert res["ok"]
    assert res["records"] == before + 40
