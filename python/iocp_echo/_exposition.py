"""``/metrics`` through the ``prometheus-client`` library: a collector that reads a
server's stats at each scrape and turns them into metric families, and the library's
HTTP server on a thread of its own, stopped and joined by :meth:`MetricsEndpoint.close`.

Imported only when metrics are asked for (``iocp_echo._metrics`` imports it), so
the package needs the library only then (the ``metrics`` extra).

Rules: nothing is counted here; every value is read from the stats at scrape time
(``Server.stats()``, or the children's stats summed by the ``--processes`` parent), so
``/metrics`` and ``stats()`` never disagree. A scrape while the server is not running
finds no stats and gives no ``iocp_echo_`` metrics.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any, Callable, Optional

from prometheus_client import start_http_server
from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

PREFIX = "iocp_echo_"

StatsSource = Callable[[], Optional[Mapping[str, Any]]]
"""What the collector reads at each scrape: the stats, or None while there are none."""

COUNTERS = [
    ("connections_accepted", "connections_accepted", "Connections accepted."),
    ("connections_closed", "connections_closed", "Connections closed, for any reason."),
    (
        "connections_rejected",
        "connections_rejected",
        "Connections refused at once because max_connections were open.",
    ),
    ("received_bytes", "bytes_received", "Bytes received from clients."),
    ("sent_bytes", "bytes_sent", "Bytes sent to clients."),
    ("received_frames", "frames_received", "Complete frames (messages) received."),
    ("sent_frames", "frames_sent", "Replies queued for sending."),
    (
        "backpressure_pauses",
        "backpressure_pauses",
        "Times a connection stopped reading because its output passed high_water.",
    ),
]
"""Each counter: its name after the prefix (``_total`` is added), its stats key, its help."""

ERROR_KINDS = [
    ("accept", "accept_errors"),
    ("io", "io_errors"),
    ("frame", "frame_errors"),
    ("handler", "handler_errors"),
    ("slow_consumer", "slow_consumer_closes"),
    ("idle_timeout", "idle_timeouts"),
]
"""The ``kind`` label of ``iocp_echo_errors_total`` and the stats key it reads;
``tls`` and ``proxy`` follow when the server speaks TLS or the PROXY protocol."""


class StatsCollector(Collector):
    """Metric families made from the stats at each scrape."""

    def __init__(self, stats: StatsSource, *, handler: bool, tls: bool, proxy: bool) -> None:
        self._stats = stats
        self._handler = handler
        self._tls = tls
        self._proxy = proxy

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        if not stats:
            return
        yield InfoMetricFamily(
            PREFIX + "server", "The server's I/O backend.", value={"backend": stats["backend"]}
        )
        yield GaugeMetricFamily(PREFIX + "workers", "Worker threads.", value=stats["workers"])
        yield GaugeMetricFamily(
            PREFIX + "connections_open", "Connections open now.", value=stats["connections_open"]
        )
        for name, key, text in COUNTERS:
            yield CounterMetricFamily(PREFIX + name, text, value=stats[key])
        errors = CounterMetricFamily(
            PREFIX + "errors",
            "Connections closed for an error, by kind (accept: accepts that failed).",
            labels=["kind"],
        )
        kinds = list(ERROR_KINDS)
        if self._tls:
            kinds.append(("tls", "tls_errors"))
        if self._proxy:
            kinds.append(("proxy", "proxy_errors"))
        for kind, key in kinds:
            errors.add_metric([kind], stats[key])
        yield errors
        if self._tls:
            yield CounterMetricFamily(
                PREFIX + "tls_handshakes", "TLS handshakes finished.", value=stats["tls_handshakes"]
            )
        if self._handler:
            yield _handler_seconds(stats)


def _handler_seconds(stats: Mapping[str, Any]) -> HistogramMetricFamily:
    """The handler-time histogram, as ``stats()`` gives it."""
    count = stats["handler_seconds_count"]
    # Each bound as Python writes a float (1e-05, 0.25, 1.0), which Prometheus reads.
    buckets = [(repr(float(le)), n) for le, n in stats["handler_seconds_buckets"]]
    buckets.append(("+Inf", count))
    return HistogramMetricFamily(
        PREFIX + "handler_seconds",
        "Time of each handler call on a worker thread: one call takes every message "
        "(and protocol event) its worker read in one turn; for async handlers, making "
        "the coroutines and handing them to the asyncio loop, not their run.",
        buckets=buckets,
        sum_value=stats["handler_seconds_sum"],
    )


class MetricsEndpoint:
    """``/metrics`` (any path, as the library serves it) on ``(host, port)``, served
    by the library's HTTP server on its own daemon thread, until :meth:`close`;
    ``OSError`` if it cannot bind."""

    def __init__(self, host: str, port: int, collector: StatsCollector) -> None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(collector)
        self._httpd, self._thread = start_http_server(port, addr=host, registry=registry)
        self._thread.name = "iocp_echo-metrics"
        bound = self._httpd.server_address
        self.address: tuple[str, int] = (str(bound[0]), int(bound[1]))
        self._closed = False
        self._lock = threading.Lock()

    @property
    def thread(self) -> threading.Thread:
        """The thread serving requests (for tests: gone after :meth:`close`)."""
        return self._thread

    def close(self) -> None:
        """Stop serving, close the listening socket and join the thread. Idempotent.

        Called on the serving thread itself (a collected server's finalizer runs
        wherever its last reference went, which may be a scrape's), it hands the
        close to a thread of its own: the serving thread cannot wait for itself."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if threading.current_thread() is self._thread:
            threading.Thread(target=self._shut, name="iocp_echo-metrics-close").start()
        else:
            self._shut()

    def _shut(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()
