"""The service's Prometheus metrics: request counters and latency histograms, and the
predictor's and follower's counters read at scrape time (``GET /metrics``)."""

from __future__ import annotations

from typing import Any

# Buckets (seconds) sized for a 1-10 ms service.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0)


def service_metrics(predictor: Any, follower: Any = None):
    """A private Prometheus registry with the service's metrics (one per app, not global)."""
    from prometheus_client import CollectorRegistry, Counter, Histogram

    registry = CollectorRegistry(auto_describe=True)
    requests = Counter(
        "qcli_http_requests",
        "HTTP requests by endpoint and status code",
        ["endpoint", "status"],
        registry=registry,
    )
    latency = Histogram(
        "qcli_http_request_latency_seconds",
        "Request latency in seconds, by endpoint (measured inside the app)",
        ["endpoint"],
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    errors = Counter("qcli_http_errors", "Failed requests by kind", ["kind"], registry=registry)
    arm_requests = Counter(
        "qcli_arm_requests",
        "Answered /predict requests by the arm that served them",
        ["arm", "model_version"],
        registry=registry,
    )
    arm_latency = Histogram(
        "qcli_arm_latency_seconds",
        "/predict latency in seconds by arm (inside the app)",
        ["arm"],
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    registry.register(_ServingCollector(predictor, follower))
    return registry, requests, latency, errors, arm_requests, arm_latency


class _ServingCollector:
    """The service's counters and gauges read at scrape time from the predictor and follower."""

    def __init__(self, predictor: Any, follower: Any = None) -> None:
        self.predictor, self.follower = predictor, follower

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        predictor = self.predictor
        st = predictor.store.counters
        hits = CounterMetricFamily("qcli_online_hits", "Symbols served from the online store")
        hits.add_metric([], st.hits)
        yield hits
        fb = CounterMetricFamily(
            "qcli_online_fallbacks",
            "Symbols served from the offline store, by reason",
            labels=["reason"],
        )
        fb.add_metric(["missing"], st.fallback_missing)
        fb.add_metric(["stale"], st.fallback_stale)
        yield fb
        preds = CounterMetricFamily("qcli_predictions", "Predictions served (symbols)")
        preds.add_metric([], predictor.stats.symbols)
        yield preds
        refusals = CounterMetricFamily(
            "qcli_refusals", "Requests refused while halted or unavailable (audited)"
        )
        refusals.add_metric([], predictor.stats.refusals)
        yield refusals
        swaps = CounterMetricFamily("qcli_swaps", "Deployments swapped in while serving")
        swaps.add_metric([], predictor.swaps)
        yield swaps
        shadow = CounterMetricFamily(
            "qcli_shadow_symbols",
            "Symbols scored by the shadow model, by outcome",
            labels=["outcome"],
        )
        shadow.add_metric(["scored"], predictor.shadow.scored)
        shadow.add_metric(["dropped"], predictor.shadow.dropped)
        shadow.add_metric(["failed"], predictor.shadow.failed)
        yield shadow
        yield from self._deployment(GaugeMetricFamily)
        if self.follower is not None:
            polls = CounterMetricFamily("qcli_registry_polls", "Registry reads by the service")
            polls.add_metric([], self.follower.polls)
            yield polls

    def _deployment(self, gauge: Any):
        """Halt flag, candidate share and one info sample per served arm."""
        d = self.predictor.deployment
        halted = gauge("qcli_halted", "1 while the model is halted (kill switch)")
        halted.add_metric([], 1.0 if d.halted is not None else 0.0)
        yield halted
        share = gauge("qcli_candidate_share", "Traffic share of the candidate")
        share.add_metric([], d.share if d.candidate is not None else 0.0)
        yield share
        info = gauge(
            "qcli_model_info",
            "The served models (value 1), one per arm",
            labels=["model_name", "model_version", "alias", "onnx_sha256", "arm"],
        )
        for arm in (d.production, d.candidate, d.shadow):
            if arm is None:
                continue
            t = arm.tags
            labels = [str(t["model_name"]), str(t["model_version"]), str(self.predictor.alias)]
            info.add_metric([*labels, str(t["onnx_model"]["sha256"]), arm.role], 1.0)
        yield info


__all__ = ["LATENCY_BUCKETS", "service_metrics"]
