"""Alert delivery against a real HTTP receiver on loopback: routing, retries, dead letter,
redaction, and the guard's findings reaching the webhook."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from _registration import tiny

from quantcli.errors import InputError
from quantcli.models.deployment import read_state
from quantcli.models.registry import ModelRegistry
from quantcli.monitoring.alerts import Alert, AlertConfig, AlertSink, redact_url
from quantcli.monitoring.guard import run_guard
from quantcli.monitoring.shadow_live import run_live_shadow
from quantcli.monitoring.state import monitoring_store
from quantcli.workspace import Workspace


class _Loopback:
    """A threaded HTTP server on 127.0.0.1 for one ``Handler`` class, as a context manager."""

    def serve(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


class Receiver(_Loopback):
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

            def do_GET(self):  # where urllib's redirect handler would re-send a POST
                receiver.paths.append("GET " + self.path)
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.serve(Handler)


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
    assert run.json["alerts"] == [
        {"severity": "CRITICAL", "route": redact_url(rx.url("/")), "delivered": True,
         "attempts": 1, "dead_lettered": False, "error": None},
    ]  # fmt: skip


class Misbehaving(_Loopback):
    """A webhook on 127.0.0.1 that answers badly: ``trickle`` sends a valid 200 one byte per
    ``interval`` (no single read ever times out), ``silent`` accepts and never answers,
    ``redirect`` answers 302 to ``location``. ``on_post`` runs when a POST arrives."""

    def __init__(self, mode, *, interval=0.5, location="", on_post=None, limit_s=20.0):
        self.posts = 0
        self.stop = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length", "0")))
                outer.posts += 1
                if on_post is not None:
                    on_post()
                if mode == "redirect":
                    self.send_response(302)
                    self.send_header("Location", location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif mode == "silent":
                    outer.stop.wait(limit_s)
                else:
                    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                    for i in range(len(answer)):
                        if outer.stop.wait(interval):
                            return
                        self.wfile.write(answer[i : i + 1])
                        self.wfile.flush()

            def log_message(self, *args):
                pass

        self.serve(Handler)

    def __exit__(self, *exc) -> None:
        self.stop.set()  # a trickling answer stops before the server does
        super().__exit__(*exc)


def test_a_trickling_webhook_is_cut_at_timeout_s_in_all(tmp_path):
    """urlopen's timeout is per read: one byte every 0.3 s never trips it."""
    with Misbehaving("trickle", interval=0.3) as hook:
        sink = AlertSink(
            AlertConfig(
                critical_url=hook.url(SECRET), retries=1, backoff_s=0.01, timeout_s=1,
                dead_letter=str(tmp_path / "dl"),
            )
        )  # fmt: skip
        t0 = time.monotonic()
        d = sink.send(Alert("CRITICAL", "x"))
        elapsed = time.monotonic() - t0
    assert elapsed < 4, elapsed
    assert not d.delivered and d.dead_lettered and d.attempts == 2
    assert d.error == "no complete answer within 1 s"


def test_the_whole_delivery_is_bounded_even_at_the_documented_maxima(tmp_path):
    """retries=10, backoff_s=60, timeout_s=60 against a silent server: hours without a bound."""
    with Misbehaving("silent") as hook:
        sink = AlertSink(
            AlertConfig(
                critical_url=hook.url(SECRET), retries=10, backoff_s=60, timeout_s=60,
                delivery_budget_s=1.5, dead_letter=str(tmp_path / "dl"),
            )
        )  # fmt: skip
        t0 = time.monotonic()
        d = sink.send(Alert("CRITICAL", "x"))
        elapsed = time.monotonic() - t0
    assert elapsed < 4, elapsed
    assert d.dead_lettered and d.attempts == 1
    # the attempt gets what is left of the budget: 1.5 s less a moment
    assert re.fullmatch(r"no complete answer within 1\.\d+ s; delivery deadline reached", d.error)
    assert json.loads((tmp_path / "dl").read_text())["attempts"] == 1
    with pytest.raises(InputError, match=r"\[alerts\] delivery_budget_s"):
        AlertConfig(delivery_budget_s=0)


