"""A publish/subscribe hub over length-prefixed frames (a 4-byte big-endian length, then
the payload): one `Protocol` per client, a shared table of topics.

Run it::

    python examples/pubsub.py --port 7001

and talk to it with the framed client, which frames and unframes for you::

    >>> from iocp_echo import connect
    >>> sub = connect(("127.0.0.1", 7001), framing="length")
    >>> pub = connect(("127.0.0.1", 7001), framing="length")
    >>> sub.request(b"SUB news"), pub.request(b"PUB news hello"), sub.recv()
    (b'OK', b'OK 1', b'news hello')
    >>> sub.close(), pub.close()
    (None, None)

Each frame a client sends is one command; each answer is one frame:

* ``SUB topic``: subscribe to ``topic``; answers ``OK``.
* ``UNSUB topic``: unsubscribe (no error if not subscribed); answers ``OK``.
* ``PUB topic payload``: every subscriber of ``topic`` (the publisher too, if subscribed)
  gets the frame ``topic payload``; the publisher is answered ``OK n``, ``n`` the number
  of subscribers it reached. The payload is every byte after the second space, any bytes.
* Anything else is answered ``ERR ...``; the connection stays open.

Ctrl-C stops the server. Callbacks run on the server's worker threads (several at once,
for different clients), so the topic table is guarded by a lock; ``Connection.send`` may
be called from any thread.
"""

from __future__ import annotations

import argparse
import threading

from iocp_echo import Connection, ConnectionClosed, Framing, Protocol, Server

# topic -> {connection id -> connection} of its subscribers.
_topics: dict[bytes, dict[int, Connection]] = {}
_topics_lock = threading.Lock()


def publish(topic: bytes, payload: bytes) -> int:
    """Send ``topic payload`` to every subscriber of ``topic``; how many it reached."""
    with _topics_lock:  # copy under the lock, send outside it
        subscribers = list(_topics.get(topic, {}).values())
    frame = topic + b" " + payload
    reached = 0
    for conn in subscribers:
        try:
            conn.send(frame)
            reached += 1
        except ConnectionClosed:
            pass  # it is leaving right now; its connection_lost unsubscribes it
    return reached


class Subscriber(Protocol):
    """One client: the topics it subscribed to, and its commands."""

    def __init__(self) -> None:
        self.conn: Connection | None = None
        self.topics: set[bytes] = set()  # to unsubscribe it when it leaves

    def connection_made(self, conn: Connection) -> None:
        self.conn = conn

    def message_received(self, message: bytes) -> None:
        assert self.conn is not None
        # Answers go through conn.send, like the deliveries: a publisher subscribed to
        # its own topic gets its copy before its "OK n" (a returned reply would take
        # another path, in no promised order with pushes).
        self.conn.send(self.command(self.conn, message))

    def command(self, conn: Connection, message: bytes) -> bytes:
        """Carry out one command; its answer."""
        verb, _, rest = message.partition(b" ")
        if verb == b"PUB":
            topic, space, payload = rest.partition(b" ")
            if not topic or not space:
                return b"ERR usage: PUB topic payload"
            return b"OK %d" % publish(topic, payload)
        if verb in (b"SUB", b"UNSUB"):
            topic = rest
            if not topic or b" " in topic:
                return b"ERR usage: " + verb + b" topic"
            with _topics_lock:
                if verb == b"SUB":
                    _topics.setdefault(topic, {})[conn.id] = conn
                    self.topics.add(topic)
                elif topic in self.topics:
                    self._unsubscribe(conn, topic)
            return b"OK"
        return b"ERR unknown command: " + verb[:32]

    def _unsubscribe(self, conn: Connection, topic: bytes) -> None:
        """Remove ``conn`` from ``topic`` (the lock held); forget empty topics."""
        self.topics.discard(topic)
        subscribers = _topics[topic]
        del subscribers[conn.id]
        if not subscribers:
            del _topics[topic]

    def connection_lost(self, exc: Exception | None) -> None:
        # Called once, last, however the client went.
        assert self.conn is not None
        with _topics_lock:
            for topic in list(self.topics):
                self._unsubscribe(self.conn, topic)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7001, help="0 picks a free port")
    args = parser.parse_args()
    framing = Framing.length_prefixed(4)  # 4-byte big-endian length before each frame
    with Server(protocol=Subscriber, framing=framing, host=args.host, port=args.port) as srv:
        # Ctrl-C (KeyboardInterrupt) may come as soon as the server listens, even
        # during the print: leaving the `with` closes the server.
        try:
            host, port = srv.address
            print(
                f"iocp_echo listening on {host}:{port} "
                f"(backend {srv.backend}, {srv.workers} workers, pubsub)",
                flush=True,
            )
            srv.serve_forever()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
