"""A running service follows the registry: hot swap, rollback, canary shares, shadow, kill switch.

Real components throughout: the embedded MLflow registry, signed ONNX graphs loaded by the real
runtime, the materialized Feast online store, the hash-chained ledger. Each version's graph
predicts its own bias (``tests/serving/_deploy.py``), so a prediction names the version behind it.
"""

from __future__ import annotations

import json
import math
import shutil
import threading
import time
import uuid
from types import SimpleNamespace

import httpx
import pytest
from _registration import register_model

from quantcli.audit._ledger import ledger_path
from quantcli.errors import InputError, NotFoundError
from quantcli.models import deployment
from quantcli.models.lifecycle import validate_version
from quantcli.models.registry import ModelRegistry
from quantcli.online import load_declaration
from quantcli.serving.deployment import assignment_point
from quantcli.serving.follow import RegistryFollower, ServingConfig
from quantcli.serving.predict import ServiceHalted, load_predictor
from serving._deploy import ThreadedService, force_promote, linear

NAMES = load_declaration().feature_names
SYM = ["SYM0001"]

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def registry_home(module_home, materialized, mlflow_template_db):
    shutil.copy(mlflow_template_db, module_home / "mlflow.db")
    return module_home


class Sink:
    """Collects the follower's alerts instead of posting them (the CLI's delivery through the
    [alerts] routes: tests/monitoring/test_alerts)."""

    def __init__(self) -> None:
        self.alerts: list = []

    def __call__(self, severity: str, title: str, details: dict) -> None:
        self.alerts.append(SimpleNamespace(severity=severity, title=title, details=details))


@pytest.fixture
def model(registry_home):
    """A fresh model: v1 (predicts 1.0) in production, v2 (predicts 2.0) at staging."""
    name = f"m{uuid.uuid4().hex[:8]}"
    v1 = register_model(name, **linear(NAMES, bias=1.0)).version
    force_promote(name, v1)
    register_model(name, **linear(NAMES, bias=2.0), backtest="pass")  # no verdict recorded yet
    return name


@pytest.fixture
def served(model):
    predictor = load_predictor(model, "production")
    sink = Sink()
    follower = RegistryFollower(predictor, model, interval_s=0.1, alert=sink)
    follower.sink = sink
    yield predictor, follower
    follower.stop()
    predictor.close()


def gates_pass(model: str, version: str) -> None:
    """Record passing, signed verdicts of every floor gate on ``version``: parity and scan as
    export and scan record them, the backtest's from its training run (``qcli model
    validate``); the version was registered with a passing CPCV backtest."""
    reg = ModelRegistry()
    for gate in ("parity", "scan"):
        reg.record_verdict(model, version, gate, True, [])
    assert validate_version(reg, model, version).passed


def ledger(model: str, event: str | None = None) -> list[dict]:
    recs = [json.loads(line) for line in ledger_path().read_text().splitlines()]
    return [r for r in recs if r.get("model_name") == model and r.get("event") == event]


def value(predictor, key: str | None = None) -> float:
    return predictor.predict(SYM, source="test", key=key)["predictions"][0]["prediction"]


def test_promote_and_rollback_are_followed_and_every_swap_is_audited(model, served):
    predictor, follower = served
    assert value(predictor) == 1.0
    force_promote(model, "2")
    assert value(predictor) == 1.0  # nothing changes before the service reads the registry
    out = follower.sync("poll")
    assert out["serving"]["production"]["version"] == "2" and out["errors"] == []
    assert value(predictor) == 2.0
    ModelRegistry().rollback(model, reason="test")
    follower.sync("admin reload")
    assert value(predictor) == 1.0
    swaps = [(r["arm"], r["from_version"], r["to_version"]) for r in ledger(model, "swap")]
    assert swaps == [("production", "1", "2"), ("production", "2", "1")]
    assert [r["reason"] for r in ledger(model, "swap")] == [
        f"poll: registry {model}@production",
        f"admin reload: registry {model}@production",
    ]
    assert predictor.swaps == 2