@pytest.mark.parametrize("target", ["same-host", "other-path", "ftp"])
def test_a_redirect_is_a_failed_attempt_not_a_delivery(tmp_path, target):
    """urllib would re-send the POST as a GET without its body and call it delivered."""
    with Receiver() as rx:
        location = {
            "same-host": rx.url("/moved"),
            "other-path": f"http://localhost:{rx.server.server_address[1]}/elsewhere",
            "ftp": "ftp://127.0.0.1/x",
        }[target]
        with Misbehaving("redirect", location=location) as hook:
            sink = AlertSink(
                AlertConfig(
                    critical_url=hook.url(SECRET), retries=1, backoff_s=0.01,
                    dead_letter=str(tmp_path / "dl"),
                )
            )  # fmt: skip
            d = sink.send(Alert("CRITICAL", "x"))
    assert not d.delivered and d.dead_lettered and not d.passed
    assert d.attempts == 2 and hook.posts == 2
    assert d.error == "HTTP 302 (redirects are not followed)"
    assert rx.paths == []  # the redirect target never heard of it
    assert json.loads((tmp_path / "dl").read_text())["alert"]["text"] == "[CRITICAL] quantcli: x"


def test_an_unwritable_dead_letter_is_reported_not_raised(tmp_path, caplog):
    with Receiver(fail=10) as rx:
        cfg = AlertConfig(
            critical_url=rx.url(SECRET), retries=0, dead_letter="/proc/nope/dead.jsonl"
        )
        with caplog.at_level(logging.ERROR, logger="quantcli.alerts"):
            d = AlertSink(cfg).send(Alert("CRITICAL", "x"))
    assert not d.delivered and not d.dead_lettered and not d.passed
    assert d.error.startswith("HTTP 503; dead-letter write failed: ")
    assert "/proc/nope/dead.jsonl" in d.error and "lost" in d.message()
    assert "dead-letter write failed" in caplog.text
    with pytest.raises(InputError, match=r"^\[alerts\] dead_letter /proc/nope/dead.jsonl: "):
        cfg.check_dead_letter()
    with pytest.raises(InputError, match=r"is a directory"):
        AlertConfig(critical_url=rx.url(SECRET), dead_letter=str(tmp_path)).check_dead_letter()
    AlertConfig(dead_letter="/proc/nope/dead.jsonl").check_dead_letter()  # no route: unused


def test_an_unset_env_url_is_an_error_naming_key_and_variable(monkeypatch):
    monkeypatch.delenv("PAGER_WEBHOK", raising=False)
    with pytest.raises(InputError, match=r"\[alerts\] critical_url = env:PAGER_WEBHOK, but "):
        AlertConfig(critical_url="env:PAGER_WEBHOK")
    monkeypatch.setenv("PAGER_WEBHOK", "")
    with pytest.raises(InputError, match=r"\$PAGER_WEBHOK is not set \(or empty\)"):
        AlertConfig(warning_url="env:PAGER_WEBHOK")


@pytest.mark.parametrize(
    "url", ["http://[::1", "http://host:99999/x", "http:///no-host", "https://"]
)
def test_a_malformed_url_is_an_input_error_naming_the_key(url):
    with pytest.raises(InputError, match=r"^\[alerts\] critical_url must be an http\(s\) URL"):
        AlertConfig(critical_url=url)


def _critical_snapshot(tmp_path):
    snapshot = tmp_path / "metrics.json"
    snapshot.write_text(json.dumps({"requests": 1000, "errors": 50, "slow_requests": 0}))
    return snapshot


