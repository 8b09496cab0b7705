"""A line-based chat server: one `Protocol` per client, a shared registry of nicknames.

Run it, then connect with a few terminals (``nc 127.0.0.1 7000``)::

    python examples/chat.py --port 7000

or from Python, with the framed client::

    >>> from iocp_echo import connect
    >>> alice = connect(("127.0.0.1", 7000), framing="lines")
    >>> alice.recv(), alice.request(b"alice")
    (b'nickname?', b'welcome alice; here: nobody')
    >>> alice.send(b"hello")  # every other member gets b"alice: hello"
    >>> alice.close()

The server asks each client for a nickname; the first line a client sends is it (an
empty or taken one is refused and the client disconnected). After that, every line a
client sends reaches every *other* client as ``nick: text``, and everyone hears
``* nick joined`` and ``* nick left``. Ctrl-C stops the server.

Callbacks run on the server's worker threads (several at once, for different clients),
so the registry is guarded by a lock; ``Connection.send`` may be called from any thread.
"""

from __future__ import annotations

import argparse
import threading

from iocp_echo import Connection, ConnectionClosed, Protocol, Server

# Every client that has chosen a nickname: nickname -> its connection.
_members: dict[bytes, Connection] = {}
_members_lock = threading.Lock()


def _tell_others(sender: bytes, line: bytes) -> None:
    """Send ``line`` to every member but ``sender``."""
    # Copy under the lock, send outside it: sends never block, but holding the lock
    # only as long as needed keeps other workers' joins and leaves moving.
    with _members_lock:
        others = [conn for nick, conn in _members.items() if nick != sender]
    for conn in others:
        try:
            conn.send(line)
        except ConnectionClosed:
            pass  # it is leaving right now; its connection_lost removes it


class ChatClient(Protocol):
    """One client's session: waiting for a nickname, then chatting."""

    def __init__(self) -> None:
        self.conn: Connection | None = None
        self.nick: bytes | None = None  # None until the client has joined

    def connection_made(self, conn: Connection) -> None:
        self.conn = conn
        # Everything this protocol says goes through conn.send, so a client's lines
        # arrive in the order they were sent (a returned reply takes another path).
        conn.send(b"nickname?")

    def message_received(self, message: bytes) -> None:
        assert self.conn is not None
        if self.nick is None:
            self._join(self.conn, message.strip())
        else:
            _tell_others(self.nick, self.nick + b": " + message.rstrip(b"\r"))

    def _join(self, conn: Connection, nick: bytes) -> None:
        refusal: bytes | None = None
        present: list[bytes] = []
        with _members_lock:  # check and claim in one step: two clients may race for a name
            if not nick:
                refusal = b"ERR empty nickname"
            elif nick in _members:
                refusal = b"ERR nickname taken: " + nick
            else:
                present = sorted(_members)
                _members[nick] = conn
        if refusal is not None:
            conn.send(refusal)
            conn.close()  # sends what is queued (the refusal), then closes
            return
        self.nick = nick
        conn.send(b"welcome " + nick + b"; here: " + (b", ".join(present) or b"nobody"))
        _tell_others(nick, b"* " + nick + b" joined")

    def connection_lost(self, exc: Exception | None) -> None:
        # Called once, last, however the client went (quit, reset, server closing).
        if self.nick is None:
            return
        with _members_lock:
            del _members[self.nick]
        _tell_others(self.nick, b"* " + self.nick + b" left")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7000, help="0 picks a free port")
    args = parser.parse_args()
    with Server(protocol=ChatClient, framing="lines", host=args.host, port=args.port) as srv:
        # Ctrl-C (KeyboardInterrupt) may come as soon as the server listens, even
        # during the print: leaving the `with` closes the server.
        try:
            host, port = srv.address
            print(
                f"iocp_echo listening on {host}:{port} "
                f"(backend {srv.backend}, {srv.workers} workers, chat)",
                flush=True,
            )
            srv.serve_forever()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