def test_the_poll_thread_follows_a_rollback_within_the_interval(model, served):
    predictor, follower = served
    force_promote(model, "2")
    follower.sync()
    assert value(predictor) == 2.0
    follower.start()
    t0 = time.monotonic()
    ModelRegistry().rollback(model, reason="test: rollback reaches production")
    while value(predictor) != 1.0:
        assert time.monotonic() - t0 < 10, "rollback not served within 10 s"
        time.sleep(0.02)
    # the poll interval is 0.1 s; loading v1 again is a download + verify + warm-up
    assert time.monotonic() - t0 < 10


class GatedStore:
    """The real online store, with a gate that holds the first read of a request open."""

    def __init__(self, store) -> None:
        self._store = store
        self.entered = threading.Event()
        self.release = threading.Event()

    def get_online_features(self, *args, **kwargs):
        self.entered.set()
        assert self.release.wait(10)
        return self._store.get_online_features(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._store, name)


def test_a_request_in_flight_finishes_on_the_old_version(model, served):
    predictor, follower = served
    gated = GatedStore(predictor.store)
    predictor.store = gated
    out: dict = {}
    t = threading.Thread(target=lambda: out.update(predictor.predict(SYM, source="test")))
    t.start()
    assert gated.entered.wait(10)
    predictor.store = gated._store  # the swap's warm-up reads the real store
    force_promote(model, "2")
    follower.sync()  # swaps while the request is between its feature read and its inference
    gated.release.set()
    t.join(10)
    assert out["predictions"][0]["prediction"] == 1.0
    assert out["predictions"][0]["model_version"] == "1"
    assert value(predictor) == 2.0


def test_a_version_that_fails_to_verify_is_never_swapped_in(model, served):
    predictor, follower = served
    bad = register_model(model, **linear(NAMES, bias=3.0, graph=b"\x08\x07not a graph")).version
    force_promote(model, bad)
    out = follower.sync()
    assert value(predictor) == 1.0  # the old version keeps serving
    assert len(out["errors"]) == 1 and out["errors"][0].startswith(f"production v{bad}: ")
    refused = ledger(model, "swap_refused")
    assert [(r["from_version"], r["to_version"]) for r in refused] == [("1", bad)]
    assert [a.severity for a in follower.sink.alerts] == ["CRITICAL"]
    assert f"v{bad} (production) failed to load or verify; still serving v1" in (
        follower.sink.alerts[0].title
    )
    follower.sync()  # retried later, alerted once
    assert len(follower.sink.alerts) == 1 and value(predictor) == 1.0
    force_promote(model, "2")
    follower.sync()
    assert value(predictor) == 2.0


def test_canary_shares_are_stored_stepped_deterministic_and_binomial(model, served):
    predictor, follower = served
    reg = ModelRegistry()
    gates_pass(model, "2")
    with pytest.raises(InputError, match=r"the next step is --share 0\.1"):
        deployment.rollout(reg, model, "2", 0.5)
    deployment.rollout(reg, model, "2", 0.1, reason="canary")
    follower.sync()
    n = 1500
    keys = [f"client-{i}" for i in range(n)]
    arms = {k: predictor.predict(SYM, source="test", key=k)["arm"] for k in keys}
    for share in (0.1,):
        hits = sum(a == "candidate" for a in arms.values())
        sigma = math.sqrt(n * share * (1 - share))
        assert abs(hits - n * share) < 4 * sigma, (hits, n * share)
    # the arm is a function of the key: the same keys give the same arms, and the candidate
    # arm predicts with v2
    again = predictor.predict(SYM, source="test", key=keys[0])
    assert again["arm"] == arms[keys[0]]
    cand = next(k for k, a in arms.items() if a == "candidate")
    res = predictor.predict(SYM, source="test", key=cand)
    assert (
        res["predictions"][0]["prediction"] == 2.0 and res["predictions"][0]["arm"] == "candidate"
    )
    assert {k for k, a in arms.items() if a == "candidate"} == {
        k for k in keys if assignment_point(k) < 0.1
    }
    deployment.rollout(reg, model, "2", 0.5)
    follower.sync()
    arms5 = {k: predictor.predict(SYM, source="test", key=k)["arm"] for k in keys}
    hits = sum(a == "candidate" for a in arms5.values())
    assert abs(hits - n * 0.5) < 4 * math.sqrt(n * 0.25)
    # raising the share only moves keys towards the candidate
    assert all(arms5[k] == "candidate" for k, a in arms.items() if a == "candidate")
    recs = [r for r in ledger(model) if r.get("source") == "test" and r.get("arm") == "candidate"]
    assert recs and all(r["model_version"] == "2" for r in recs)
    deployment.rollout(reg, model, "2", 0.0, reason="abort")  # share 0 aborts
    follower.sync()
    assert {predictor.predict(SYM, source="test", key=k)["arm"] for k in keys[:200]} == {
        "production"
    }
    assert deployment.read_state(reg, model).candidate is None
    share_events = [(r["from_share"], r["to_share"]) for r in ledger(model, "share")]
    assert share_events == [(0.1, 0.5)]


