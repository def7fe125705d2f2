"""The prediction service: a FastAPI app over :class:`quantcli.serving.predict.Predictor`.

Endpoints
---------
``POST /predict``       body ``{"symbols": ["SPY", "QQQ"], "key": "optional request key"}`` ->
                        per symbol the prediction, the arm that served it (``production`` or
                        ``candidate``) and its audit tags (:mod:`quantcli.serving.predict`);
                        every prediction is in the audit ledger before the response is sent.
                        ``key`` decides the arm during a canary (same key, same arm).
``GET /health``         liveness, ``status`` (``ok``, ``halted`` or ``unavailable``) and the
                        served deployment (never requires a token: probes carry none).
``GET /metrics``        Prometheus text: requests by endpoint and status (every response, 5xx
                        included), latency, errors by kind, predictions and latency per arm,
                        swaps, refusals, shadow scoring, online hits and fallbacks, model info.
``POST /admin/reload``  re-read the registry now and swap in what changed (token
                        ``QCLI_ADMIN_TOKEN``, else ``QCLI_API_TOKEN``; disabled without one).

Errors are JSON ``{"error": "..."}``, never a traceback: 400 malformed JSON (nesting too deep
included) or a bad ``Content-Length``, 401 missing/wrong bearer token (whatever its bytes; only
when ``QCLI_API_TOKEN`` is set), 404 unknown symbol or path, 405 wrong method, 413 a body over
``max_body_bytes`` (refused while reading, before it is buffered), 415 a ``Content-Type``
other than ``application/json`` (a browser form cannot post predictions), 422 JSON that is not
a valid request (no ``symbols``, empty list, too many symbols, a bad ticker, features not yet
defined). 503 while the model is halted (the reason in the body) or the audit ledger is
broken, or when the offline fallback waited too long for another process's write lock.
500 is reserved for server faults (logged, counted).

Bodies over 64 KiB are parsed on a worker thread, so a large body does not hold the event
loop while other clients wait.
"""

# No ``from __future__ import annotations`` here: FastAPI must see the real ``Request`` class in
# the handlers' annotations, and it is imported inside create_app (kept off the CLI start-up path).
import gc
import hmac
import json
import logging
import os
import time
from contextlib import asynccontextmanager
from typing import Any

from quantcli.audit import LedgerBrokenError
from quantcli.errors import InputError, NotFoundError, QuantCliError, StoreBusyError
from quantcli.serving.predict import ServiceHalted

TOKEN_ENV = "QCLI_API_TOKEN"
ADMIN_TOKEN_ENV = "QCLI_ADMIN_TOKEN"
MAX_BODY_BYTES = 1_000_000
# Larger bodies are parsed on a worker thread (a 1 MB JSON list takes milliseconds to parse).
INLINE_PARSE_BYTES = 64 * 1024
MAX_KEY_CHARS = 256
# Buckets (seconds) sized for a 1-10 ms service.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0)
log = logging.getLogger("quantcli.serving")


class BadRequest(Exception):
    """A request refused with ``status`` (4xx), an error ``kind`` (metrics) and a message."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


def parse_predict_body(raw: bytes) -> tuple[Any, str | None]:
    """``(symbols, key)`` of a ``/predict`` body, or :class:`BadRequest` (400/422)."""
    try:
        body = json.loads(raw)
    except RecursionError:
        raise BadRequest(400, "malformed_json", "request body nests too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(400, "malformed_json", f"request body is not JSON: {exc}") from None
    if not isinstance(body, dict) or "symbols" not in body:
        raise BadRequest(422, "bad_request", 'body must be {"symbols": ["TICKER", ...]}')
    extra = sorted(set(body) - {"symbols", "key"})
    if extra:
        shown = ", ".join(repr(k[:40]) for k in extra[:5])
        raise BadRequest(422, "bad_request", f"unknown field(s) {shown}: use symbols and key")
    key = body.get("key")
    if key is not None and (not isinstance(key, str) or not 0 < len(key) <= MAX_KEY_CHARS):
        raise BadRequest(
            422, "bad_request", f"`key` must be a string of 1-{MAX_KEY_CHARS} characters"
        )
    return body["symbols"], key


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json"


def _metrics(predictor: Any, follower: Any = None):
    """A private Prometheus registry with the service's metrics (one per app, not global)."""
    from prometheus_client import CollectorRegistry, Counter, Histogram
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

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

    class _ServingCollector:
        def collect(self):
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
            d = predictor.deployment
            halted = GaugeMetricFamily("qcli_halted", "1 while the model is halted (kill switch)")
            halted.add_metric([], 1.0 if d.halted is not None else 0.0)
            yield halted
            share = GaugeMetricFamily("qcli_candidate_share", "Traffic share of the candidate")
            share.add_metric([], d.share if d.candidate is not None else 0.0)
            yield share
            info = GaugeMetricFamily(
                "qcli_model_info",
                "The served models (value 1), one per arm",
                labels=["model_name", "model_version", "alias", "onnx_sha256", "arm"],
            )
            for arm in (d.production, d.candidate, d.shadow):
                if arm is None:
                    continue
                t = arm.tags
                info.add_metric(
                    [
                        str(t["model_name"]),
                        str(t["model_version"]),
                        str(predictor.alias),
                        str(t["onnx_model"]["sha256"]),
                        arm.role,
                    ],
                    1.0,
                )
            yield info
            if follower is not None:
                polls = CounterMetricFamily("qcli_registry_polls", "Registry reads by the service")
                polls.add_metric([], follower.polls)
                yield polls

    registry.register(_ServingCollector())
    return registry, requests, latency, errors, arm_requests, arm_latency


