"""The ``/metrics`` (and, on the head, ``/sd``) HTTP endpoint of a freight process.

It runs prometheus_client's own WSGI machinery (``make_wsgi_app`` over a private
``CollectorRegistry``, a threading WSGI server) in a daemon thread, so a slow scrape never
touches the process's event loop. The port is bound at once; the HTTP server and
prometheus_client are loaded when the first request arrives, so that a process nobody scrapes
(a short program's private cluster) does not pay for them at start-up. State that the event loop owns is read with
:func:`loop_reader`: the read is scheduled on the loop and the HTTP thread waits for its result
with a timeout, so no dict is ever iterated from another thread while the loop changes it.

A failing read answers 503 with the reason (the scrape fails and Prometheus marks the target
down); it is logged once, and the server keeps serving.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import select
import socket
import threading
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from loguru import logger

T = TypeVar("T")

READ_TIMEOUT_S = 5.0


def loop_reader(
    loop: asyncio.AbstractEventLoop,
    read: Callable[[], Awaitable[T]],
    timeout: float = READ_TIMEOUT_S,
) -> Callable[[], T]:
    """A blocking function that runs the coroutine ``read()`` on ``loop`` and returns its result.

    For the HTTP thread: raises ``TimeoutError`` when the loop does not answer in ``timeout``
    seconds and ``RuntimeError`` when the loop is closed.
    """

    def blocking() -> T:
        coro = read()
        try:
            future: Any = asyncio.run_coroutine_threadsafe(coro, loop)  # type: ignore[arg-type]
        except RuntimeError:  # the loop is closed: the process is stopping
            coro.close()  # type: ignore[attr-defined]
            raise
        try:
            return future.result(timeout)
        except FutureTimeout:
            future.cancel()
            raise TimeoutError(f"the event loop did not produce figures within {timeout:g} s")

    return blocking


@functools.cache
def _server_classes() -> tuple[type, type]:
    """The WSGI server and handler classes (wsgiref loaded on first use)."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

    class QuietHandler(WSGIRequestHandler):
        """Logs nothing (prometheus_client's handler does the same): scrapes are not news."""

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class QuietServer(ThreadingMixIn, WSGIServer):
        """prometheus_client's ThreadingWSGIServer; a client that hangs up mid-answer must not
        print a traceback on stderr."""

        daemon_threads = True

        def handle_error(self, request: Any, client_address: Any) -> None:
            logger.debug("metrics endpoint: a request from {} failed", client_address)

    return QuietServer, QuietHandler


class MetricsServer:
    """Serves ``/metrics`` from ``collectors`` and, when ``sd`` is given, ``/sd`` (HTTP SD JSON).

    ``port`` 0 picks a free port; :attr:`port` holds the one bound. When the port cannot be
    bound, the error is logged, :attr:`error` says why and the server stays disabled (port 0):
    metrics never stop the process they describe.
    """

    def __init__(
        self,
        collectors: Iterable[Any],
        bind: str = "127.0.0.1",
        port: int = 0,
        sd: Callable[[], Any] | None = None,
    ) -> None:
        self._collectors = list(collectors)
        self._metrics_app: Any = None  # built at the first /metrics request
        self._sd = sd
        self._failed: set[str] = set()
        self._lock = threading.Lock()
        self._stopping = False
        self.error = ""
        self.port = 0
        self._httpd: Any = None
        self._sock: socket.socket | None = None
        try:
            self._sock = socket.create_server((bind, port), family=socket.AF_INET)
        except OSError as exc:
            self.error = f"cannot serve metrics on {bind}:{port}: {exc}"
            logger.error("{}; this process runs without a /metrics endpoint", self.error)
            return
        self.port = self._sock.getsockname()[1]
        self._wake_r, self._wake_w = os.pipe()  # stop() wakes the thread waiting for a request
        self._thread = threading.Thread(
            target=self._serve, name="freight-metrics-http", daemon=True
        )

    def address(self, host: str) -> str:
        """``host:port`` of the endpoint, or "" when it is disabled."""
        return f"{host}:{self.port}" if self._sock is not None else ""

    def start(self) -> MetricsServer:
        if self._sock is not None:
            self._thread.start()
        return self

    def _serve(self) -> None:
        assert self._sock is not None
        # Requests queue in the socket's backlog until the server below takes them.
        select.select([self._sock.fileno(), self._wake_r], [], [])
        with self._lock:
            if self._stopping:
                return
            server_class, handler_class = _server_classes()
            httpd = server_class(self._sock.getsockname(), handler_class, bind_and_activate=False)
            httpd.socket.close()
            httpd.socket = self._sock  # the socket bound (and listening) since __init__
            httpd.server_name, httpd.server_port = self._sock.getsockname()[:2]
            httpd.setup_environ()
            httpd.set_app(self._app)
            self._httpd = httpd
        httpd.serve_forever()

    def stop(self) -> None:
        """Stop serving and close the socket (blocks until the serving thread has stopped)."""
        if self._sock is None:
            return
        with self._lock:
            self._stopping = True
            httpd = self._httpd
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        else:
            os.write(self._wake_w, b"x")
            if self._thread.is_alive():
                self._thread.join()
            self._sock.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _metrics(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        with self._lock:
            if self._metrics_app is None:
                from prometheus_client import CollectorRegistry, make_wsgi_app

                registry = CollectorRegistry(auto_describe=False)
                for c in self._collectors:
                    registry.register(c)
                self._metrics_app = make_wsgi_app(registry)
        return self._metrics_app(environ, start_response)

    def _log_once(self, what: str, exc: BaseException) -> None:
        key = f"{what}:{type(exc).__name__}"
        if key not in self._failed:
            self._failed.add(key)
            logger.opt(exception=exc).warning("metrics endpoint: {} failed: {}", what, exc)

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        path = environ.get("PATH_INFO", "/")
        try:
            if path == "/sd" and self._sd is not None:
                body = json.dumps(self._sd()).encode()
                start_response("200 OK", [("Content-Type", "application/json")])
                return [body]
            if path in ("/", "/metrics"):
                return list(self._metrics(environ, start_response))
        except Exception as exc:
            self._log_once(path, exc)
            text = f"freight: could not produce {path}: {type(exc).__name__}: {exc}\n"
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [text.encode()]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        known = "/metrics and /sd" if self._sd is not None else "/metrics"
        return [f"freight: no such path {path}; this endpoint serves {known}\n".encode()]
