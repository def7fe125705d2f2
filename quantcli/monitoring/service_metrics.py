"""The prediction service's health, read from its ``/metrics`` (Prometheus text) or a snapshot.

quantcli's service (:mod:`quantcli.serving.http`) exposes ``qcli_http_requests_total{endpoint,
status}`` and the histogram ``qcli_http_request_latency_seconds{endpoint}`` with a 0.5 s bucket.
From the ``/predict`` series:

* **error rate** = requests with a 5xx status / all requests (4xx are the client's fault);
* **slow share** = share of requests slower than 500 ms = ``1 - bucket(le=0.5) / count``.

A snapshot file is either that Prometheus text or JSON ``{"requests": N, "errors": E,
"slow_requests": S}`` (counts over the window the caller chose).

Prometheus counters are cumulative since the service started, so a rate computed from them
alone would dilute a fresh error spike with days of healthy traffic. The guard therefore
evaluates the *difference* to the counts it read on its previous run from the same source
(:meth:`ServiceHealth.since`), and falls back to the cumulative counts after a service restart
(a counter went down) or on the first run. JSON snapshots are taken as given.

Every count read must be a finite whole number >= 0 (and errors and slow requests at most the
requests): a NaN or a negative count would otherwise read as a healthy rate. A URL is read
within ``timeout`` seconds in all, at most :data:`MAX_METRICS_BYTES`, and never through a
redirect: the bearer token would travel to whatever host the redirect names.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from quantcli.errors import InputError
from quantcli.monitoring._http import HttpFailure, http_request

ENDPOINT = "/predict"
SLOW_SECONDS = 0.5
#: Largest /metrics answer read: quantcli's is a few kB; more is not its service.
MAX_METRICS_BYTES = 8 * 1024 * 1024
_SERIES = (
    "qcli_http_requests_total",
    "qcli_http_request_latency_seconds_bucket",
    "qcli_http_request_latency_seconds_count",
)

_SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)"
)
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class ServiceHealth:
    """Request counts of the prediction endpoint and the two rates the guard checks."""

    requests: int
    errors: int
    slow_requests: int
    source: str
    cumulative: bool = False  # Prometheus counters: totals since the service started
    window: str = "as given"

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def slow_share(self) -> float | None:
        return self.slow_requests / self.requests if self.requests else None

    def since(self, previous: dict[str, Any] | None, previous_at: str | None) -> ServiceHealth:
        """The counts accrued since ``previous`` (a :meth:`to_dict` of the same source), or
        ``self`` when there is none, the source differs, or a counter went down (restart)."""
        if not self.cumulative or not previous or previous.get("source") != self.source:
            return self
        d_req = self.requests - int(previous["requests"])
        d_err = self.errors - int(previous["errors"])
        d_slow = self.slow_requests - int(previous["slow_requests"])
        if min(d_req, d_err, d_slow) < 0:
            return replace(self, window="since service start (counters reset)")
        return replace(
            self, requests=d_req, errors=d_err, slow_requests=d_slow,
            window=f"since the previous guard run at {previous_at}",
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "window": self.window,
            "requests": self.requests,
            "errors": self.errors,
            "slow_requests": self.slow_requests,
            "error_rate": self.error_rate,
            "slow_share": self.slow_share,
        }


def parse_prometheus(text: str, source: str = "metrics") -> ServiceHealth:
    """Read the ``/predict`` request, error and latency counts from Prometheus text."""
    requests = errors = 0.0
    le_half = None
    count = None
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        labels = dict(_LABEL.findall(m["labels"] or ""))
        name = m["name"]
        if labels.get("endpoint") != ENDPOINT or name not in _SERIES:
            continue
        try:
            value = float(m["value"])
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0:
            raise InputError(
                f"{source}: {name}{{{m['labels']}}} is {m['value']}: a count must be a finite "
                "number >= 0"
            )
        if name == "qcli_http_requests_total":
            requests += value
            if labels.get("status", "").startswith("5"):
                errors += value
        elif name == "qcli_http_request_latency_seconds_bucket":
            if _is_slow_bound(labels.get("le")):
                le_half = value
        elif name == "qcli_http_request_latency_seconds_count":
            count = value
    if count is None or le_half is None:
        slow = 0.0
        if requests:
            raise InputError(
                f"{source}: no qcli_http_request_latency_seconds histogram with a 0.5 s bucket "
                f"for {ENDPOINT}",
                hint="point --metrics at quantcli's prediction service (/metrics)",
            )
    else:
        slow = count - le_half
        if slow < 0:
            raise InputError(
                f"{source}: the {ENDPOINT} latency histogram counts {count:g} requests but "
                f"{le_half:g} within {SLOW_SECONDS} s (slow requests would be negative)"
            )
    return ServiceHealth(
        int(requests), int(errors), int(slow), source, cumulative=True,
        window="since service start",
    )  # fmt: skip


def _is_slow_bound(le: str | None) -> bool:
    try:
        return le is not None and math.isclose(float(le), SLOW_SECONDS)
    except ValueError:
        return False


def without_secrets(url: str) -> str:
    """``url`` as messages and results show it: no user, password or query (where a token may
    ride), the scheme, host, port and path kept so the operator can tell which service."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid url>"
    return f"{parts.scheme}://{parts.hostname or '?'}{port}{parts.path}"


