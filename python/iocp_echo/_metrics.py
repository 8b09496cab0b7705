"""Prometheus metrics for a server: what ``Server(..., metrics=(host, port))``,
``--metrics-port`` and the ``--processes`` parent ask for, checked before anything
starts.

The serving itself is ``iocp_echo._exposition``, on the ``prometheus-client``
library (the ``metrics`` extra: ``pip install 'iocp_echo[metrics]'``); it is imported
only here, when metrics are asked for, so a missing library is one clear
``ImportError`` then and costs nothing otherwise.

Rules: port 0 picks a free port (``Server.metrics_address`` says which); the port
and host are checked when asked for (``ValueError``/``TypeError``), the binding when
the server starts (``OSError`` naming the address). The metrics are read from the
stats at each scrape: nothing on the server's hot path changes.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._exposition import MetricsEndpoint, StatsSource

DEFAULT_HOST = "127.0.0.1"
"""Where ``--metrics-port`` serves unless ``--metrics-host`` says otherwise."""

INSTALL_HINT = "pip install 'iocp_echo[metrics]' (or: pip install prometheus-client)"


@dataclass(frozen=True)
class MetricsPlan:
    """Where to serve ``/metrics`` and which optional metrics the server has."""

    host: str
    port: int
    handler: bool
    """A handler or protocol is called: the handler-time histogram."""
    tls: bool
    """The server speaks TLS: handshakes and ``kind="tls"`` errors."""
    proxy: bool
    """The server reads PROXY protocol headers: ``kind="proxy"`` errors."""

    def start(self, stats: StatsSource) -> MetricsEndpoint:
        """Bind and serve on a thread, reading ``stats`` at each scrape;
        :class:`MetricsBindError` naming the address if it cannot bind."""
        from ._exposition import MetricsEndpoint, StatsCollector

        collector = StatsCollector(stats, handler=self.handler, tls=self.tls, proxy=self.proxy)
        try:
            return MetricsEndpoint(self.host, self.port, collector)
        except OSError as e:
            where = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
            raise MetricsBindError(
                e.errno, f"cannot serve metrics on {where}: {e.strerror or e}"
            ) from None


class MetricsBindError(OSError):
    """``/metrics`` cannot be served on the address asked for (taken, not this
    machine's, not a host name that resolves); ``strerror`` says which and why."""


def plan(metrics: object, *, handler: bool, options: Mapping[str, Any]) -> MetricsPlan:
    """``metrics=(host, port)`` of a server built with ``options`` checked:
    ``TypeError``/``ValueError`` for a bad address, ``ImportError`` (saying what to
    install) without the library."""
    if not isinstance(metrics, (tuple, list)) or len(metrics) != 2:
        raise TypeError(
            f"metrics must be a (host, port) pair, e.g. ('127.0.0.1', 9100), not {metrics!r}"
        )
    host, port = metrics
    if not isinstance(host, str) or not host:
        raise TypeError(f"metrics host must be a non-empty string, not {host!r}")
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"metrics port must be an int, not {type(port).__name__}")
    if not 0 <= port <= 65535:
        raise ValueError(f"metrics port must be 0 to 65535 (0: any free port), got {port}")
    require_library()
    return MetricsPlan(
        host=host,
        port=port,
        handler=handler,
        tls=options.get("tls") is not None or options.get("tls_cert") is not None,
        proxy=bool(options.get("proxy_protocol")),
    )


def require_library() -> None:
    """``ImportError`` saying what to install if ``prometheus-client`` is missing."""
    try:
        importlib.import_module("._exposition", __package__)
    except ImportError as e:
        if e.name is None or not e.name.startswith("prometheus_client"):
            raise
        raise ImportError(
            f"metrics need the prometheus-client package: {INSTALL_HINT}", name=e.name
        ) from e


def url(address: tuple[str, int]) -> str:
    """The address of ``/metrics`` as a URL."""
    host, port = address
    return f"http://[{host}]:{port}/metrics" if ":" in host else f"http://{host}:{port}/metrics"
