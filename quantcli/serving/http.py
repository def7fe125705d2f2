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
loop while other clients wait. A prediction whose symbols the online store has runs inline; one
that needs the offline store runs on a bounded pool of ``predict_threads`` worker threads
(:data:`PREDICT_THREADS`): a request that waits on the offline store's lock holds one worker,
never the event loop, so ``/health`` and the other requests keep being answered; past
:data:`WAITING_PER_THREAD` requests waiting per worker, the next is answered 503 at once.
Unauthenticated bodies (``/health``, the errors of ``/predict``) never carry a file path: the
text of a broken ledger names its file, the rest of the path is for ``/admin/reload``.
"""

# No ``from __future__ import annotations`` here: FastAPI must see the real ``Request`` class in
# the handlers' annotations, and it is imported inside create_app (kept off the CLI start-up path).
import asyncio
import functools
import gc
import hmac
import json
import logging
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from quantcli.audit import LedgerBrokenError
from quantcli.errors import InputError, NotFoundError, QuantCliError, StoreBusyError
from quantcli.online.store import OfflineReadNeeded
from quantcli.serving.metrics import service_metrics
from quantcli.serving.predict import ServiceHalted

TOKEN_ENV = "QCLI_API_TOKEN"
ADMIN_TOKEN_ENV = "QCLI_ADMIN_TOKEN"
MAX_BODY_BYTES = 1_000_000
# Larger bodies are parsed on a worker thread (a 1 MB JSON list takes milliseconds to parse).
INLINE_PARSE_BYTES = 64 * 1024
MAX_KEY_CHARS = 256
# Worker threads running predictions: the bound on requests in progress at once; the rest wait
# for a worker without holding the event loop.
PREDICT_THREADS = 8
# Requests that may wait for a worker at once, per worker: past it a request is answered 503 at
# once, so a flood of unknown tickers while a writer holds the offline store cannot queue
# without bound (each would hold its connection and memory for the whole busy timeout).
WAITING_PER_THREAD = 4
# an absolute path (two or more components) inside a message; the last component is kept
_ABS_PATH = re.compile(r"(?<![\w.~:/])/(?:[^\s/:;,'\"()]+/)+([^\s/:;,'\"()]*)")
log = logging.getLogger("quantcli.serving")


def public_text(text: str | None) -> str | None:
    """``text`` with every absolute path cut to its last component, for unauthenticated bodies
    (the full text stays in the log and ``/admin/reload``)."""
    return None if text is None else _ABS_PATH.sub(r"\1", text)


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


def _authorized(request: Any, expected: bytes | None) -> bool:
    """``expected`` is None (no token set) or the request's bearer token equals it."""
    if expected is None:
        return True
    got = request.headers.get("authorization", "")
    scheme, _, value = got.partition(" ")
    presented = value.strip().encode("latin-1", "replace")
    return scheme.lower() == "bearer" and hmac.compare_digest(presented, expected)


def _token_bytes(token: str | None) -> bytes | None:
    # compared as bytes: a header is latin-1 text, a token may be any UTF-8 text
    return token.encode("utf-8") if token else None


