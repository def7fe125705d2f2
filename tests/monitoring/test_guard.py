"""Guard: the pure evaluation (each trigger alone), the service metrics reader, auto-rollback."""

from __future__ import annotations

import json
import shutil
import threading
import time
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import polars as pl
import pytest

from quantcli.errors import InputError
from quantcli.monitoring.guard import evaluate_guard, worst_severity
from quantcli.monitoring.service_metrics import (
    MAX_METRICS_BYTES,
    parse_prometheus,
    read_service_health,
)

D = [date(2024, 3, 4) + timedelta(days=i) for i in range(4)]
OK = {"max_drawdown": -0.05, "error_rate": 0.0, "slow_share": 0.0, "n_drifted": 0}


def _by_check(findings):
    return {f.check: f.severity for f in findings}


def test_all_clear_is_info():
    f = evaluate_guard(daily_sharpe=[(D[0], 1.5), (D[1], 1.4), (D[2], 1.3)], **OK)
    assert worst_severity(f) == "INFO" and len(f) == 5


def test_sharpe_three_consecutive_days_is_critical_alone():
    f = evaluate_guard(daily_sharpe=[(D[0], 0.7), (D[1], 0.5), (D[2], 0.79)], **OK)
    assert _by_check(f) == {
        "sharpe": "CRITICAL",
        "drawdown": "INFO",
        "error_rate": "INFO",
        "latency": "INFO",
        "drift": "INFO",
    }
    assert f[0].check == "sharpe"  # worst first


@pytest.mark.parametrize(
    "daily",
    [
        [(D[1], 0.5), (D[2], 0.5)],  # only two days
        [(D[0], 0.5), (D[1], 0.5), (D[3], 0.5)],  # a gap: not consecutive
        [(D[0], 0.9), (D[1], 0.5), (D[2], 0.5)],  # one day at or above 0.8
    ],
)
def test_sharpe_below_but_not_three_consecutive_days_is_warning(daily):
    expected = "WARNING" if daily[-1][1] < 0.8 else "INFO"
    assert _by_check(evaluate_guard(daily_sharpe=daily, **OK))["sharpe"] == expected


def test_sharpe_exactly_at_threshold_is_not_below():
    f = evaluate_guard(daily_sharpe=[(D[0], 0.8), (D[1], 0.8), (D[2], 0.8)], **OK)
    assert _by_check(f)["sharpe"] == "INFO"


@pytest.mark.parametrize(
    ("field", "value", "check", "severity"),
    [
        ("max_drawdown", -0.2501, "drawdown", "CRITICAL"),
        ("max_drawdown", -0.25, "drawdown", "WARNING"),
        ("max_drawdown", -0.20, "drawdown", "INFO"),
        ("error_rate", 0.0101, "error_rate", "CRITICAL"),
        ("error_rate", 0.01, "error_rate", "WARNING"),
        ("error_rate", 0.005, "error_rate", "INFO"),
        ("slow_share", 0.0501, "latency", "WARNING"),
        ("slow_share", 0.05, "latency", "INFO"),
        ("n_drifted", 6, "drift", "WARNING"),
        ("n_drifted", 5, "drift", "INFO"),
    ],
)
def test_each_trigger_alone(field, value, check, severity):
    f = evaluate_guard(daily_sharpe=[(D[2], 1.5)], **{**OK, field: value})
    sev = _by_check(f)
    assert sev[check] == severity
    assert all(s == "INFO" for c, s in sev.items() if c != check)


def test_missing_inputs_are_info_and_say_so():
    f = evaluate_guard()
    assert worst_severity(f) == "INFO"
    assert any("no --metrics" in x.message for x in f)


def _prometheus_text(n_ok: int, n_5xx: int, n_4xx: int, latencies: list[float]) -> str:
    """Prometheus exposition text with the metric names of quantcli.serving.http.

    Written out by hand, not through prometheus_client: once any test in the process has
    imported Feast, prometheus_client may be in file-backed multiprocess mode, where a fresh
    CollectorRegistry's counters add up across calls and this helper would not be pure.
    """
    from quantcli.serving.metrics import LATENCY_BUCKETS

    lines = [
        "# TYPE qcli_http_requests_total counter",
        f'qcli_http_requests_total{{endpoint="/predict",status="200"}} {float(n_ok)}',
        f'qcli_http_requests_total{{endpoint="/predict",status="500"}} {float(n_5xx)}',
        f'qcli_http_requests_total{{endpoint="/predict",status="422"}} {float(n_4xx)}',
        'qcli_http_requests_total{endpoint="/metrics",status="500"} 1000.0',  # ignored
        "# TYPE qcli_http_request_latency_seconds histogram",
    ]
    for endpoint, values in (("/predict", latencies), ("/metrics", [5.0])):
        for le in [*LATENCY_BUCKETS, float("inf")]:
            n = sum(1 for x in values if x <= le)
            le_txt = "+Inf" if le == float("inf") else repr(float(le))
            lines.append(
                f'qcli_http_request_latency_seconds_bucket{{endpoint="{endpoint}",le="{le_txt}"}}'
                f" {float(n)}"
            )
        lines.append(
            f'qcli_http_request_latency_seconds_count{{endpoint="{endpoint}"}} {float(len(values))}'
        )
        lines.append(
            f'qcli_http_request_latency_seconds_sum{{endpoint="{endpoint}"}} {float(sum(values))}'
        )
    return "\n".join(lines) + "\n"


