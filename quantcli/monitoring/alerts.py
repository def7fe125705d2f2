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

Each attempt is bounded by ``timeout_s`` in all (not per socket read), and one alert's whole
delivery, retries and backoff included, by ``delivery_budget_s``; a caller delivering several
alerts passes one shared ``deadline``. Redirects are not followed: a 3xx is a failed attempt.
A dead-letter file that cannot be written is reported in the :class:`Delivery`, never raised:
the caller (the guard) has already acted and must still return its result.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from quantcli.config import DEFAULTS, qcli_home
from quantcli.errors import InputError
from quantcli.monitoring._http import HttpFailure, http_request
from quantcli.results import Result

log = logging.getLogger("quantcli.alerts")
SEVERITIES = ("CRITICAL", "WARNING", "INFO")
_COLORS = {"CRITICAL": "#d00000", "WARNING": "#f2c744", "INFO": "#439fe0"}
_A = DEFAULTS["alerts"]
#: Longest a single alert's delivery may take, retries and backoff included: the documented
#: maxima of retries, backoff_s and timeout_s would otherwise add up to hours.
DELIVERY_BUDGET_S = 120.0
_URL_KEYS = ("critical_url", "warning_url", "info_url")


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
    delivery_budget_s: float = DELIVERY_BUDGET_S

    def __post_init__(self) -> None:
        for key in _URL_KEYS:
            url = self.resolved(key)
            if url and not _valid_http_url(url):
                raise InputError(
                    f"[alerts] {key} must be an http(s) URL with a host, or env:NAME, got "
                    f"{redact_url(url)}"
                )
        if isinstance(self.retries, bool) or not isinstance(self.retries, int):
            raise InputError(f"[alerts] retries must be a whole number, got {self.retries!r}")
        if not 0 <= self.retries <= 10:
            raise InputError(f"[alerts] retries must be in [0, 10], got {self.retries}")
        for key, hi in (("backoff_s", 60.0), ("timeout_s", 60.0), ("delivery_budget_s", 3600.0)):
            value = getattr(self, key)
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            if not ok or not math.isfinite(value) or not 0 < value <= hi:
                raise InputError(f"[alerts] {key} must be seconds in (0, {hi:g}], got {value!r}")

    @classmethod
    def from_config(cls, cfg: dict[str, dict[str, Any]]) -> AlertConfig:
        return cls(**cfg["alerts"])

    def resolved(self, key: str) -> str:
        """The URL of ``key`` ("" when the route is disabled), ``env:NAME`` read from the
        environment.

        Raises
        ------
        InputError
            ``env:NAME`` and ``$NAME`` is unset or empty: a typo in the name must not silently
            disable the pager.
        """
        value = getattr(self, key)
        if value.startswith("env:"):
            name = value[4:]
            if not name.isidentifier():
                raise InputError(f"[alerts] {key}: env:NAME needs a variable name, got {value!r}")
            url = os.environ.get(name, "")
            if not url:
                raise InputError(
                    f"[alerts] {key} = env:{name}, but ${name} is not set (or empty)",
                    hint=f'export {name}=<webhook URL>, or set {key} = "" to disable the route',
                )
            return url
        return value

    def routes(self) -> list[str]:
        """The ``[alerts]`` keys whose route is enabled."""
        return [key for key in _URL_KEYS if self.resolved(key)]

    def check_dead_letter(self) -> Path:
        """Create the dead-letter file's directory and check it is writable (when a webhook
        route is enabled; otherwise nothing is ever dead-lettered). Returns the path.

        Raises
        ------
        InputError
            The path names a directory, or its directory cannot be created or written.
        """
        path = self.dead_letter_path()
        if not self.routes():
            return path
        where = f"[alerts] dead_letter {path}"
        if path.is_dir():
            raise InputError(f"{where}: is a directory")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(
                f"{where}: cannot create its directory ({exc.strerror or type(exc).__name__})"
            ) from None
        if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
            raise InputError(f"{where}: not writable")
        return path

    def url_for(self, severity: str) -> str:
        return self.resolved(f"{severity.lower()}_url")

    def dead_letter_path(self) -> Path:
        if self.dead_letter:
            return Path(self.dead_letter)
        return qcli_home() / "alerts" / "dead_letter.jsonl"


