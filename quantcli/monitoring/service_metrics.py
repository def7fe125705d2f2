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
"""

from __future__ import annotations

import json
import math
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from quantcli.errors import InputError

ENDPOINT = "/predict"
SLOW_SECONDS = 0.5

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
        if labels.get("endpoint") != ENDPOINT:
            continue
        try:
            value = float(m["value"])
        except ValueError:
            continue
        name = m["name"]
        if name == "qcli_http_requests_total":
            requests += value
            if labels.get("status", "").startswith("5"):
                errors += value
        elif name == "qcli_http_request_latency_seconds_bucket":
            le = labels.get("le")
            if le is not None and le != "+Inf" and math.isclose(float(le), SLOW_SECONDS):
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
    return ServiceHealth(
        int(requests), int(errors), int(slow), source, cumulative=True,
        window="since service start",
    )  # fmt: skip


def read_service_health(spec: str, token: str | None = None, timeout: float = 5.0) -> ServiceHealth:
    """Service health from a URL (``http://host:port/metrics``) or a snapshot file."""
    if spec.startswith(("http://", "https://")):
        token = token if token is not None else os.environ.get("QCLI_API_TOKEN")
        req = urllib.request.Request(spec)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                text = resp.read().decode("utf-8")
        except (urllib.error.URLError, OSError) as exc:
            raise InputError(f"--metrics {spec}: cannot read the service metrics ({exc})") from None
        return parse_prometheus(text, spec)
    path = Path(spec)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"--metrics {spec}: file not found") from None
    if path.suffix.lower() == ".json":
        try:
            d = json.loads(text)
            return ServiceHealth(
                int(d["requests"]), int(d["errors"]), int(d.get("slow_requests", 0)), str(path)
            )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise InputError(
                f"--metrics {spec}: expected JSON with requests, errors, slow_requests ({exc})"
            ) from None
    return parse_prometheus(text, str(path))