def test_parse_prometheus_error_rate_and_slow_share(tmp_path):
    lat = [0.01] * 90 + [0.5] * 4 + [0.6] * 6  # 0.5 s exactly is not slower than 500 ms
    text = _prometheus_text(n_ok=970, n_5xx=20, n_4xx=10, latencies=lat)
    h = parse_prometheus(text)
    assert (h.requests, h.errors, h.slow_requests) == (1000, 20, 6)
    assert h.error_rate == pytest.approx(0.02)
    assert h.slow_share == pytest.approx(6 / 1000)
    p = tmp_path / "metrics.prom"
    p.write_text(text)
    assert read_service_health(str(p)).to_dict()["errors"] == 20
    j = tmp_path / "snap.json"
    j.write_text(json.dumps({"requests": 200, "errors": 3, "slow_requests": 11}))
    assert read_service_health(str(j)).slow_share == pytest.approx(0.055)


def test_service_metrics_bad_input_names_the_source(tmp_path):
    with pytest.raises(InputError, match=r"missing\.prom: file not found"):
        read_service_health(str(tmp_path / "missing.prom"))
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(InputError, match="expected JSON with requests"):
        read_service_health(str(bad))
    with pytest.raises(InputError, match="cannot read the service metrics"):
        read_service_health("http://127.0.0.1:9/metrics", timeout=0.5)


# -- auto-rollback through the real MLflow registry ---------------------------------------
def _bad_days(days: int) -> None:
    from quantcli.monitoring.performance import PerformanceMonitor

    mon = PerformanceMonitor(window_size=50)
    rng = np.random.default_rng(9)
    t0 = datetime(2024, 3, 1, tzinfo=UTC)
    act = rng.normal(0.0, 0.002, 60)  # small losses: drawdown stays above -20 %
    mon.log_predictions(
        pl.DataFrame(
            {"ts": [t0 + timedelta(hours=i) for i in range(60)], "prediction": -act,
             "actual": act}
        )
    )  # fmt: skip
    for d in range(days):
        mon.calculate_metrics(now=datetime(2024, 3, 10 + d, 18, tzinfo=UTC))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # MLflow/SQLAlchemy internals
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_guard_auto_rollback_on_critical(qcli_home, mlflow_template, qcli, register_model):
    from _registration import tiny

    from quantcli.models.registry import ModelRegistry

    shutil.copy(mlflow_template, qcli_home / "mlflow.db")
    reg = ModelRegistry()
    name = "guard_model"
    for seed in (1, 2):
        # parity and scan: what `qcli model export` and `model scan` record
        v = register_model(name, **tiny(seed=seed), verdicts={"parity": True, "scan": True}).version
        reg.validate(name, v)  # records the backtest verdict from the run's tag
        reg.promote(name, v)
    assert reg.alias_version(name, "production") == "2"

    _bad_days(3)
    out = qcli("monitor", "guard", "--model", name, "--auto-rollback", "--json")
    assert out.code == 1
    r = out.json
    assert r["severity"] == "CRITICAL" and r["action"] == "rollback"
    assert r["findings"][0]["check"] == "sharpe"
    assert (r["rollback"]["from_version"], r["rollback"]["to_version"]) == ("2", "1")
    assert r["rollback"]["event"]["reason"].startswith("guard auto-rollback: rolling Sharpe")
    assert "production rolled back 2 -> 1" in out.err
    assert ModelRegistry().alias_version(name, "production") == "1"

    from quantcli.monitoring.state import monitoring_store

    with monitoring_store() as store:
        rows = store.con.execute(
            "SELECT severity, action, detail FROM monitor_guard_events"
        ).fetchall()
    assert [(s, a) for s, a, _ in rows] == [("CRITICAL", "rollback")]
    assert json.loads(rows[0][2])["to_version"] == "1"


def test_guard_two_bad_days_warns_exit_0_no_rollback(qcli_home, qcli):
    _bad_days(2)
    run = qcli("monitor", "guard", "--json")
    r = run.json
    assert run.code == 0
    assert r["severity"] == "WARNING" and r["action"] == "none"


