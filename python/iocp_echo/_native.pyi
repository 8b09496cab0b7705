"""Types of the Rust extension module ``iocp_echo._native``."""

from collections.abc import Awaitable, Callable, Coroutine, Iterable
from os import PathLike
from types import TracebackType
from typing import Any, Final, Literal, final

from typing_extensions import Self, TypeAlias, disjoint_base

_Reply: TypeAlias = bytes | bytearray | memoryview | None

__all__ = [
    "BACKENDS",
    "DEFAULT_MAX_FRAME",
    "OPTIONS",
    "Connection",
    "ConnectionClosed",
    "Decoder",
    "FrameTooLarge",
    "Framing",
    "FramingError",
    "Server",
    "ServerOption",
    "TlsConfig",
    "TlsInfo",
    "option_from_text",
    "resolve_backend",
    "run_bench",
]

BACKENDS: Final[list[str]]
"""Every backend name: ``"io_uring"``, ``"epoll"``, ``"iocp"``."""

DEFAULT_MAX_FRAME: Final[int]
"""The default payload limit of servers and decoders, in bytes."""

@final
class ServerOption:
    """One server option: its keyword, its flag, the values it takes, its default and help."""

    @property
    def name(self) -> str:
        """The keyword of ``Server(...)``, also the name in error messages: ``max_frame``."""
    @property
    def flag(self) -> str:
        """The command-line flag: ``--max-frame``."""
    @property
    def kind(
        self,
    ) -> Literal[
        "host", "count", "bytes", "seconds", "choice", "framing", "path", "names", "flag", "cidrs"
    ]:
        """What values it takes."""
    @property
    def optional(self) -> bool:
        """Whether None (``none`` on the command line) is a value, not just "the default"."""
    @property
    def minimum(self) -> int | None:
        """The smallest value of a count, else None."""
    @property
    def maximum(self) -> int | None:
        """The largest value of a count, else None."""
    @property
    def choices(self) -> tuple[str, ...]:
        """The names a choice or framing takes, else empty."""
    @property
    def default(self) -> bool | int | float | str | list[str] | None:
        """The value a server has when the option is not given."""
    @property
    def help(self) -> str:
        """One line of help."""

OPTIONS: Final[tuple[ServerOption, ...]]
"""Every server option, as ``Server(...)``, ``python -m iocp_echo`` and ``iocp-echo`` take them."""

def option_from_text(name: str, text: str) -> bool | int | float | str | list[str] | None:
    """The value ``Server(...)`` takes for option ``name`` from the text of its flag.

    ``ValueError`` (the message ``Server`` gives) if a number is bad.
    """

class FramingError(ValueError):
    """A message cannot be framed or a byte stream cannot be decoded."""

class FrameTooLarge(FramingError):
    """A frame's payload is over the limit, or its length prefix claims so."""

class ConnectionClosed(ConnectionError):
    """The connection is closed, or its stream has ended: raised by a server-side
    `Connection`'s ``send`` (and ``drain``) once it is closed, and by the framed clients
    (`Client`, `AsyncClient`) when the server cleanly ends the stream (``recv``) and on
    any call once the client is closed."""

@final
class TlsConfig:
    """A server's TLS, for ``Server(..., tls=TlsConfig(...))``; names as ``ssl.SSLContext``'s.

    The arguments are checked and the files read at construction (``TypeError`` or
    ``ValueError`` naming a bad argument; ``OSError`` naming a file that cannot be read,
    ``ValueError`` naming one that cannot be used: not PEM, no certificate or key, a key
    not matching the certificate). One ``TlsConfig`` may serve several servers.
    """

    def __new__(
        cls,
        certfile: str | PathLike[str],
        keyfile: str | PathLike[str],
        cafile: str | PathLike[str] | None = None,
        alpn_protocols: list[str] | tuple[str, ...] | None = None,
        handshake_timeout: float = 10.0,
    ) -> Self: ...
    @property
    def certfile(self) -> str:
        """The certificate chain file (PEM, the server's certificate first)."""
    @property
    def keyfile(self) -> str:
        """The private key file of the certificate (PEM: PKCS#8, PKCS#1 or SEC1)."""
    @property
    def cafile(self) -> str | None:
        """Client CAs (PEM): set, every client must present a certificate one of them
        signed (mutual TLS)."""
    @property
    def alpn_protocols(self) -> tuple[str, ...] | None:
        """The ALPN protocols offered, most preferred first."""
    @property
    def handshake_timeout(self) -> float:
        """Seconds a client has to finish its handshake, from its connect."""