def test_a_canary_whose_gates_fail_gets_no_traffic_without_a_recorded_override(model, served):
    """A version whose gates failed, or were never recorded, never answers production traffic:
    the rollout refuses it, and a service refuses a rollout stored around the command."""
    from quantcli.errors import GateFailedError

    predictor, follower = served
    follower.retry_after_s = 0.0  # re-read the verdicts on every sync
    reg = ModelRegistry()
    failed = {"backtest": False, "parity": True, "scan": True}  # the Sharpe gate failed
    bad = register_model(model, **linear(NAMES, bias=3.0), verdicts=failed).version
    keys = [f"acct-{i}" for i in range(400)]
    for version, why in ((bad, "verdict 'backtest' is fail"), ("2", "'backtest' not recorded")):
        with pytest.raises(GateFailedError) as refused:
            deployment.rollout(reg, model, version, 0.1, reason="c")
        assert any(why in r for r in refused.value.reasons), refused.value.reasons
    assert deployment.read_state(reg, model).candidate is None  # nothing stored
    with pytest.raises(InputError, match="--force needs --reason"):
        deployment.rollout(reg, model, bad, 0.1, force=True)

    # a blue-green tag written around the command (an older qcli, a hand edit)
    tag = {"version": bad, "share": 1.0, "mode": "canary", "set_at": "2026-01-01T00:00:00+00:00"}
    reg.client.set_registered_model_tag(model, deployment.ROLLOUT_TAG, json.dumps(tag))
    out = follower.sync()
    arms = {predictor.predict(SYM, source="test", key=k)["arm"] for k in keys[:50]}
    assert arms == {"production"} and predictor.deployment.candidate is None
    assert len(out["errors"]) == 1 and "required verdicts do not pass" in out["errors"][0]
    follower.sync()  # the same refusal is audited and alerted once
    refused = ledger(model, "swap_refused")
    assert [(r["arm"], r["to_version"]) for r in refused] == [("candidate", bad)]
    assert "verdict 'backtest' is fail" in refused[0]["reason"]
    assert [a.severity for a in follower.sink.alerts] == ["WARNING"]
    title = follower.sink.alerts[0].title
    assert f"v{bad} (candidate) gets no traffic: its gates; production keeps all traffic" in title
    assert "failed to load" not in title

    # the override: --force with a reason, recorded in the tag and in registry_events
    reg.client.delete_registered_model_tag(model, deployment.ROLLOUT_TAG)
    r = deployment.rollout(reg, model, bad, 0.1, force=True, reason="risk committee RC-1")
    assert r.override["reason"] == "risk committee RC-1" and r.event["forced"] is True
    assert r.override["overridden"] == [reason for reason in r.event["details"]["gate_reasons"]]
    follower.sync()
    cand = next(k for k in keys if assignment_point(k) < 0.1)
    res = predictor.predict(SYM, source="test", key=cand)
    assert res["arm"] == "candidate" and res["predictions"][0]["model_version"] == bad

    # a candidate in service whose gates stop passing leaves at the next check
    deployment.rollout(reg, model, bad, 0.0, reason="abort")
    gates_pass(model, "2")
    deployment.rollout(reg, model, "2", 0.1, reason="gated canary")
    follower.sync()
    assert predictor.deployment.candidate.version == "2"
    reg.record_verdict(model, "2", "backtest", False, ["sharpe 0.10 < min_sharpe 1.20"])
    out = follower.sync()
    assert predictor.deployment.candidate is None and "sharpe 0.10" in out["errors"][0]
    assert predictor.predict(SYM, source="test", key=cand)["arm"] == "production"
    swaps = [(r["arm"], r["from_version"], r["to_version"]) for r in ledger(model, "swap")]
    assert swaps[-1] == ("candidate", "2", None)