def test_auto_rollback_needs_model(qcli_home, qcli):
    code, _, err = qcli("monitor", "guard", "--auto-rollback")
    assert code == 2
    assert "--auto-rollback needs --model" in err


def test_guard_rates_the_requests_since_its_previous_run(qcli_home, tmp_path, qcli):
    """Prometheus counters are cumulative: a fresh error spike must not be diluted."""

    def guard(errors_total: int, requests_total: int) -> tuple[int, dict]:
        p = tmp_path / "metrics.prom"
        ok = requests_total - errors_total
        p.write_text(_prometheus_text(ok, errors_total, 0, [0.01] * 10))
        run = qcli("monitor", "guard", "--metrics", p, "--json")
        return run.code, run.json

    code, r = guard(10, 10_000)  # first run: cumulative, 0.1 %
    assert code == 0 and r["inputs"]["service"]["window"] == "since service start"
    code, r = guard(30, 10_100)  # +100 requests, +20 errors: 20 % now (0.3 % cumulative)
    assert code == 1
    svc = r["inputs"]["service"]
    assert (svc["requests"], svc["errors"]) == (100, 20)
    assert svc["window"].startswith("since the previous guard run at")
    assert r["findings"][0]["check"] == "error_rate" and r["findings"][0]["value"] == 0.2
    code, r = guard(0, 50)  # the service restarted: counters went down
    assert code == 0
    assert r["inputs"]["service"]["requests"] == 50
    assert r["inputs"]["service"]["window"] == "since service start (counters reset)"


# The exact findings (message, value, threshold) of the four threshold checks, written out by
# hand before the checks became table-driven: the refactor must not change one character.
_GOLDEN = [
    (
        {"max_drawdown": -0.3, "error_rate": 0.02, "slow_share": 0.08, "n_drifted": 7},
        [
            ("drawdown", "CRITICAL", "max drawdown -30.0% beyond -25%", -0.3, -0.25),
            ("error_rate", "CRITICAL", "error rate 2.00% above 1%", 0.02, 0.01),
            ("latency", "WARNING", "8.0% of requests slower than 500 ms (limit 5%)", 0.08, 0.05),
            ("drift", "WARNING", "7 features drifted (more than 5)", 7.0, 5.0),
        ],
    ),
    (
        {"max_drawdown": -0.22, "error_rate": 0.007, "slow_share": 0.05, "n_drifted": 5},
        [
            ("drawdown", "WARNING", "max drawdown -22.0% beyond -20%", -0.22, -0.2),
            ("error_rate", "WARNING", "error rate 0.70% above 0.5%", 0.007, 0.005),
            ("latency", "INFO", "5.0% of requests over 500 ms", 0.05, None),
            ("drift", "INFO", "5 features drifted", 5.0, None),
        ],
    ),
    (
        {"max_drawdown": -0.1, "error_rate": 0.001, "slow_share": 0.01, "n_drifted": 0},
        [
            ("drawdown", "INFO", "max drawdown -10.0% ok", -0.1, None),
            ("error_rate", "INFO", "error rate 0.10% ok", 0.001, None),
            ("latency", "INFO", "1.0% of requests over 500 ms", 0.01, None),
            ("drift", "INFO", "0 features drifted", 0.0, None),
        ],
    ),
    (
        {},
        [
            ("drawdown", "INFO", "no drawdown recorded", None, None),
            ("error_rate", "INFO", "no service requests to rate (or no --metrics)", None, None),
            ("latency", "INFO", "no service requests to rate (or no --metrics)", None, None),
            ("drift", "INFO", "no drift check recorded", None, None),
        ],
    ),
]


@pytest.mark.parametrize(("inputs", "expected"), _GOLDEN)
def test_threshold_findings_exactly(inputs, expected):
    f = evaluate_guard(daily_sharpe=[(D[2], 1.5)], **inputs)
    got = [(x.check, x.severity, x.message, x.value, x.threshold) for x in f if x.check != "sharpe"]
    rank = {"CRITICAL": 0, "WARNING": 1, "INFO": 2}
    assert got == sorted(expected, key=lambda e: rank[e[1]])
    assert all(type(x.value) in (float, type(None)) for x in f)


# -- the /metrics URL: no redirects with the token, a bounded answer and time --------------
class _MetricsServer:
    """A /metrics endpoint on 127.0.0.1 answering ``body`` (or 302 to ``location``, or one
    byte per 0.3 s); records each request's path and Authorization header."""

    def __init__(self, body=b"", *, location=None, trickle=False):
        self.seen: list[tuple[str, str | None]] = []
        self.stop = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                outer.seen.append((self.path, self.headers.get("Authorization")))
                if location is not None:
                    self.send_response(302)
                    self.send_header("Location", location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if trickle:
                    for i in range(40):
                        if outer.stop.wait(0.3):
                            return
                        self.wfile.write(b"HTTP/1.1 200 OK\r\n\r\n"[i : i + 1] or b"#")
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path="/metrics"):
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