def _fetch(url: str, token: str | None, timeout: float, shown: str) -> str:
    """The text of ``url`` (see the module doc for the bounds); the token is never shown, and
    messages name the URL as ``shown``."""
    token = token if token is not None else os.environ.get("QCLI_API_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        answer = http_request(url, headers=headers, timeout=timeout, max_bytes=MAX_METRICS_BYTES)
        return answer.body.decode("utf-8")
    except (HttpFailure, UnicodeDecodeError) as exc:
        raise InputError(f"--metrics {shown}: cannot read the service metrics ({exc})") from None


def _json_counts(text: str, spec: str) -> ServiceHealth:
    """A JSON snapshot ``{"requests", "errors", "slow_requests"}``, each count checked."""
    try:
        d = json.loads(text)
    except json.JSONDecodeError as exc:
        d = exc
    if not isinstance(d, dict) or "requests" not in d or "errors" not in d:
        raise InputError(
            f"--metrics {spec}: expected JSON with requests, errors, slow_requests"
            + (f" ({d})" if isinstance(d, json.JSONDecodeError) else "")
        )
    counts = {}
    for key in ("requests", "errors", "slow_requests"):
        v = d.get(key, 0)
        whole = isinstance(v, int | float) and not isinstance(v, bool)
        if not whole or not math.isfinite(v) or v < 0 or v != int(v):
            raise InputError(f"--metrics {spec}: {key} must be a whole number >= 0, got {v!r}")
        counts[key] = int(v)
    for key in ("errors", "slow_requests"):
        if counts[key] > counts["requests"]:
            raise InputError(
                f"--metrics {spec}: {key} ({counts[key]}) exceeds requests ({counts['requests']})"
            )
    return ServiceHealth(counts["requests"], counts["errors"], counts["slow_requests"], spec)


def read_service_health(spec: str, token: str | None = None, timeout: float = 5.0) -> ServiceHealth:
    """Service health from a URL (``http://host:port/metrics``) or a snapshot file."""
    if spec.startswith(("http://", "https://")):
        shown = without_secrets(spec)
        if "@" in urlsplit(spec).netloc:
            raise InputError(
                f"--metrics {shown}: credentials in the URL are not sent (nor shown)",
                hint="give the service's bearer token in QCLI_API_TOKEN",
            )
        return parse_prometheus(_fetch(spec, token, timeout, shown), shown)
    path = Path(spec)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"--metrics {spec}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise InputError(f"--metrics {spec}: cannot read it ({why})") from None
    if path.suffix.lower() == ".json":
        return _json_counts(text, str(path))
    return parse_prometheus(text, str(path))