class _Endpoints:
    """The handlers of one app: every answer is counted, timed and, on failure, JSON."""

    def __init__(
        self,
        predictor: Any,
        follower: Any,
        *,
        api_token: str | None,
        admin_token: str | None,
        max_body_bytes: int,
        predict_threads: int = PREDICT_THREADS,
    ) -> None:
        from fastapi.responses import JSONResponse, Response
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
        from starlette.concurrency import run_in_threadpool
        from starlette.requests import ClientDisconnect

        class AsciiJSON(JSONResponse):
            """Errors and admin answers as ASCII JSON: text echoed from a request (a lone
            surrogate, say) can never make encoding the answer fail."""

            def render(self, content: Any) -> bytes:
                return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode()

        self.predictor, self.follower, self.max_body_bytes = predictor, follower, max_body_bytes
        if isinstance(predict_threads, bool) or not isinstance(predict_threads, int):
            raise InputError(f"predict_threads must be a whole number, got {predict_threads!r}")
        if not 1 <= predict_threads <= 256:
            raise InputError(f"predict_threads must be in [1, 256], got {predict_threads}")
        self.pool = ThreadPoolExecutor(predict_threads, thread_name_prefix="qcli-predict")
        self.max_offline = predict_threads * (1 + WAITING_PER_THREAD)
        self.offline_in_flight = 0  # touched on the event loop only
        token = api_token if api_token is not None else os.environ.get(TOKEN_ENV) or None
        admin = admin_token if admin_token is not None else os.environ.get(ADMIN_TOKEN_ENV) or None
        self.token_b, self.admin_b = _token_bytes(token), _token_bytes(admin or token)
        self.json, self.ascii_json, self.response = JSONResponse, AsciiJSON, Response
        self.run_in_threadpool, self.client_disconnect = run_in_threadpool, ClientDisconnect
        self.exposition = lambda: Response(
            generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST
        )
        metrics = service_metrics(predictor, follower)
        self.registry, self.requests, self.latency, self.errors = metrics[:4]
        self.arm_requests, arm_latency = metrics[4:]
        # the hot path's metric children, resolved once (labels() takes a lock and builds a key)
        self.predict_ok = self.requests.labels("/predict", "200")
        self.predict_latency = self.latency.labels("/predict")
        self.per_arm_latency = {a: arm_latency.labels(a) for a in ("production", "candidate")}

    def reply(self, endpoint: str, t0: float, status: int, body: Any) -> Any:
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(time.perf_counter() - t0)
        # an oversized body is not drained: closing the connection stops the client sending it
        headers = {"Connection": "close"} if status == 413 else None
        return self.ascii_json(body, status_code=status, headers=headers)

    def fail(self, endpoint: str, t0: float, status: int, kind: str, message: str) -> Any:
        self.errors.labels(kind).inc()
        if status >= 500:  # the service's own state: may name its files
            message = public_text(message)
        return self.reply(endpoint, t0, status, {"error": message})

    async def read_body(self, request: Any) -> bytes:
        """The body, refused (413) as soon as it passes ``max_body_bytes``."""
        limit = self.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            # isascii: "²" (latin-1 \xb2) is a digit to str.isdigit but not to int()
            if not (declared.isascii() and declared.isdigit()) or len(declared) > 18:
                raise BadRequest(400, "bad_request", "Content-Length is not a byte count")
            if int(declared) > limit:
                raise BadRequest(
                    413, "too_large", f"body of {declared} bytes exceeds {limit} bytes"
                )
        buf = bytearray()
        async for chunk in request.stream():
            buf += chunk
            if len(buf) > limit:
                raise BadRequest(413, "too_large", f"body exceeds {limit} bytes")
        return bytes(buf)

    async def predict(self, request: Any) -> Any:
        t0 = time.perf_counter()
        if not _authorized(request, self.token_b):
            return self.fail("/predict", t0, 401, "auth", "missing or invalid bearer token")
        try:
            if not _is_json(request.headers.get("content-type", "")):
                raise BadRequest(415, "media_type", "Content-Type must be application/json")
            raw = await self.read_body(request)
            if len(raw) > INLINE_PARSE_BYTES:
                symbols, key = await self.run_in_threadpool(parse_predict_body, raw)
            else:
                symbols, key = parse_predict_body(raw)
            # Inline when the online store has every symbol (a thread handoff costs the p99 a
            # millisecond); on a worker when the offline store is needed, whose read may wait
            # seconds for a writer's lock and would stall every other request, /health too.
            call = functools.partial(self.predictor.predict, symbols, source="http", key=key)
            try:
                result = call(offline=False)
            except OfflineReadNeeded:
                if self.offline_in_flight >= self.max_offline:
                    raise BadRequest(
                        503, "busy", "too many requests are waiting on the offline store; retry"
                    ) from None
                self.offline_in_flight += 1
                try:
                    result = await asyncio.get_running_loop().run_in_executor(self.pool, call)
                finally:
                    self.offline_in_flight -= 1
        except BadRequest as exc:
            return self.fail("/predict", t0, exc.status, exc.kind, exc.message)
        except self.client_disconnect:
            return self.fail("/predict", t0, 400, "disconnect", "client disconnected mid-body")
        except Exception as exc:
            return self._predict_failed(t0, exc)
        response = self.json(result.to_dict())
        arm = result.arm
        elapsed = time.perf_counter() - t0
        self.predict_ok.inc()
        self.predict_latency.observe(elapsed)
        self.arm_requests.labels(arm, str(result.predictions[0]["model_version"])).inc()
        self.per_arm_latency[arm].observe(elapsed)
        return response

    def _predict_failed(self, t0: float, exc: Exception) -> Any:
        """The answer to a request the predictor refused or failed: status and kind by error."""
        fail = self.fail
        if isinstance(exc, ServiceHalted):
            return fail("/predict", t0, 503, "halted", exc.message)
        if isinstance(exc, LedgerBrokenError):  # nothing is served that cannot be audited
            broken = exc.message
            if not broken.startswith("audit ledger broken"):
                broken = f"audit ledger broken: {broken}"
            self.predictor.unavailable = broken
            return fail("/predict", t0, 503, "ledger_broken", self.predictor.unavailable)
        if isinstance(exc, NotFoundError):
            return fail("/predict", t0, 404, "unknown_symbol", exc.message)
        if isinstance(exc, InputError):
            return fail("/predict", t0, 422, "bad_request", exc.message)
        if isinstance(exc, StoreBusyError):  # the offline fallback waited for a writer: retry
            return fail("/predict", t0, 503, "store_busy", exc.message)
        if isinstance(exc, QuantCliError):
            log.error("/predict failed: %s", exc.message)
            return fail("/predict", t0, 500, "server", exc.message)
        # a fault of ours: logged here, one line to the client
        log.error("/predict failed", exc_info=exc)
        return fail("/predict", t0, 500, "server", f"internal error ({type(exc).__name__})")

    async def health(self) -> Any:
        t0 = time.perf_counter()
        predictor, follower = self.predictor, self.follower
        d = predictor.deployment
        if predictor.unavailable is not None:
            status, reason = "unavailable", predictor.unavailable
        elif d.halted is not None:
            status, reason = "halted", d.halted
        else:
            status, reason = "ok", None
        body = {"status": status, "reason": public_text(reason), **predictor.describe()}
        if follower is not None:
            # /health is unauthenticated: the errors' text (paths, URIs) is for /admin/reload
            body["follow"] = {
                "interval_s": follower.interval_s,
                "polls": follower.polls,
                "last_sync_at": (follower.last_sync or {}).get("at"),
                "last_sync_errors": len((follower.last_sync or {}).get("errors", [])),
            }
        return self.reply("/health", t0, 200, body)

    async def metrics(self, request: Any) -> Any:
        t0 = time.perf_counter()
        if not _authorized(request, self.token_b):
            return self.fail("/metrics", t0, 401, "auth", "missing or invalid bearer token")
        self.requests.labels("/metrics", "200").inc()
        self.latency.labels("/metrics").observe(time.perf_counter() - t0)
        return self.exposition()

    async def admin_reload(self, request: Any) -> Any:
        t0 = time.perf_counter()
        if self.admin_b is None:
            message = f"admin endpoint disabled: set {ADMIN_TOKEN_ENV}"
            return self.fail("/admin/reload", t0, 403, "auth", message)
        if not _authorized(request, self.admin_b):
            return self.fail("/admin/reload", t0, 401, "auth", "missing or invalid bearer token")
        if self.follower is None:
            message = "this service does not follow a registry"
            return self.fail("/admin/reload", t0, 409, "no_follow", message)
        try:
            result = await self.run_in_threadpool(self.follower.sync, "admin reload")
        except Exception as exc:
            log.exception("/admin/reload failed")
            message = f"reload failed ({type(exc).__name__})"
            return self.fail("/admin/reload", t0, 500, "server", message)
        return self.reply("/admin/reload", t0, 200, result)

    async def http_error(self, request: Any, exc: Any) -> Any:
        self.errors.labels("http").inc()
        self.requests.labels("other", str(exc.status_code)).inc()
        return self.ascii_json({"error": str(exc.detail)}, status_code=exc.status_code)

    async def validation_error(self, request: Any, exc: Exception) -> Any:
        self.errors.labels("bad_request").inc()
        self.requests.labels("other", "422").inc()
        return self.json({"error": "invalid request"}, status_code=422)

    async def server_error(self, request: Any, exc: Exception) -> Any:
        log.error("unhandled %s on %s", type(exc).__name__, request.url.path)
        self.errors.labels("server").inc()
        self.requests.labels("other", "500").inc()
        return self.json({"error": "internal error"}, status_code=500)


