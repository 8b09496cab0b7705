"""iocp_echo: a TCP message server whose network core is a completion port in Rust.

Worker threads in Rust own the sockets, the buffers and the completion port
(io_uring or epoll on Linux, IOCP on Windows); Python sees only whole messages.

>>> from iocp_echo import Server
>>> with Server(lambda msg: msg.upper(), port=0, framing="lines") as srv:
...     host, port = srv.address

Per-connection state, push and close: ``Server(protocol=Factory)`` with a
:class:`Protocol` subclass, one instance per connection, given its
:class:`Connection`. TLS: ``Server(..., tls=TlsConfig("cert.pem", "key.pem"))``; a
connection's ``tls`` is then a :class:`TlsInfo`.

Clients in whole messages: ``with connect((host, port), framing="lines") as client:
client.request(b"hi")``; from asyncio, ``await open_connection(...)``.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, Literal, Union

if TYPE_CHECKING:
    from os import PathLike

    from typing_extensions import Self

    from ._exposition import MetricsEndpoint
    from ._metrics import MetricsPlan

from ._aio import Lane, Runner

# Framed clients (blocking and asyncio) on the server's codecs.
from ._async_client import AsyncClient, open_connection
from ._client import Client, connect
from ._native import (
    BACKENDS,
    DEFAULT_MAX_FRAME,
    OPTIONS,
    Connection,
    ConnectionClosed,
    Decoder,
    FrameTooLarge,
    Framing,
    FramingError,
    ServerOption,
    TlsConfig,
    TlsInfo,
    resolve_backend,
)
from ._native import Server as _NativeServer

__all__ = [
    "BACKENDS",
    "DEFAULT_MAX_FRAME",
    "OPTIONS",
    "AsyncClient",
    "Client",
    "Connection",
    "ConnectionClosed",
    "Decoder",
    "FrameTooLarge",
    "Framing",
    "FramingError",
    "Handler",
    "Protocol",
    "Server",
    "ServerOption",
    "TlsConfig",
    "TlsInfo",
    "connect",
    "open_connection",
    "resolve_backend",
    "serve",
]

Reply = Union[bytes, bytearray, memoryview, None]
"""What a handler returns: the reply payload (framed by the server), or None for no reply."""

Handler = Callable[[bytes], Union[Reply, Awaitable[Reply]]]
"""A message handler: called with each complete message (may be ``async def``)."""


class Server(_NativeServer):
    """A TCP message server; a context manager (``with`` or ``async with``) that starts
    on enter and closes on exit.

    ``message_received`` of a protocol, or the handler, may be ``async def``: the
    coroutine is awaited on the asyncio loop running where the server was started
    (``async with Server(...)``), else on a loop thread of the server's own, started on
    first need and joined by ``close()``. A connection's messages are handled one at a
    time, in order (once its ``message_received`` returned a coroutine, its later ones
    are called on the loop too, and every reply goes out as ``Connection.send`` would send it);
    different connections' concurrently.

    ``metrics=(host, port)`` serves ``/metrics`` in Prometheus' text format while the
    server runs (port 0: a free one, see :attr:`metrics_address`); it needs the
    ``prometheus-client`` package (``pip install 'iocp_echo[metrics]'``).
    """

    _runner_lock = threading.Lock()

    _loop: asyncio.AbstractEventLoop | None = None
    _runner: Runner | None = None

    # --- metrics (``metrics=(host, port)``: iocp_echo._metrics) ---------------------

    _metrics_plan: MetricsPlan | None = None
    _metrics: MetricsEndpoint | None = None
    _metrics_finalizer: weakref.finalize[[], Server] | None = None

    if TYPE_CHECKING:
        # The native options as typed by the stub, and ``metrics``.
        def __new__(
            cls,
            handler: Handler | None = None,
            *,
            metrics: tuple[str, int] | None = None,
            protocol: Callable[[], Any] | None = None,
            host: str | None = "127.0.0.1",
            port: int | None = 8080,
            path: str | PathLike[str] | None = None,
            framing: Framing | str | None = None,
            workers: int | None = None,
            backend: str = "auto",
            max_frame: int | None = None,
            max_connections: int | None = None,
            idle_timeout: float | None = None,
            drain_timeout: float | None = None,
            linger_timeout: float | None = None,
            high_water: int | None = None,
            low_water: int | None = None,
            max_output: int | None = None,
            backlog: int | None = None,
            reuse_port: int | bool | None = None,
            tls: TlsConfig | None = None,
            tls_cert: str | PathLike[str] | None = None,
            tls_key: str | PathLike[str] | None = None,
            tls_client_ca: str | PathLike[str] | None = None,
            tls_alpn: str | list[str] | None = None,
            tls_handshake_timeout: float | None = None,
            proxy_protocol: bool = False,
            trusted_proxies: str | list[str] | None = None,
        ) -> Self: ...
    else:

        def __new__(cls, handler=None, *, metrics=None, **options):
            self = super().__new__(cls, handler, **options)
            if metrics is not None:
                from ._metrics import plan

                called = handler is not None or options.get("protocol") is not None
                self._metrics_plan = plan(metrics, handler=called, options=options)
            return self

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        """``(host, port)`` where ``/metrics`` is served while the server runs (port 0
        resolved); None without ``metrics=`` or when not running."""
        endpoint = self._metrics
        return endpoint.address if endpoint is not None else None

    def _start_metrics(self) -> None:
        """Serve ``/metrics`` if asked for; if it cannot bind, close the server and raise."""
        if self._metrics_plan is None or self._metrics is not None:
            return
        try:
            endpoint = self._metrics_plan.start(_stats_reader(self))
        except BaseException:
            self.close()
            raise
        self._metrics = endpoint
        # A server collected without close() stops its workers (the native side's
        # drop); this stops its /metrics with them.
        self._metrics_finalizer = weakref.finalize(self, endpoint.close)

    def _stop_metrics(self) -> None:
        endpoint, self._metrics = self._metrics, None
        finalizer, self._metrics_finalizer = self._metrics_finalizer, None
        if finalizer is not None:
            finalizer.detach()
        if endpoint is not None:
            endpoint.close()

    # --- the asyncio side -----------------------------------------------------------

    def _note_loop(self) -> None:
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None

    def start(self) -> None:
        self._note_loop()
        super().start()
        self._start_metrics()

    def serve_forever(self) -> None:
        if not self.running:
            self.start()
        try:
            super().serve_forever()
        finally:
            if not self.running:  # closed (not interrupted: close() follows then)
                self._stop_metrics()
        self._close_runner()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._stop_metrics()
            self._close_runner()

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        self.close()
        return False

    async def __aenter__(self) -> Self:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Closing drains and joins the workers: off the loop, which keeps running the
        # coroutines meanwhile; then until every async connection heard connection_lost.
        # (Closing lets go of the runner: a restart makes a new one.)
        runner = self._runner
        await asyncio.get_running_loop().run_in_executor(None, self.close)
        runner = runner or self._runner
        if runner is not None:
            await runner.wait_idle()

    async def wait_closed(self) -> None:
        """Until the server is closed (from another task or thread, or by a signal)."""
        loop = asyncio.get_running_loop()
        while not await loop.run_in_executor(None, self.wait, 0.1):
            pass

    def _async_lane(self, conn: Connection, protocol: Any) -> Lane:
        """Called by a worker when ``conn``'s protocol returned an awaitable (handed to
        the lane with the rest of the worker's turn)."""
        with self._runner_lock:
            if self._runner is None:
                self._runner = Runner(self._loop)
            runner = self._runner
        return runner.lane(conn, protocol)

    def _close_runner(self) -> None:
        """The workers are joined (every lane was told): stop a loop thread of our own,
        and let go of the runner, so a restarted server starts a new one."""
        with self._runner_lock:
            runner, self._runner = self._runner, None
        if runner is not None:
            runner.close()