@final
class TlsInfo:
    """What a TLS connection's handshake negotiated: ``Connection.tls``."""

    @property
    def version(self) -> Literal["TLSv1.2", "TLSv1.3"]:
        """As ``ssl.SSLSocket.version()`` says it."""
    @property
    def cipher(self) -> str:
        """The cipher suite's IANA name (``TLS_AES_256_GCM_SHA384``)."""
    @property
    def alpn_protocol(self) -> str | None:
        """The ALPN protocol agreed on (``ssl.SSLSocket.selected_alpn_protocol()``)."""
    @property
    def peer_certificate(self) -> bytes | None:
        """The client's certificate, DER (``getpeercert(binary_form=True)``), if it gave one."""

@final
class Connection:
    """One client connection of a protocol server, given to ``connection_made``.

    ``send``, ``close`` and ``abort`` may be called from any thread and never block.
    """

    @property
    def id(self) -> int:
        """The connection's id, unique among the server's connections for its life."""
    @property
    def peer(self) -> tuple[str, int] | str:
        """The client's ``(host, port)``; on a Unix domain socket the client's path,
        ``''`` if unnamed (as asyncio's ``get_extra_info("peername")``)."""
    @property
    def local(self) -> tuple[str, int] | str:
        """The server's ``(host, port)`` of this connection; on a Unix domain socket
        the server's socket path."""
    @property
    def server(self) -> Server:
        """The server this connection belongs to."""
    @property
    def tls(self) -> TlsInfo | None:
        """What the TLS handshake negotiated; None for plain TCP."""
    @property
    def closed(self) -> bool:
        """Whether the connection is closed or closing (``send`` raises ``ConnectionClosed``)."""
    @property
    def write_buffer_size(self) -> int:
        """Bytes queued for the client and not yet sent (as the worker last published
        them, plus pushes it has not taken yet); 0 once closed."""
    def send(self, payload: bytes | bytearray | memoryview, /) -> None:
        """Queue ``payload``, framed by the server's codec; ``ConnectionClosed`` once closed,
        ``FramingError`` if the codec cannot frame it."""
    def close(self) -> None:
        """Stop reading, send what is queued, then close. Idempotent."""
    def abort(self) -> None:
        """Close now, dropping queued output. Idempotent."""
    def drain(self) -> Coroutine[Any, Any, None]:
        """Await on an asyncio loop: returns at once unless the output passed
        ``high_water`` (paused, or sent past it and about to be), then once it falls to
        ``low_water``; ``ConnectionClosed`` if the connection is or gets closed."""
    @property
    def _paused(self) -> bool: ...
    @property
    def _above_high_water(self) -> bool: ...
    def _add_drain_waiter(self, waiter: Callable[[], object]) -> bool: ...
    @staticmethod
    def _send_each(items: list[Any], /) -> list[tuple[int, BaseException]]:
        """Queue each reply of ``[conn, payload, conn, payload, ...]`` (None: no reply), in
        order, one mailbox post and wake per worker; ``(k, exception)`` for each k-th pair
        not queued (that connection's later pairs are skipped)."""

@final
class Framing:
    """How a byte stream is cut into messages (and replies framed)."""

    @staticmethod
    def raw() -> Framing:
        """Each received chunk is a message."""
    @staticmethod
    def lines(delimiter: bytes = ...) -> Framing:
        """Messages end with ``delimiter`` (default ``b"\\n"``, 1 to 64 bytes, not in a message)."""
    @staticmethod
    def length_prefixed(width: int = 4, byteorder: str = "big") -> Framing:
        """Messages are preceded by their length: ``width`` 1, 2, 4 or 8 bytes, big or little."""
    @property
    def kind(self) -> Literal["raw", "lines", "length_prefixed"]:
        """The kind of framing."""
    def encode(self, payload: bytes) -> bytes:
        """The frame of one message; ``FramingError`` if it cannot be framed."""
    def decoder(self, max_frame: int = ...) -> Decoder:
        """A new streaming decoder for this framing."""
    def __eq__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class Decoder:
    """Cuts a byte stream, fed in chunks of any size, into whole messages."""

    def __new__(cls, framing: Framing | str, max_frame: int = ...) -> Decoder: ...
    def feed(self, data: bytes) -> list[bytes]:
        """The messages the next bytes of the stream complete; ``FrameTooLarge`` over the limit."""
    def finish(self) -> list[bytes]:
        """The stream ended: a last message without delimiter, or ``FramingError`` if cut short."""
    @property
    def buffered(self) -> int:
        """Bytes held waiting for the rest of a message."""
    @property
    def max_frame(self) -> int:
        """The payload limit."""

