"""Alert delivery: guard findings and service events to on-call, by severity.

Routing (config section ``[alerts]``): a CRITICAL alert is posted to ``critical_url`` (the pager),
WARNING to ``warning_url`` (a chat channel), INFO only to the log (and to ``info_url`` if set).
A URL may be written ``env:NAME`` to read it from the environment variable ``NAME``, so the
secret in a webhook URL need not sit in the config file.

The body is Slack-compatible JSON: ``{"text": "...", "attachments": [{"color", "fields"}]}``
(the ``text`` line alone is what a Slack incoming webhook needs), plus the machine-readable
``quantcli`` object. Delivery retries ``retries`` times with exponential backoff
(``backoff_s``, 2x ``backoff_s``, ...); an alert that still fails is appended to the dead-letter
file (``dead_letter``, default ``$QCLI_HOME/alerts/dead_letter.jsonl``) so nothing is lost.
A webhook URL is never logged or written whole: only its scheme and host (:func:`redact_url`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from quantcli.config import DEFAULTS, qcli_home
from quantcli.errors import InputError
from quantcli.results import Result

log = logging.getLogger("quantcli.alerts")
SEVERITIES = ("CRITICAL", "WARNING", "INFO")
_COLORS = {"CRITICAL": "#d00000", "WARNING": "#f2c744", "INFO": "#439fe0"}
_A = DEFAULTS["alerts"]


def redact_url(url: str) -> str:
    """``scheme://host[:port]/...``: the path, query and credentials of a webhook are secret."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid url>"
    return f"{parts.scheme}://{host}{port}/..."


@dataclass(frozen=True)
class AlertConfig:
    """The ``[alerts]`` section. Empty URLs disable that route.

    Raises
    ------
    InputError
        A bad value; the message names the ``[alerts]`` key (never the URL itself).
    """

    critical_url: str = _A["critical_url"]
    warning_url: str = _A["warning_url"]
    info_url: str = _A["info_url"]
    retries: int = _A["retries"]
    backoff_s: float = _A["backoff_s"]
    timeout_s: float = _A["timeout_s"]
    dead_letter: str = _A["dead_letter"]

    def __post_init__(self) -> None:
        for key in ("critical_url", "warning_url", "info_url"):
            url = self.resolved(key)
            if url and urlsplit(url).scheme not in ("http", "https"):
                raise InputError(
                    f"[alerts] {key} must be an http(s) URL or env:NAME, got {redact_url(url)}"
                )
        if isinstance(self.retries, bool) or not isinstance(self.retries, int):
            raise InputError(f"[alerts] retries must be a whole number, got {self.retries!r}")
        if not 0 <= self.retries <= 10:
            raise InputError(f"[alerts] retries must be in [0, 10], got {self.retries}")
        for key, hi in (("backoff_s", 60.0), ("timeout_s", 60.0)):
            value = getattr(self, key)
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            if not ok or not math.isfinite(value) or not 0 < value <= hi:
                raise InputError(f"[alerts] {key} must be seconds in (0, {hi:g}], got {value!r}")

    @classmethod
    def from_config(cls, cfg: dict[str, dict[str, Any]]) -> AlertConfig:
        return cls(**cfg["alerts"])

    def resolved(self, key: str) -> str:
        """The URL of ``key``, ``env:NAME`` read from the environment ("" when unset)."""
        value = getattr(self, key)
        if value.startswith("env:"):
            name = value[4:]
            if not name.isidentifier():
                raise InputError(f"[alerts] {key}: env:NAME needs a variable name, got {value!r}")
            return os.environ.get(name, "")
        return value

    def url_for(self, severity: str) -> str:
        return self.resolved(f"{severity.lower()}_url")

    def dead_letter_path(self) -> Path:
        if self.dead_letter:
            return Path(self.dead_letter)
        return qcli_home() / "alerts" / "dead_letter.jsonl"


@dataclass(frozen=True)
class Alert:
    """One alert: ``severity`` (CRITICAL, WARNING, INFO), a one-line ``title`` and details."""

    severity: str
    title: str
    source: str = "quantcli"
    details: dict[str, Any] = field(default_factory=dict)
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise InputError(f"alert severity must be one of {SEVERITIES}, got {self.severity!r}")

    def payload(self) -> dict[str, Any]:
        """The Slack-compatible JSON body."""
        fields = [
            {"title": str(k), "value": str(v)[:500], "short": len(str(v)) < 40}
            for k, v in self.details.items()
        ]
        return {
            "text": f"[{self.severity}] {self.source}: {self.title}",
            "attachments": [{"color": _COLORS[self.severity], "fields": fields, "ts": self.at}],
            "quantcli": {
                "severity": self.severity,
                "source": self.source,
                "title": self.title,
                "at": self.at,
                "details": self.details,
            },
        }