def create_app(
    predictor: Any,
    *,
    api_token: str | None = None,
    admin_token: str | None = None,
    follower: Any = None,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> Any:
    """The FastAPI app serving ``predictor``.

    Parameters
    ----------
    predictor
        A :class:`quantcli.serving.predict.Predictor`; closed (ledger fsynced) at shutdown.
    api_token
        Bearer token required on ``/predict`` and ``/metrics``; default ``$QCLI_API_TOKEN``
        (unset or empty: no authentication).
    admin_token
        Bearer token of ``/admin/reload``; default ``$QCLI_ADMIN_TOKEN``, else ``api_token``.
        Without either the endpoint answers 403.
    follower
        A :class:`quantcli.serving.follow.RegistryFollower`, started and stopped with the app.
    max_body_bytes
        Largest accepted ``/predict`` body; larger ones get 413 as soon as they pass the limit.
    """
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.requests import ClientDisconnect

    class AsciiJSON(JSONResponse):
        """Errors and admin answers as ASCII JSON: text echoed from a request (a lone surrogate,
        say) can never make encoding the answer fail."""

        def render(self, content: Any) -> bytes:
            return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode()

    token = api_token if api_token is not None else os.environ.get(TOKEN_ENV) or None
    admin = admin_token if admin_token is not None else os.environ.get(ADMIN_TOKEN_ENV) or None
    admin = admin or token
    # compared as bytes: a header is latin-1 text, a token may be any UTF-8 text
    token_b = token.encode("utf-8") if token else None
    admin_b = admin.encode("utf-8") if admin else None
    registry, requests, latency, errors, arm_requests, arm_latency = _metrics(predictor, follower)

    @asynccontextmanager
    async def lifespan(_app):
        if follower is not None:
            follower.start()
        yield
        if follower is not None:
            follower.stop()
        predictor.close()  # fsync the ledger on a clean shutdown

    app = FastAPI(
        title="quantcli prediction service",
        version="1",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    # the hot path's metric children, resolved once (labels() takes a lock and builds a key)
    predict_ok = requests.labels("/predict", "200")
    predict_latency = latency.labels("/predict")
    per_arm_latency = {arm: arm_latency.labels(arm) for arm in ("production", "candidate")}

    def reply(endpoint: str, t0: float, status: int, body: Any) -> JSONResponse:
        requests.labels(endpoint, str(status)).inc()
        latency.labels(endpoint).observe(time.perf_counter() - t0)
        # an oversized body is not drained: closing the connection stops the client sending it
        headers = {"Connection": "close"} if status == 413 else None
        return AsciiJSON(body, status_code=status, headers=headers)

    def fail(endpoint: str, t0: float, status: int, kind: str, message: str) -> JSONResponse:
        errors.labels(kind).inc()
        return reply(endpoint, t0, status, {"error": message})

    def authorized(request: Request, expected: bytes | None) -> bool:
        if expected is None:
            return True
        got = request.headers.get("authorization", "")
        scheme, _, value = got.partition(" ")
        presented = value.strip().encode("latin-1", "replace")
        return scheme.lower() == "bearer" and hmac.compare_digest(presented, expected)

    async def read_body(request: Request) -> bytes:
        """The body, refused (413) as soon as it passes ``max_body_bytes``."""
        declared = request.headers.get("content-length")
        if declared is not None:
            # isascii: "²" (latin-1 \xb2) is a digit to str.isdigit but not to int()
            if not (declared.isascii() and declared.isdigit()) or len(declared) > 18:
                raise BadRequest(400, "bad_request", "Content-Length is not a byte count")
            if int(declared) > max_body_bytes:
                raise BadRequest(
                    413, "too_large", f"body of {declared} bytes exceeds {max_body_bytes} bytes"
                )
        buf = bytearray()
        async for chunk in request.stream():
            buf += chunk
            if len(buf) > max_body_bytes:
                raise BadRequest(413, "too_large", f"body exceeds {max_body_bytes} bytes")
        return bytes(buf)

    # A plain Starlette route inside the FastAPI app: the handler parses and checks the body
    # itself, so FastAPI's per-request dependency solving buys nothing here.
    async def predict(request: Request):
        t0 = time.perf_counter()
        if not authorized(request, token_b):
            return fail("/predict", t0, 401, "auth", "missing or invalid bearer token")
        try:
            if not _is_json(request.headers.get("content-type", "")):
                raise BadRequest(415, "media_type", "Content-Type must be application/json")
            raw = await read_body(request)
            if len(raw) > INLINE_PARSE_BYTES:
                symbols, key = await run_in_threadpool(parse_predict_body, raw)
            else:
                symbols, key = parse_predict_body(raw)
            # Synchronous on purpose: a request's CPU time is less than a thread-pool hop costs.
            result = predictor.predict(symbols, source="http", key=key)
        except BadRequest as exc:
            return fail("/predict", t0, exc.status, exc.kind, exc.message)
        except ClientDisconnect:
            return fail("/predict", t0, 400, "disconnect", "client disconnected mid-body")
        except ServiceHalted as exc:
            return fail("/predict", t0, 503, "halted", exc.message)
        except LedgerBrokenError as exc:  # nothing is served that cannot be audited
            broken = exc.message
            if not broken.startswith("audit ledger broken"):
                broken = f"audit ledger broken: {broken}"
            predictor.unavailable = broken
            return fail("/predict", t0, 503, "ledger_broken", predictor.unavailable)
        except NotFoundError as exc:
            return fail("/predict", t0, 404, "unknown_symbol", exc.message)
        except InputError as exc:
            return fail("/predict", t0, 422, "bad_request", exc.message)
        except StoreBusyError as exc:  # the offline fallback waited for a writer: retry later
            return fail("/predict", t0, 503, "store_busy", exc.message)
        except QuantCliError as exc:
            log.error("/predict failed: %s", exc.message)
            return fail("/predict", t0, 500, "server", exc.message)
        except Exception as exc:  # a fault of ours: logged here, one line to the client
            log.exception("/predict failed")
            return fail("/predict", t0, 500, "server", f"internal error ({type(exc).__name__})")
        response = JSONResponse(result.to_dict())
        arm = result.arm
        elapsed = time.perf_counter() - t0
        predict_ok.inc()
        predict_latency.observe(elapsed)
        arm_requests.labels(arm, str(result.predictions[0]["model_version"])).inc()
        per_arm_latency[arm].observe(elapsed)
        return response

    app.router.add_route("/predict", predict, methods=["POST"])

    @app.get("/health")
    async def health():
        t0 = time.perf_counter()
        d = predictor.deployment
        if predictor.unavailable is not None:
            status, reason = "unavailable", predictor.unavailable
        elif d.halted is not None:
            status, reason = "halted", d.halted
        else:
            status, reason = "ok", None
        body = {"status": status, "reason": reason, **predictor.describe()}
        if follower is not None:
            # /health is unauthenticated: the errors' text (paths, URIs) is for /admin/reload
            body["follow"] = {
                "interval_s": follower.interval_s,
                "polls": follower.polls,
                "last_sync_at": (follower.last_sync or {}).get("at"),
                "last_sync_errors": len((follower.last_sync or {}).get("errors", [])),
            }
        return reply("/health", t0, 200, body)

    @app.get("/metrics")
    async def metrics(request: Request):
        t0 = time.perf_counter()
        if not authorized(request, token_b):
            return fail("/metrics", t0, 401, "auth", "missing or invalid bearer token")
        requests.labels("/metrics", "200").inc()
        latency.labels("/metrics").observe(time.perf_counter() - t0)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def admin_reload(request: Request):
        t0 = time.perf_counter()
        if admin_b is None:
            return fail(
                "/admin/reload", t0, 403, "auth", f"admin endpoint disabled: set {ADMIN_TOKEN_ENV}"
            )
        if not authorized(request, admin_b):
            return fail("/admin/reload", t0, 401, "auth", "missing or invalid bearer token")
        if follower is None:
            return fail(
                "/admin/reload", t0, 409, "no_follow", "this service does not follow a registry"
            )
        try:
            result = await run_in_threadpool(follower.sync, "admin reload")
        except Exception as exc:
            log.exception("/admin/reload failed")
            return fail("/admin/reload", t0, 500, "server", f"reload failed ({type(exc).__name__})")
        return reply("/admin/reload", t0, 200, result)

    app.router.add_route("/admin/reload", admin_reload, methods=["POST"])

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        errors.labels("http").inc()
        requests.labels("other", str(exc.status_code)).inc()
        return AsciiJSON({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        errors.labels("bad_request").inc()
        requests.labels("other", "422").inc()
        return JSONResponse({"error": "invalid request"}, status_code=422)

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception):
        log.error("unhandled %s on %s", type(exc).__name__, request.url.path)
        errors.labels("server").inc()
        requests.labels("other", "500").inc()
        return JSONResponse({"error": "internal error"}, status_code=500)

    return app


def serve(
    predictor: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    follower: Any = None,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> None:
    """Run the service under uvicorn until SIGINT/SIGTERM (then the ledger is fsynced)."""
    import uvicorn

    if not 0 < port < 65536:
        raise InputError(f"--port must be 1..65535, got --port {port}")
    app = create_app(predictor, follower=follower, max_body_bytes=max_body_bytes)
    predictor.warm_up()
    # Everything loaded so far (Feast, onnxruntime, FastAPI: ~2x10^5 objects) lives as long as the
    # process: take it out of the collector's reach, so that a full collection never lands
    # inside a request.
    gc.collect()
    gc.freeze()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="on",
        )
    )
    server.run()