def create_app(
    predictor: Any,
    *,
    api_token: str | None = None,
    admin_token: str | None = None,
    follower: Any = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    predict_threads: int = PREDICT_THREADS,
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
    predict_threads
        Worker threads running predictions (at most this many requests in progress at once).
    """
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    h = _Endpoints(
        predictor,
        follower,
        api_token=api_token,
        admin_token=admin_token,
        max_body_bytes=max_body_bytes,
        predict_threads=predict_threads,
    )

    @asynccontextmanager
    async def lifespan(_app):
        if follower is not None:
            follower.start()
        yield
        if follower is not None:
            follower.stop()
        h.pool.shutdown(wait=True)  # every prediction in progress is in the ledger first
        predictor.close()  # fsync the ledger on a clean shutdown

    app = FastAPI(
        title="quantcli prediction service",
        version="1",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    # Plain Starlette routes inside the FastAPI app: the handlers parse and check the body
    # themselves, so FastAPI's per-request dependency solving buys nothing there.
    app.router.add_route("/predict", h.predict, methods=["POST"])
    app.router.add_route("/admin/reload", h.admin_reload, methods=["POST"])

    @app.get("/health")
    async def health():
        return await h.health()

    @app.get("/metrics")
    async def metrics(request: Request):
        return await h.metrics(request)

    app.add_exception_handler(StarletteHTTPException, h.http_error)
    app.add_exception_handler(RequestValidationError, h.validation_error)
    app.add_exception_handler(Exception, h.server_error)
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