def _valid_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port out of range
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


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
    alert was not delivered to its route; ``reasons`` then holds the last error (which also
    says when the dead-letter file could not be written: ``dead_lettered`` is then false)."""

    severity: str
    route: str | None
    delivered: bool
    attempts: int
    dead_lettered: bool = False
    error: str | None = None

    def message(self) -> str:
        fate = "dead-lettered" if self.dead_lettered else "lost (dead letter not written)"
        return f"{self.severity} alert to {self.route} {fate} after {self.attempts} attempts"

    def to_dict(self) -> dict[str, Any]:
        keys = ("severity", "route", "delivered", "attempts", "dead_lettered", "error")
        return {k: getattr(self, k) for k in keys}


class AlertSink:
    """Delivers :class:`Alert` s per :class:`AlertConfig` (thread-safe; see the module doc)."""

    def __init__(self, config: AlertConfig | None = None) -> None:
        self.config = config or AlertConfig()
        self._lock = threading.Lock()

    def send(self, alert: Alert, *, deadline: float | None = None) -> Delivery:
        """Log ``alert`` and post it to its route, retrying; dead-letter it if that fails.

        The delivery ends by ``delivery_budget_s`` from now, or by ``deadline`` (a
        :func:`time.monotonic` value) if earlier; an alert not delivered by then is
        dead-lettered.
        """
        stop = time.monotonic() + self.config.delivery_budget_s
        if deadline is not None:
            stop = min(stop, deadline)
        level = {"CRITICAL": logging.CRITICAL, "WARNING": logging.WARNING}.get(alert.severity)
        log.log(level or logging.INFO, "%s", alert.payload()["text"])
        url = self.config.url_for(alert.severity)
        if not url:
            return Delivery(
                passed=True, severity=alert.severity, route=None, delivered=False, attempts=0
            )
        route = redact_url(url)
        body = json.dumps(alert.payload(), default=str).encode()
        error: str | None = None
        attempts = 0
        for attempt in range(self.config.retries + 1):
            left = stop - time.monotonic()
            if left <= 0:
                error = _with(error, "delivery deadline reached")
                break
            attempts = attempt + 1
            error = self._post(url, body, min(self.config.timeout_s, left))
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
                pause = self.config.backoff_s * 2**attempt
                if time.monotonic() + pause >= stop:
                    error = _with(error, "delivery deadline reached")
                    break
                time.sleep(pause)
        written = self._dead_letter(alert, route, attempts, error)
        if written is not None:
            error = _with(error, f"dead-letter write failed: {written}")
        return Delivery(
            passed=False,
            reasons=[error or "undeliverable"],
            severity=alert.severity,
            route=route,
            delivered=False,
            attempts=attempts,
            dead_lettered=written is None,
            error=error,
        )

    def send_in_background(self, alert: Alert) -> threading.Thread:
        """:meth:`send` on a daemon thread (a service must not wait on a webhook)."""
        thread = threading.Thread(target=self.send, args=(alert,), name="qcli-alert", daemon=True)
        thread.start()
        return thread

    def _post(self, url: str, body: bytes, timeout: float) -> str | None:
        """``None`` on a 2xx answer within ``timeout`` seconds in all, else why it failed
        (never containing the URL; a redirect is a failure)."""
        try:
            http_request(
                url,
                data=body,
                method="POST",
                headers={"Content-Type": "application/json"},
                timeout=timeout,
                max_bytes=1024,
                refuse_larger=False,
            )
        except HttpFailure as exc:
            return str(exc)
        return None

    def _dead_letter(
        self, alert: Alert, route: str, attempts: int, error: str | None
    ) -> str | None:
        """Append the alert to the dead-letter file; ``None``, or why it could not be written
        (logged, not raised: see the module doc)."""
        path = self.config.dead_letter_path()
        record = {
            "failed_at": datetime.now(UTC).isoformat(),
            "route": route,
            "attempts": attempts,
            "error": error,
            "alert": alert.payload(),
        }
        line = json.dumps(record, default=str, sort_keys=True) + "\n"
        try:
            with self._lock:
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(path, "a", encoding="utf-8") as fh:
                    fh.write(line)
                    fh.flush()
                    os.fsync(fh.fileno())
        except OSError as exc:
            why = f"{type(exc).__name__}: {exc.strerror or 'failed'} ({path})"
            log.error("alert to %s lost: dead-letter write failed: %s", route, why)
            return why
        return None


def _with(error: str | None, more: str) -> str:
    return f"{error}; {more}" if error else more


def finding_alerts(
    findings: list[Any], *, source: str, model: str | None, action: str | None = None
) -> list[Alert]:
    """One alert per CRITICAL or WARNING guard finding, and one INFO summary otherwise;
    ``action`` (what the guard already did: halt, rollback, ...) rides on the CRITICAL ones."""
    out = [
        Alert(
            f.severity,
            f"{f.check}: {f.message}",
            source=source,
            details={
                "model": model,
                "check": f.check,
                "value": f.value,
                "threshold": f.threshold,
                **({"action": action} if action and f.severity == "CRITICAL" else {}),
            },
        )
        for f in findings
        if f.severity in ("CRITICAL", "WARNING")
    ]
    if not out:
        out.append(
            Alert("INFO", "all guard checks passed", source=source, details={"model": model})
        )
    return out