@dataclass(frozen=True, kw_only=True)
class Delivery(Result):
    """What happened to one alert: ``delivered`` after ``attempts``, or ``dead_lettered``
    (``route`` None: no webhook for its severity, logged only). ``passed`` is false when the
    alert was dead-lettered; ``reasons`` then holds the last error."""

    severity: str
    route: str | None
    delivered: bool
    attempts: int
    dead_lettered: bool = False
    error: str | None = None

    def message(self) -> str:
        return f"{self.severity} alert to {self.route} dead-lettered after {self.attempts} attempts"

    def to_dict(self) -> dict[str, Any]:
        keys = ("severity", "route", "delivered", "attempts", "dead_lettered", "error")
        return {k: getattr(self, k) for k in keys}


class AlertSink:
    """Delivers :class:`Alert` s per :class:`AlertConfig` (thread-safe; see the module doc)."""

    def __init__(self, config: AlertConfig | None = None) -> None:
        self.config = config or AlertConfig()
        self._lock = threading.Lock()

    def send(self, alert: Alert) -> Delivery:
        """Log ``alert`` and post it to its route, retrying; dead-letter it if that fails."""
        level = {"CRITICAL": logging.CRITICAL, "WARNING": logging.WARNING}.get(alert.severity)
        log.log(level or logging.INFO, "%s", alert.payload()["text"])
        url = self.config.url_for(alert.severity)
        if not url:
            return Delivery(
                passed=True, severity=alert.severity, route=None, delivered=False, attempts=0
            )
        route = redact_url(url)
        body = json.dumps(alert.payload(), default=str).encode()
        error, attempts = None, 0
        for attempt in range(self.config.retries + 1):
            attempts = attempt + 1
            error = self._post(url, body)
            if error is None:
                return Delivery(
                    passed=True,
                    severity=alert.severity,
                    route=route,
                    delivered=True,
                    attempts=attempts,
                )
            log.warning("alert to %s failed (attempt %d): %s", route, attempts, error)
            if attempt < self.config.retries:
                time.sleep(self.config.backoff_s * 2**attempt)
        self._dead_letter(alert, route, attempts, error)
        return Delivery(
            passed=False,
            reasons=[error or "undeliverable"],
            severity=alert.severity,
            route=route,
            delivered=False,
            attempts=attempts,
            dead_lettered=True,
            error=error,
        )

    def send_in_background(self, alert: Alert) -> threading.Thread:
        """:meth:`send` on a daemon thread (a service must not wait on a webhook)."""
        thread = threading.Thread(target=self.send, args=(alert,), name="qcli-alert", daemon=True)
        thread.start()
        return thread

    def _post(self, url: str, body: bytes) -> str | None:
        """``None`` on a 2xx answer, else why it failed (never containing the URL)."""
        req = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=self.config.timeout_s) as resp:
                resp.read(1024)
                return None if 200 <= resp.status < 300 else f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            # URLError's text can quote the request; keep only the reason's class and errno
            reason = getattr(exc, "reason", exc)
            return f"{type(reason).__name__}: {getattr(reason, 'strerror', None) or 'failed'}"

    def _dead_letter(self, alert: Alert, route: str, attempts: int, error: str | None) -> None:
        path = self.config.dead_letter_path()
        record = {
            "failed_at": datetime.now(UTC).isoformat(),
            "route": route,
            "attempts": attempts,
            "error": error,
            "alert": alert.payload(),
        }
        line = json.dumps(record, default=str, sort_keys=True) + "\n"
        with self._lock:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())


def finding_alerts(findings: list[Any], *, source: str, model: str | None) -> list[Alert]:
    """One alert per CRITICAL or WARNING guard finding, and one INFO summary otherwise."""
    out = [
        Alert(
            f.severity,
            f"{f.check}: {f.message}",
            source=source,
            details={"model": model, "check": f.check, "value": f.value, "threshold": f.threshold},
        )
        for f in findings
        if f.severity in ("CRITICAL", "WARNING")
    ]
    if not out:
        out.append(
            Alert("INFO", "all guard checks passed", source=source, details={"model": model})
        )
    return out