def test_deployed_at_is_when_the_registry_deployed_the_served_arm(model, served):
    """``deployed_at`` of a response and its ledger record: the promote/rollback that moved
    production onto the version, the rollout that made the candidate -- also when the runtime
    was already loaded (a rollback to a cached version)."""
    predictor, follower = served
    reg = ModelRegistry()

    def served_row(key: str | None = None) -> dict:
        return predictor.predict(SYM, source="test", key=key)["predictions"][0]

    first = served_row()["deployed_at"]
    promoted = force_promote(model, "2")
    follower.sync()
    assert served_row()["deployed_at"] == promoted["event"]["ts"] != first
    rolled = reg.rollback(model, reason="test: back to v1")
    follower.sync()  # v1's runtime is still loaded: no download, a new deployment time
    row = served_row()
    assert row["model_version"] == "1" and row["deployed_at"] == rolled["event"]["ts"]
    assert ledger(model)[-1]["deployed_at"] == rolled["event"]["ts"]

    gates_pass(model, "2")
    step = deployment.rollout(reg, model, "2", 0.1, reason="canary")
    follower.sync()
    cand = next(f"acct-{i}" for i in range(1000) if assignment_point(f"acct-{i}") < 0.1)
    assert served_row(cand)["arm"] == "candidate"
    assert served_row(cand)["deployed_at"] == step.deployed_at == step.set_at
    wider = deployment.rollout(reg, model, "2", 0.5, reason="canary 50 %")
    follower.sync()
    assert wider.deployed_at == step.deployed_at  # a share step does not redeploy
    assert served_row(cand)["deployed_at"] == step.deployed_at
    assert served_row()["deployed_at"] in (rolled["event"]["ts"], step.deployed_at)


def test_the_canary_is_promoted_through_the_gated_promote(model):
    reg = ModelRegistry()
    for share in (0.1, 0.5, 1.0):  # a recorded override lets the canary run ...
        deployment.rollout(reg, model, "2", share, force=True, reason="test: override")
    from quantcli.errors import GateFailedError

    with pytest.raises(GateFailedError, match="gate"):  # ... never past the promote's gates
        deployment.promote_rollout(reg, model)
    assert deployment.read_state(reg, model).candidate == "2"
    with pytest.raises(InputError, match="next step is --promote"):
        deployment.rollout(reg, model, "2", 0.5)


def test_halt_and_resume_are_registry_events_and_refusals_are_audited(model, served):
    predictor, follower = served
    reg = ModelRegistry()
    with pytest.raises(InputError, match="--reason is required"):
        deployment.halt(reg, model, reason=" ")
    deployment.halt(reg, model, reason="vendor prices bad since 14:02")
    follower.sync()
    with pytest.raises(ServiceHalted, match="model halted: vendor prices bad since 14:02"):
        predictor.predict(SYM, source="test")
    refusals = ledger(model, "refusal")
    assert len(refusals) == 1 and refusals[0]["reason"].endswith("vendor prices bad since 14:02")
    assert predictor.describe()["deployment"]["halted"] is True
    deployment.resume(reg, model, reason="fixed")
    follower.sync()
    assert value(predictor) == 1.0
    with pytest.raises(NotFoundError, match="not halted"):
        deployment.resume(reg, model, reason="again")
    import duckdb

    from quantcli.config import offline_store_path

    con = duckdb.connect(str(offline_store_path()), read_only=True)
    actions = con.execute(
        "SELECT action, reason FROM registry_events WHERE model_name = ? ORDER BY ts", [model]
    ).fetchall()
    con.close()
    assert [a for a, _ in actions][-2:] == ["halt", "resume"]
    assert [(r["event"]) for r in ledger(model, "halt") + ledger(model, "resume")] == [
        "halt",
        "resume",
    ]
    # each record carries the operator's reason, not the poll's
    assert [r["reason"] for r in ledger(model, "halt") + ledger(model, "resume")] == [
        "vendor prices bad since 14:02",
        "fixed",
    ]