TOKEN = "s3cret-token-value"


def test_metrics_redirect_is_refused_and_the_token_stays_home(monkeypatch):
    """urllib copies an add_header Authorization to the redirected request, to any host."""
    monkeypatch.setenv("QCLI_API_TOKEN", TOKEN)
    text = _prometheus_text(n_ok=10, n_5xx=0, n_4xx=0, latencies=[0.01] * 10).encode()
    with _MetricsServer(text) as elsewhere:
        # localhost vs 127.0.0.1: another origin, as a redirect to another host would be
        port = elsewhere.server.server_address[1]
        with (
            _MetricsServer(location=f"http://localhost:{port}/steal") as svc,
            pytest.raises(InputError) as exc,
        ):
            read_service_health(svc.url(), timeout=5)
    assert "HTTP 302 (redirects are not followed)" in str(exc.value)
    assert svc.seen == [("/metrics", f"Bearer {TOKEN}")]
    assert elsewhere.seen == []
    assert TOKEN not in str(exc.value)


def test_metrics_credentials_in_the_url_are_never_shown():
    """A query (where a token may ride) stays out of the result's source and of errors, and a
    user and password in the URL are refused, not sent nor echoed: the token goes in
    QCLI_API_TOKEN. Scheme, host, port and path name the service."""
    text = _prometheus_text(n_ok=10, n_5xx=0, n_4xx=0, latencies=[0.01] * 10).encode()
    with _MetricsServer(text) as svc:
        port = svc.server.server_address[1]
        with_query = f"http://127.0.0.1:{port}/metrics?token=t0k3n"
        assert read_service_health(with_query, timeout=5).source == svc.url()
    with pytest.raises(InputError) as exc:  # the server is gone: the error names the URL
        read_service_health(with_query, timeout=5)
    assert f"--metrics {svc.url()}: cannot read" in str(exc.value)
    assert "t0k3n" not in str(exc.value)
    with pytest.raises(InputError) as exc:
        read_service_health(f"http://ops:pa55w0rd@127.0.0.1:{port}/metrics", timeout=5)
    assert (
        str(exc.value) == f"--metrics {svc.url()}: credentials in the URL are not sent (nor shown)"
    )


def test_metrics_answer_is_bounded_in_size_and_time():
    with (
        _MetricsServer(b"#" * (MAX_METRICS_BYTES + 1)) as svc,
        pytest.raises(InputError, match=r"answer larger than 8388608 bytes"),
    ):
        read_service_health(svc.url(), timeout=10)
    with _MetricsServer(trickle=True) as svc:
        t0 = time.monotonic()
        with pytest.raises(InputError, match=r"no complete answer within 1 s"):
            read_service_health(svc.url(), timeout=1)
        assert time.monotonic() - t0 < 3


@pytest.mark.parametrize("value", ["NaN", "+Inf", "-Inf", "-3", "junk"])
def test_prometheus_non_finite_or_negative_count_names_the_source(value):
    text = _prometheus_text(n_ok=10, n_5xx=0, n_4xx=0, latencies=[0.01] * 10)
    text = text.replace(
        'qcli_http_requests_total{endpoint="/predict",status="500"} 0.0',
        f'qcli_http_requests_total{{endpoint="/predict",status="500"}} {value}',
    )
    with pytest.raises(InputError, match=r"^snap\.prom: qcli_http_requests_total\{.*\} is "):
        parse_prometheus(text, "snap.prom")


@pytest.mark.parametrize(
    ("snapshot", "message"),
    [
        ('{"requests": 1e999, "errors": 0}', r"requests must be a whole number >= 0, got inf"),
        ('{"requests": 1000, "errors": -500}', r"errors must be a whole number >= 0, got -500"),
        ('{"requests": 10, "errors": 1, "slow_requests": -1}', r"slow_requests must be"),
        ('{"requests": 10, "errors": 1.5}', r"errors must be a whole number"),
        ('{"requests": 10, "errors": true}', r"errors must be a whole number"),
        ('{"requests": 10, "errors": 11}', r"errors \(11\) exceeds requests \(10\)"),
        ('{"requests": 10, "errors": 0, "slow_requests": 11}', r"slow_requests \(11\) exceeds"),
        ("[1, 2]", r"expected JSON with requests, errors"),
    ],
)
def test_json_snapshot_counts_are_checked(qcli_home, tmp_path, qcli, snapshot, message):
    snap = tmp_path / "snap.json"
    snap.write_text(snapshot)
    with pytest.raises(InputError, match=message):
        read_service_health(str(snap))
    run = qcli("monitor", "guard", "--metrics", snap)
    assert run.code == 2 and "snap.json" in run.err and "Traceback" not in run.err, run.err