def _events():
    with monitoring_store() as store:
        return store.con.execute("SELECT action FROM monitor_guard_events").fetchall()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # MLflow/SQLAlchemy internals
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_guard_halts_and_records_before_a_trickling_webhook(
    qcli_home, tmp_path, qcli, register_model
):
    """The kill switch and its record come first; the webhook then gets timeout_s in all."""
    name = "slow_hook_model"
    register_model(name, **tiny(seed=1), verdicts={"parity": True, "scan": True})
    seen = {}

    def on_post():  # what on-call's webhook sees the moment the alert arrives
        seen["events"] = _events()
        seen["halted"] = read_state(ModelRegistry(), name).halt is not None

    with Misbehaving("trickle", on_post=on_post) as hook:
        cfg = tmp_path / "alerts.toml"
        cfg.write_text(
            f'[alerts]\ncritical_url = "{hook.url(SECRET)}"\nretries = 0\ntimeout_s = 1\n'
            f'dead_letter = "{tmp_path / "dl.jsonl"}"\n'
        )
        t0 = time.monotonic()
        run = qcli(
            "monitor", "guard", "--model", name, "--metrics", _critical_snapshot(tmp_path),
            "--config", cfg, "--json",
        )  # fmt: skip
        elapsed = time.monotonic() - t0
    assert run.code == 1, run.err
    assert seen == {"events": [("halt",)], "halted": True}
    r = run.json
    assert r["action"] == "halt" and r["halt"]["halted"] is True
    assert elapsed < 10, elapsed
    assert r["alerts"] == [
        {"severity": "CRITICAL", "route": redact_url(hook.url(SECRET)), "delivered": False,
         "attempts": 1, "dead_lettered": True, "error": "no complete answer within 1 s"},
    ]  # fmt: skip
    dead = json.loads((tmp_path / "dl.jsonl").read_text())
    assert dead["alert"]["quantcli"]["details"]["action"] == "halt"
    assert "secret" not in run.out + run.err


def test_guard_shares_one_delivery_budget_across_its_alerts(qcli_home, tmp_path):
    """A CRITICAL and a WARNING to a silent webhook: the second waits for no second budget."""
    snap = tmp_path / "m.json"
    snap.write_text(json.dumps({"requests": 1000, "errors": 50, "slow_requests": 100}))
    with Misbehaving("silent") as hook:
        sink = AlertSink(
            AlertConfig(
                critical_url=hook.url(SECRET), warning_url=hook.url(SECRET), retries=0,
                timeout_s=60, delivery_budget_s=1, dead_letter=str(tmp_path / "dl"),
            )
        )  # fmt: skip
        t0 = time.monotonic()
        r = run_guard(metrics=str(snap), alerts=sink)
        elapsed = time.monotonic() - t0
    assert elapsed < 4, elapsed
    assert [(d.severity, d.attempts, d.dead_lettered) for d in r.alerts] == [
        ("CRITICAL", 1, True),
        ("WARNING", 0, True),
    ]
    assert r.alerts[1].error == "delivery deadline reached"
    assert len((tmp_path / "dl").read_text().splitlines()) == 2  # nothing lost
    assert "2 alert(s) not delivered" in r.message()


@pytest.mark.parametrize(
    ("alerts_toml", "expected"),
    [
        ('critical_url = "env:PAGER_WEBHOK"', r"\[alerts\] critical_url = env:PAGER_WEBHOK"),
        (
            'critical_url = "http://127.0.0.1:9/x"\ndead_letter = "/proc/nope/dead.jsonl"',
            r"\[alerts\] dead_letter /proc/nope/dead.jsonl: cannot create its directory",
        ),
        ('critical_url = "http://[::1"', r"\[alerts\] critical_url must be an http\(s\) URL"),
    ],
)
def test_guard_bad_alerts_section_is_exit_2_before_anything_is_recorded(
    qcli_home, tmp_path, qcli, monkeypatch, alerts_toml, expected
):
    monkeypatch.delenv("PAGER_WEBHOK", raising=False)
    cfg = tmp_path / "alerts.toml"
    cfg.write_text(f"[alerts]\n{alerts_toml}\n")
    run = qcli("monitor", "guard", "--metrics", _critical_snapshot(tmp_path), "--config", cfg)
    assert run.code == 2, run.err
    assert re.search(expected, run.err), run.err
    assert "Traceback" not in run.err
    assert _events() == []


def test_live_shadow_checks_the_alerts_section_before_reading(qcli_home, tmp_path, monkeypatch):
    """Not after the comparison ran and was recorded (the alert is sent last)."""
    monkeypatch.delenv("PAGER_WEBHOK", raising=False)
    cfg = tmp_path / "alerts.toml"
    cfg.write_text('[alerts]\nwarning_url = "env:PAGER_WEBHOK"\n')
    with pytest.raises(InputError, match=r"^\[alerts\] warning_url = env:PAGER_WEBHOK"):
        run_live_shadow("m", workspace=Workspace.from_env(config=cfg))