def test_shadow_scores_every_request_off_the_hot_path_and_records_both(model, registry_home):
    predictor = load_predictor(model, "production")
    follower = RegistryFollower(predictor, model, shadow_alias="staging", alert=Sink())
    try:
        follower.sync("startup")
        res = predictor.predict(["SYM0001", "SYM0002"], source="test")
        assert [p["prediction"] for p in res["predictions"]] == [1.0, 1.0]
        predictor.shadow.drain()
        recs = [r for r in ledger(model, "shadow") if r["request_id"] == res["request_id"]]
        assert [
            (r["symbol"], r["production_prediction"], r["shadow_prediction"]) for r in recs
        ] == [
            ("SYM0001", 1.0, 2.0),
            ("SYM0002", 1.0, 2.0),
        ]
        assert {r["shadow_version"] for r in recs} == {"2"} and "prediction" not in recs[0]
        assert predictor.shadow.scored == 2 and predictor.shadow.dropped == 0
    finally:
        predictor.close()


def test_stored_shadow_rollout_is_followed(model, served):
    predictor, follower = served
    deployment.rollout(ModelRegistry(), model, "2", 0, mode="shadow")
    follower.sync()
    assert predictor.deployment.shadow.version == "2" and predictor.deployment.candidate is None
    assert predictor.predict(SYM, source="test")["arm"] == "production"


def test_http_halt_503_health_and_admin_reload(model, served, monkeypatch):
    from quantcli.serving.http import create_app

    predictor, follower = served
    app = create_app(predictor, api_token="tok", admin_token="adm", follower=follower)
    auth = {"Authorization": "Bearer tok", "Content-Type": "application/json"}
    with ThreadedService(app) as svc:
        r = httpx.post(f"{svc.url}/predict", json={"symbols": SYM}, headers=auth)
        assert r.status_code == 200 and r.json()["arm"] == "production"
        deployment.halt(ModelRegistry(), model, reason="kill switch test")
        r = httpx.post(f"{svc.url}/admin/reload", headers={"Authorization": "Bearer tok"})
        assert r.status_code == 401  # the API token is not the admin token
        r = httpx.post(f"{svc.url}/admin/reload", headers={"Authorization": "Bearer adm"})
        assert r.status_code == 200 and r.json()["serving"]["halted"] is True
        r = httpx.post(f"{svc.url}/predict", json={"symbols": SYM}, headers=auth)
        assert r.status_code == 503 and r.json() == {"error": "model halted: kill switch test"}
        h = httpx.get(f"{svc.url}/health").json()
        assert h["status"] == "halted" and h["reason"] == "kill switch test"
        text = httpx.get(f"{svc.url}/metrics", headers=auth).text
        assert 'qcli_http_requests_total{endpoint="/predict",status="503"} 1.0' in text
        assert "qcli_halted 1.0" in text and "qcli_refusals_total 1.0" in text
        assert 'qcli_arm_requests_total{arm="production",model_version="1"} 1.0' in text


def test_serving_config_is_checked():
    with pytest.raises(InputError, match=r"\[serving\] poll_interval_s must be in"):
        ServingConfig(poll_interval_s=0)
    with pytest.raises(InputError, match=r"\[serving\] max_body_bytes"):
        ServingConfig(max_body_bytes=10)
    assert ServingConfig().poll_interval_s <= 5


