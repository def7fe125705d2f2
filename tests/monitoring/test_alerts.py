"""Alert delivery against a real HTTP receiver on loopback: routing, retries, dead letter,
redaction, and the guard's findings reaching the webhook."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from quantcli.errors import InputError
from quantcli.monitoring.alerts import Alert, AlertConfig, AlertSink, redact_url


class Receiver:
    """A Slack-like webhook on 127.0.0.1: records JSON bodies; the first ``fail`` posts get 503;
    a body without a ``text`` string gets 400 (what Slack answers)."""

    def __init__(self, fail: int = 0) -> None:
        self.bodies: list[dict] = []
        self.paths: list[str] = []
        self.fail = fail
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("content-length", "0"))
                raw = self.rfile.read(n)
                receiver.paths.append(self.path)
                if receiver.fail > 0:
                    receiver.fail -= 1
                    self.send_response(503)
                    self.end_headers()
                    return
                body = json.loads(raw)
                ok = isinstance(body, dict) and isinstance(body.get("text"), str)
                if ok:
                    receiver.bodies.append(body)
                self.send_response(200 if ok else 400)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


SECRET = "/services/T000/B000/XXXXsecretXXXX"


def test_routes_by_severity_and_the_body_is_slack_compatible(tmp_path):
    with Receiver() as rx:
        sink = AlertSink(
            AlertConfig(
                critical_url=rx.url("/page" + SECRET),
                warning_url=rx.url("/chat" + SECRET),
                dead_letter=str(tmp_path / "dl.jsonl"),
            )
        )
        d1 = sink.send(Alert("CRITICAL", "sharpe: below floor", details={"model": "m"}))
        d2 = sink.send(Alert("WARNING", "drift: 6 features"))
        d3 = sink.send(Alert("INFO", "all clear"))  # no info_url: log only
    assert (d1.delivered, d1.attempts, d2.delivered, d3.route) == (True, 1, True, None)
    assert d1.passed and d3.passed  # logged only (no route) is not a failed delivery
    assert d3.to_dict() == {
        "severity": "INFO", "route": None, "delivered": False, "attempts": 0,
        "dead_lettered": False, "error": None,
    }  # fmt: skip
    assert rx.paths == ["/page" + SECRET, "/chat" + SECRET]
    assert rx.bodies[0]["text"] == "[CRITICAL] quantcli: sharpe: below floor"
    assert rx.bodies[0]["quantcli"]["details"] == {"model": "m"}
    assert rx.bodies[1]["attachments"][0]["color"] == "#f2c744"
    assert not (tmp_path / "dl.jsonl").exists()


def test_retries_with_backoff_then_delivers(tmp_path):
    with Receiver(fail=2) as rx:
        sink = AlertSink(
            AlertConfig(
                critical_url=rx.url(SECRET),
                retries=3,
                backoff_s=0.01,
                dead_letter=str(tmp_path / "dl"),
            )
        )
        d = sink.send(Alert("CRITICAL", "x"))
    assert d.delivered and d.attempts == 3 and len(rx.bodies) == 1
    assert not (tmp_path / "dl").exists()


def test_undeliverable_goes_to_the_dead_letter_file_and_no_secret_is_logged(tmp_path, caplog):
    dl = tmp_path / "alerts" / "dead.jsonl"
    with Receiver(fail=10) as rx:
        url = rx.url(SECRET)
        sink = AlertSink(
            AlertConfig(critical_url=url, retries=2, backoff_s=0.01, dead_letter=str(dl))
        )
        with caplog.at_level(logging.DEBUG, logger="quantcli.alerts"):
            d = sink.send(Alert("CRITICAL", "sharpe: below floor"))
    assert not d.delivered and d.dead_lettered and d.attempts == 3 and d.error == "HTTP 503"
    assert not d.passed and d.reasons == ("HTTP 503",)
    rec = json.loads(dl.read_text())
    assert (
        rec["attempts"] == 3 and rec["alert"]["text"] == "[CRITICAL] quantcli: sharpe: below floor"
    )
    assert rec["route"] == redact_url(url) and rec["route"].endswith("/...")
    assert "secret" not in dl.read_text()
    assert "secret" not in caplog.text and "HTTP 503" in caplog.text


def test_unreachable_receiver_is_dead_lettered(tmp_path):
    from serving._deploy import free_port  # a port nobody listens on

    sink = AlertSink(
        AlertConfig(
            warning_url=f"http://127.0.0.1:{free_port()}{SECRET}",
            retries=1,
            backoff_s=0.01,
            timeout_s=2,
            dead_letter=str(tmp_path / "dl"),
        )
    )
    d = sink.send(Alert("WARNING", "x"))
    assert d.dead_lettered and d.error.startswith("ConnectionRefusedError")
    assert "secret" not in (tmp_path / "dl").read_text()


def test_env_url_and_bad_config_name_the_key_not_the_url(monkeypatch):
    monkeypatch.setenv("PAGER_URL", "https://hooks.example.com" + SECRET)
    assert AlertConfig(critical_url="env:PAGER_URL").url_for("CRITICAL").endswith(SECRET)
    with pytest.raises(InputError, match=r"\[alerts\] critical_url must be an http\(s\) URL") as e:
        AlertConfig(critical_url="ftp://user:pw@example.com/x")
    assert "pw" not in str(e.value)
    with pytest.raises(InputError, match=r"\[alerts\] retries must be in \[0, 10\]"):
        AlertConfig(retries=11)
    with pytest.raises(InputError, match=r"\[alerts\] backoff_s"):
        AlertConfig(backoff_s=float("nan"))


def test_guard_critical_reaches_the_webhook(qcli_home, tmp_path, qcli):
    """`qcli monitor guard --config` with [alerts]: the CRITICAL finding is posted."""
    snapshot = tmp_path / "metrics.json"
    snapshot.write_text(json.dumps({"requests": 1000, "errors": 50, "slow_requests": 0}))
    with Receiver() as rx:
        cfg = tmp_path / "alerts.toml"
        cfg.write_text(
            f'[alerts]\ncritical_url = "{rx.url("/page" + SECRET)}"\n'
            f'warning_url = "{rx.url("/chat" + SECRET)}"\n'
        )
        run = qcli("monitor", "guard", "--metrics", snapshot, "--config", cfg, "--json")
    assert run.code == 1, run.err
    texts = [b["text"] for b in rx.bodies]
    assert texts == ["[CRITICAL] qcli monitor guard: error_rate: error rate 5.00% above 1%"]
    assert rx.paths == ["/page" + SECRET]
