"""Bounded HTTP for the monitoring layer: one total deadline per request, no redirects, a
capped answer.

urllib's ``timeout`` bounds each socket operation, not the request: a server that trickles one
byte at a time never trips it. :func:`http_request` therefore runs the request on a worker
thread joined with the deadline; past it, the connection's socket is shut down, which ends the
worker's blocked read as well.

Redirects are never followed. urllib would re-issue a webhook's POST as a GET without its body
(and the alert would count as delivered), follow it to any host or scheme, and copy an
``Authorization`` header to wherever the redirect points. A 3xx answer is a failure here.

Error messages never contain the URL (webhook URLs are secrets): only a status code, or the
class and ``strerror`` of the network error.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any


class HttpFailure(Exception):
    """The request did not produce a usable answer; the message is safe to log (no URL)."""


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    body: bytes


class _Sockets:
    """The sockets a request opened, so that another thread can cut them at the deadline."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._aborted = False

    def add(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self._lock:
            self._socks.append(sock)
            aborted = self._aborted
        if aborted:  # the deadline passed while connecting
            _shutdown(sock)

    def abort(self) -> None:
        with self._lock:
            self._aborted = True
            socks = list(self._socks)
        for sock in socks:
            _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed by the worker
        sock.shutdown(socket.SHUT_RDWR)


def _tracking(cls: type[http.client.HTTPConnection], sockets: _Sockets) -> Any:
    """A connection factory for ``do_open`` that registers each connected socket."""

    def make(host: str, **kwargs: Any) -> http.client.HTTPConnection:
        conn = cls(host, **kwargs)
        connect = conn.connect

        def tracked_connect() -> None:
            connect()
            sockets.add(conn.sock)

        conn.connect = tracked_connect  # type: ignore[method-assign]
        return conn

    return make


class _HttpHandler(urllib.request.HTTPHandler):
    def __init__(self, sockets: _Sockets) -> None:
        super().__init__()
        self._sockets = sockets

    def http_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(_tracking(http.client.HTTPConnection, self._sockets), req)


class _HttpsHandler(urllib.request.HTTPSHandler):
    def __init__(self, sockets: _Sockets) -> None:
        super().__init__()
        self._sockets = sockets

    def https_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(
            _tracking(http.client.HTTPSConnection, self._sockets), req, context=self._context
        )


def _opener(sockets: _Sockets) -> urllib.request.OpenerDirector:
    """http and https only, no redirect handler: a 3xx reaches ``HTTPDefaultErrorHandler``
    and raises ``HTTPError`` like any other non-2xx answer."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        urllib.request.UnknownHandler(),
        _HttpHandler(sockets),
        _HttpsHandler(sockets),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


def _describe(exc: BaseException) -> str:
    """Why a request failed, without the URL (URLError's text can quote the request)."""
    if isinstance(exc, urllib.error.HTTPError):
        if 300 <= exc.code < 400:
            return f"HTTP {exc.code} (redirects are not followed)"
        return f"HTTP {exc.code}"
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, TimeoutError | socket.timeout):
        return "TimeoutError: timed out"
    return f"{type(reason).__name__}: {getattr(reason, 'strerror', None) or 'failed'}"


def http_request(
    url: str,
    *,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    method: str | None = None,
    timeout: float,
    max_bytes: int,
    refuse_larger: bool = True,
) -> HttpAnswer:
    """``url``'s 2xx answer (at most ``max_bytes`` of body) within ``timeout`` seconds in all.

    A longer body is a failure, or with ``refuse_larger`` false cut at ``max_bytes`` (a
    webhook's answer is not read).

    Raises
    ------
    HttpFailure
        A non-2xx answer (3xx included), a network error, the deadline passed, or (with
        ``refuse_larger``) a body larger than ``max_bytes``.
    """
    sockets = _Sockets()
    outcome: dict[str, Any] = {}
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)

    def work() -> None:
        try:
            with _opener(sockets).open(req, timeout=timeout) as resp:
                body = resp.read(max_bytes + 1)
                outcome["answer"] = HttpAnswer(resp.status, body)
        except urllib.error.HTTPError as exc:
            exc.close()
            outcome["error"] = exc
        except Exception as exc:  # reported to the caller, never raised on the worker
            outcome["error"] = exc

    worker = threading.Thread(target=work, name="qcli-http", daemon=True)
    worker.start()
    worker.join(timeout)
    late = f"no complete answer within {timeout:.3g} s"
    if worker.is_alive():
        sockets.abort()
        raise HttpFailure(late)
    if "error" in outcome:
        # a socket timeout is the same deadline, reached in the worker a moment earlier
        timed_out = _describe(outcome["error"]) == "TimeoutError: timed out"
        raise HttpFailure(late if timed_out else _describe(outcome["error"]))
    answer: HttpAnswer = outcome["answer"]
    if len(answer.body) > max_bytes and refuse_larger:
        raise HttpFailure(f"answer larger than {max_bytes} bytes")
    if not 200 <= answer.status < 300:
        raise HttpFailure(f"HTTP {answer.status}")
    return answer