def _bars_with_known_returns(ret: float) -> None:
    """The stand-in features' bars, plus 6 later bars per symbol at (1 + ret) x the last close:
    every served feature row's 5-bar forward return is then exactly ``ret``."""
    from datetime import timedelta

    import duckdb
    import polars as pl

    from quantcli.config import offline_store_path
    from quantcli.data.synthetic import synthetic_universe

    bars = synthetic_universe(n_symbols=6, n_days=80, seed=3).select("symbol", "ts", "close")
    last = bars.sort("ts").group_by("symbol").last()
    extra = pl.concat(
        last.with_columns(pl.col("ts") + timedelta(days=d), pl.col("close") * (1 + ret))
        for d in range(1, 7)
    )
    frame = pl.concat([bars, extra]).sort("symbol", "ts")
    con = duckdb.connect(str(offline_store_path()))
    try:
        con.register("b", frame.to_arrow())
        con.execute("CREATE OR REPLACE TABLE bars AS SELECT * FROM b")
    finally:
        con.close()


def test_live_shadow_compare_alerts_on_realized_pnl_divergence(model, registry_home, qcli):
    """Shadow v3 (predicts -1: the opposite trade) against production v1 (predicts +1); every
    realized 5-bar return is +10 %: production's wealth 1.1, the shadow's 0.9."""
    v3 = register_model(model, **linear(NAMES, bias=-1.0)).version
    deployment.rollout(ModelRegistry(), model, v3, 0, mode="shadow")
    predictor = load_predictor(model, "production")
    follower = RegistryFollower(predictor, model, alert=Sink())
    try:
        follower.sync("startup")
        for _ in range(3):  # the same feature rows three times: counted once
            predictor.predict(["SYM0001", "SYM0002", "SYM0003"], source="test")
        predictor.shadow.drain()
    finally:
        predictor.close()
    _bars_with_known_returns(0.10)
    code, out, err = qcli("model", "shadow", model, "--live", "--json")
    assert code == 1, err
    r = json.loads(out)
    assert r["n_records"] == 3 and r["n_realized"] == 3
    assert r["prediction"] == {"mean_abs_diff": 2.0, "max_abs_diff": 2.0, "sign_agreement": 0.0}
    assert r["against"]["cumulative_return"] == pytest.approx(0.10)
    assert r["candidate"]["cumulative_return"] == pytest.approx(-0.10)
    assert r["pnl_divergence"] == pytest.approx(1 - 0.9 / 1.1)
    assert "live shadow P&L divergence 18.18% beyond 5%" in err
    code, out, err = qcli(
        "model", "shadow", model, "--live", "--max-pnl-divergence", "0.5", "--json"
    )
    assert code == 0 and json.loads(out)["passed"] is True


def test_cli_rollout_halt_resume_exit_codes(model, qcli):
    code, out, err = qcli("model", "halt", model, "--json")
    assert code == 2 and "--reason is required" in err
    code, out, err = qcli("model", "rollout", model, "--version", "2", "--share", "0.5")
    assert code == 2 and "the next step is --share 0.1" in err
    code, out, err = qcli("model", "rollout", model, "--version", "2", "--share", "0.1")
    assert code == 1 and "verdict 'backtest' not recorded" in err  # a canary is gated
    code, out, err = qcli("model", "rollout", model, "--version", "2", "--share", "0.1", "--force")
    assert code == 2 and "--reason" in err  # an override is explicit and explained
    code, out, err = qcli("model", "rollout", model, "--version", "2", "--share", "0.1",
                          "--force", "--reason", "trial on 10%", "--json")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["override"] is not None
    code, out, err = qcli("model", "rollout", model, "--share", "0", "--json")
    assert code == 0 and json.loads(out)["aborted"] is True
    gates_pass(model, "2")
    code, out, err = qcli("model", "rollout", model, "--version", "2", "--share", "0.1", "--json")
    assert code == 0, err
    volatile = {"set_at": None, "deployed_at": None, "by": None, "event": None}
    assert json.loads(out) | volatile == {
        "name": model,
        "aborted": False,
        "passed": True,
        "reasons": [],
        "version": "2",
        "share": 0.1,
        "mode": "canary",
        "reason": "",
        "required_verdicts": ["backtest", "parity", "scan"],
        "override": None,
        **volatile,
    }
    code, out, err = qcli("model", "rollout", model, "--promote")
    assert code == 2 and "no canary at share 1.0" in err
    code, out, err = qcli("model", "rollout", model, "--share", "0", "--json")
    assert code == 0 and json.loads(out)["aborted"] is True
    code, out, err = qcli("model", "rollout", model, "--share", "0")
    assert code == 2 and "no rollout to abort" in err
    code, out, err = qcli("model", "resume", model, "--reason", "x")
    assert code == 2 and "not halted" in err
    code, out, err = qcli("model", "halt", model, "--reason", "test halt", "--json")
    assert code == 0 and json.loads(out)["halted"] is True
    code, out, err = qcli("predict", "SYM0001", "--model", model, "--json")
    assert code == 1 and "model halted: test halt" in err  # the one-shot CLI refuses too
    code, out, err = qcli("model", "resume", model, "--reason", "ok", "--json")
    assert code == 0 and json.loads(out)["halted"] is False
    code, out, err = qcli("predict", "SYM0001", "--model", model, "--json")
    assert code == 0 and json.loads(out)["predictions"][0]["prediction"] == 1.0