@disjoint_base
class Server:
    """A TCP message server (with ``path=``, on a Unix domain socket); a context manager
    that starts on enter and closes on exit.
    ``iocp_echo.Server`` subclasses it (``async with``, async callbacks)."""

    def __new__(
        cls,
        handler: Callable[[bytes], _Reply | Awaitable[_Reply]] | None = None,
        *,
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
    def start(self) -> None:
        """Bind and start the workers; ``OSError`` with the real errno if binding fails."""
    def serve_forever(self) -> None:
        """Serve until closed or interrupted; starts the server if needed."""
    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the server to stop; True if it stopped."""
    def close(self) -> None:
        """Drain, cancel in-flight operations, close sockets and join threads. Idempotent."""
    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` listened on, port 0 resolved; ``RuntimeError`` for a server
        on a Unix domain socket (see ``path``)."""
    @property
    def path(self) -> str | None:
        """The Unix domain socket's path (``path=``), or None for a TCP server."""
    @property
    def backend(self) -> Literal["io_uring", "epoll", "iocp"]:
        """The I/O backend the workers run."""
    @property
    def workers(self) -> int:
        """The number of worker threads."""
    @property
    def running(self) -> bool:
        """Whether the server is started and not closed."""
    def connections(self) -> list[Connection]:
        """A snapshot of a protocol server's open connections (from ``connection_made``
        until ``connection_lost``); always empty for a function handler or the native echo."""
    def broadcast(
        self,
        payload: bytes | bytearray | memoryview,
        /,
        *,
        exclude: Connection | int | Iterable[Connection | int] | None = None,
    ) -> int:
        """Queue ``payload``, framed once by the server's codec, on every open connection
        except those in ``exclude`` (a ``Connection`` or an id, or an iterable of them);
        one buffer shared by all receivers, never copied per connection. Returns the number
        of connections it was queued to (0 when not running or without a protocol);
        ``FramingError`` if the codec cannot frame it."""
    def stats(self) -> dict[str, Any]:
        """Counters summed over workers, plus ``backend``, ``workers`` and ``per_worker``;
        the handler-time histogram as ``handler_seconds_buckets`` (``(bound in seconds,
        calls that took at most that long)`` pairs, cumulative, 1 µs to 10 s),
        ``handler_seconds_sum`` (seconds) and ``handler_seconds_count`` (every call)."""
    def __enter__(self) -> Server: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool: ...

def resolve_backend(backend: str = "auto") -> Literal["io_uring", "epoll", "iocp"]:
    """The backend a server would run here (honouring ``IOCP_ECHO_BACKEND``)."""

def run_bench(
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    connections: int = 50,
    size: int = 64,
    duration: float | None = None,
    count: int | None = None,
    framing: str = "raw",
    threads: int = 1,
    warmup: float = 0.0,
    backend: str = "auto",
    progress: bool = False,
    tls_ca: str | PathLike[str] | None = None,
    tls_server_name: str | None = None,
    messages_per_connection: int | None = None,
) -> dict[str, Any]:
    """Run a closed-loop echo load against a server (the GIL released) and return its report.

    Each of ``connections`` sends one message of ``size`` payload bytes framed by ``framing``
    (``"raw"``, ``"lines"``, ``"length"``: 4-byte big-endian) and reads its echo back, byte
    checked, before the next; for ``duration`` seconds (10 if neither is given) or ``count``
    messages in all, after ``warmup`` unmeasured seconds. Keys: ``connections``, ``size``,
    ``framing``, ``messages``, ``errors``, ``seconds``, ``messages_per_s``, ``mb_per_s``,
    ``p50_us``, ``p99_us``, ``p999_us``, ``max_us``, ``mean_us``, ``connected``,
    ``connect_errors``, ``addr_not_available``, ``connect_error``, ``error``, ``host``,
    ``port``, ``backend``, ``threads``, ``notes`` (warnings) and ``summary`` (the text
    ``iocp-echo bench`` prints), and the TLS and reconnect figures (``connects``,
    ``connects_per_s``, ``handshakes``, ``handshakes_per_s``, ``tls_errors``,
    ``tls_server_name``, ``messages_per_connection``). ``tls_ca`` (a PEM file) makes the
    clients speak TLS, verifying the server against it and ``tls_server_name`` (default
    ``host``); ``messages_per_connection`` closes each connection after that many messages
    and opens a new one. ``ValueError`` for a bad argument (an unusable ``tls_ca`` too),
    ``OSError`` if the clients cannot run; connect failures (failed handshakes included)
    and wrong echoes are counted, not raised.
    """