def _stats_reader(server: Server) -> Callable[[], dict[str, Any] | None]:
    """The server's stats for the metrics collector, None while it is not running; holds
    the server weakly, so the collector keeps no server alive."""
    ref = weakref.ref(server)

    def read() -> dict[str, Any] | None:
        alive = ref()
        if alive is None:
            return None
        try:
            return alive.stats()
        except RuntimeError:  # not running (closing)
            return None

    return read


class Protocol:
    """One connection's callbacks, for ``Server(protocol=Factory)``: the server calls
    ``Factory()`` once per accepted connection (a class is a factory). Every method is a
    no-op here; override those you need. Any object with these methods works too.

    The callbacks of one connection run on its worker thread, in order, never two at
    once: ``connection_made`` first, ``message_received`` per message,
    ``connection_lost`` exactly once, last. A callback that raises (or a reply of the
    wrong type) is logged on the ``iocp_echo`` logger and closes only its connection,
    whose ``connection_lost`` is then given that exception.
    """

    def connection_made(self, conn: Connection) -> None:
        """The connection opened: keep ``conn`` to send to it, close it, read its addresses."""

    def message_received(self, message: bytes) -> Reply | Awaitable[Reply]:
        """A whole message arrived; the return value (bytes-like or None) is the reply."""
        return None

    def pause_writing(self) -> None:
        """The connection's queued output passed ``high_water``: stop pushing to it."""

    def resume_writing(self) -> None:
        """The connection's queued output fell to ``low_water``: pushing may resume."""

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection closed: ``None`` for a clean close by either side, else why
        (``ConnectionResetError``, ``TimeoutError`` for the idle timeout,
        ``FrameTooLarge``/``FramingError``, ``ConnectionError`` for a slow consumer or a
        TLS failure, the exception a callback raised, ``ConnectionAbortedError`` when the
        server closes)."""


def serve(
    handler: Handler | str | None = None,
    *,
    protocol: Callable[[], Any] | str | None = None,
    host: str | None = None,
    port: int | None = None,
    framing: str | Framing = "raw",
    processes: int = 1,
    **options: Any,
) -> None:
    """Serve until Ctrl-C or SIGTERM, then close cleanly and return.

    ``handler=None`` echoes every message natively, without entering Python;
    ``protocol=Factory`` makes one :class:`Protocol` per connection instead.
    ``host`` and ``port`` default to 127.0.0.1:8080; ``path=`` serves a Unix domain
    socket instead (Linux). ``options`` are the other keyword arguments of :class:`Server`, one per
    entry of :data:`OPTIONS` (``workers``, ``backend``, ``max_frame``,
    ``max_connections``, ``idle_timeout``, ``drain_timeout``, ``high_water``,
    ``low_water``, ``max_output``, ``backlog``, ...), ``tls=TlsConfig(...)`` to serve TLS,
    and ``metrics=(host, port)`` to serve Prometheus metrics.

    ``processes=N`` (Linux) runs ``python -m iocp_echo --processes N``: a supervising
    parent and N child processes, each importing the handler itself, so the handler
    and protocol must then be import strings (``"module:function"``, as
    ``uvicorn.run("app:app", workers=N)``), the framing a name, and TLS given as
    ``tls_cert``/``tls_key`` files. An error is one line on stderr and ``SystemExit``,
    as on the command line.
    """
    if processes != 1 or isinstance(handler, str) or isinstance(protocol, str):
        _serve_by_command_line(handler, protocol, host, port, framing, processes, options)
        return
    server = Server(handler, protocol=protocol, host=host, port=port, framing=framing, **options)
    with _stop_signals_interrupt():
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.close()


def _serve_by_command_line(
    handler: object,
    protocol: object,
    host: str | None,
    port: int | None,
    framing: object,
    processes: int,
    options: dict[str, Any],
) -> None:
    """``serve(processes=N)`` or an import string: the options as command-line flags,
    run by the CLI (which imports the handler by its string)."""
    for name, value in (("handler", handler), ("protocol", protocol)):
        if value is not None and not isinstance(value, str):
            raise TypeError(
                f"with processes={processes}, {name} must be an import string "
                f"'module:attribute' (each process imports it), not {type(value).__name__}"
            )
    if not isinstance(framing, str):
        raise TypeError(f"with processes={processes}, framing must be a name, not a Framing")
    if "tls" in options:
        raise TypeError(f"with processes={processes}, give TLS as tls_cert= and tls_key=")
    argv = ["--framing", framing, "--processes", str(processes)]
    metrics = options.pop("metrics", None)
    if metrics is not None:
        metrics_host, metrics_port = metrics
        argv += ["--metrics-host", str(metrics_host), "--metrics-port", str(metrics_port)]
    if host is not None:
        argv += ["--host", host]
    if port is not None:
        argv += ["--port", str(port)]
    if isinstance(handler, str):
        argv += ["--handler", handler]
    if isinstance(protocol, str):
        argv += ["--protocol", protocol]
    flags = {option.name: option.flag for option in OPTIONS}
    for name, value in options.items():
        if name not in flags:
            raise TypeError(f"serve() got an unexpected keyword argument {name!r}")
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            value = ",".join(value)
        argv += [flags[name], str(int(value) if isinstance(value, bool) else value)]
    from .__main__ import main  # the command line imports this module: only here

    code = main(argv)
    if code != 0:
        raise SystemExit(code)


@contextmanager
def _stop_signals_interrupt() -> Iterator[None]:
    """Make SIGTERM stop the server like Ctrl-C, and SIGINT too where it was ignored
    at startup (a background job of a non-interactive shell), as the CLI does; only
    where Python lets us (the main thread). The previous handlers come back after."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous_term = signal.signal(signal.SIGTERM, interrupt)
    previous_int = signal.getsignal(signal.SIGINT)
    if previous_int == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        if previous_int == signal.SIG_IGN:
            signal.signal(signal.SIGINT, previous_int)