def test_guard_critical_halts_every_service(model, served, qcli, tmp_path):
    predictor, follower = served
    snapshot = tmp_path / "metrics.json"
    snapshot.write_text(json.dumps({"requests": 1000, "errors": 50, "slow_requests": 0}))
    code, out, _ = qcli("monitor", "guard", "--model", model, "--metrics", str(snapshot), "--json")
    assert code == 1
    r = json.loads(out)
    assert r["action"] == "halt" and r["halt"]["halted"] is True
    assert r["halt"]["reason"] == "guard CRITICAL: error rate 5.00% above 1%"
    follower.sync()
    with pytest.raises(ServiceHalted, match=r"guard CRITICAL: error rate 5\.00% above 1%"):
        predictor.predict(SYM, source="test")
    deployment.resume(ModelRegistry(), model, reason="checked")
    follower.sync()
    assert value(predictor) == 1.0


def test_guard_auto_rollback_reaches_the_service(model, served, qcli, tmp_path):
    predictor, follower = served
    force_promote(model, "2")
    follower.sync()
    assert value(predictor) == 2.0
    snapshot = tmp_path / "metrics.json"
    snapshot.write_text(json.dumps({"requests": 1000, "errors": 50, "slow_requests": 0}))
    code, out, _ = qcli(
        "monitor",
        "guard",
        "--model",
        model,
        "--metrics",
        str(snapshot),
        "--auto-rollback",
        "--json",
    )
    assert code == 1
    r = json.loads(out)
    assert r["action"] == "rollback" and r["halt"] is None
    assert (r["rollback"]["from_version"], r["rollback"]["to_version"]) == ("2", "1")
    follower.sync()
    assert value(predictor) == 1.0  # the previous version serves; not halted


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--poll-interval", "0"], "--poll-interval must be in [0.05, 300] s, got 0"),
        (["--poll-interval", "nan"], "--poll-interval must be seconds, got nan"),
        (["--max-body-bytes", "10"], "--max-body-bytes must be a whole number in [1024,"),
    ],
)
def test_serve_refuses_bad_options_naming_them(qcli_home, qcli, args, message):
    code, _, err = qcli("serve", "--model", "m", *args)
    assert code == 2 and message in err


def test_serve_refuses_a_shadow_alias_the_model_does_not_have(model):
    """`qcli serve --shadow-alias nope` would shadow nothing and say nothing: refused (exit 2)
    naming the option, before anything is loaded."""
    from quantcli.serving.service import open_service

    with pytest.raises(InputError, match=r"--shadow-alias 'nope': model '.*' has no alias 'nope'"):
        open_service(model, shadow_alias="nope")
    service = open_service(model, shadow_alias="staging")
    try:
        assert service.predictor.deployment.shadow.version == "2"
    finally:
        service.predictor.close()


@pytest.mark.parametrize("port", ["0", "70000"])
def test_serve_refuses_a_port_out_of_range_before_any_output(model, qcli, port):
    code, out, err = qcli("serve", "--model", model, "--port", port, "--json")
    assert code == 2 and out == ""
    assert f"--port must be 1..65535, got --port {port}" in err
