"""Server(protocol=Factory): per-connection callbacks in order, push, close, abort, faults."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from helpers import (
    Address,
    connect,
    enough_descriptors,
    framed,
    open_fds,
    recv_frames,
    recv_until_closed,
    wait_for,
)
from iocp_echo import Connection, ConnectionClosed, FrameTooLarge, Framing, Protocol, Server

LINES = Framing.lines()


class Journal:
    """What every connection's protocol was told, by connection id, in order."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: dict[int, list[Any]] = {}
        self.conns: dict[int, Connection] = {}

    def note(self, conn_id: int, *call: Any) -> None:
        with self.lock:
            self.calls.setdefault(conn_id, []).append(call)

    def lost(self) -> int:
        with self.lock:
            return sum(1 for calls in self.calls.values() if calls and calls[-1][0] == "lost")


def recording(journal: Journal, reply: Any = None) -> type[Protocol]:
    """A protocol class noting every callback in ``journal``; it numbers each
    connection's messages and replies ``b"<n>:<message>"`` (or ``reply(message)``)."""

    class Recorder(Protocol):
        def connection_made(self, conn: Connection) -> None:
            self.conn = conn
            self.count = 0
            with journal.lock:
                journal.conns[conn.id] = conn
            journal.note(conn.id, "made", threading.current_thread().name)

        def message_received(self, message: bytes) -> Any:
            self.count += 1
            journal.note(self.conn.id, "message", message)
            if reply is not None:
                return reply(message)
            return b"%d:%s" % (self.count, message)

        def connection_lost(self, exc: Exception | None) -> None:
            journal.note(self.conn.id, "lost", exc)

    return Recorder


@contextmanager
def running(factory: Any, framing: Framing = LINES, **options: Any) -> Iterator[Server]:
    with Server(protocol=factory, host="127.0.0.1", port=0, framing=framing, **options) as srv:
        yield srv


def send_lines(sock: socket.socket, *messages: bytes) -> None:
    sock.sendall(b"".join(LINES.encode(m) for m in messages))


def only_connection(journal: Journal) -> int:
    wait_for(lambda: len(journal.conns) == 1, "the connection to be made")
    (conn_id,) = journal.conns
    return conn_id


def test_callbacks_come_in_order_once_with_state_per_connection() -> None:
    journal = Journal()
    with running(recording(journal)) as srv:
        with framed(srv.address, LINES) as a, framed(srv.address, LINES) as b:
            a.send_many([b"x", b"y"])
            b.send(b"p")
            assert [a.recv(), a.recv()] == [b"1:x", b"2:y"]
            assert b.recv() == b"1:p"
            assert a.request(b"z") == b"3:z"
        wait_for(lambda: journal.lost() == 2, "connection_lost on both")
    for calls in journal.calls.values():
        assert calls[0][0] == "made" and calls[0][1] != threading.main_thread().name
        assert [c[0] for c in calls].count("made") == 1
        assert [c[0] for c in calls].count("lost") == 1
        assert calls[-1] == ("lost", None)
    messages = sorted(
        [c[1] for c in calls if c[0] == "message"] for calls in journal.calls.values()
    )
    assert messages == [[b"p"], [b"x", b"y", b"z"]]


def test_connection_knows_its_addresses_id_and_server() -> None:
    journal = Journal()
    with running(recording(journal)) as srv:
        with framed(srv.address, LINES) as client:
            conn = journal.conns[only_connection(journal)]
            assert conn.local == srv.address
            assert conn.peer == client.socket.getsockname()[:2]
            assert conn.server is srv
            assert isinstance(conn.id, int)
            assert not conn.closed
            assert "Connection" in repr(conn)


def test_send_from_another_thread_and_after_close() -> None:
    journal = Journal()
    with running(recording(journal)) as srv:
        with framed(srv.address, LINES) as client:
            conn = journal.conns[only_connection(journal)]

            def push() -> None:
                for n in range(100):
                    conn.send(b"push %d" % n)

            pusher = threading.Thread(target=push)
            pusher.start()
            pusher.join()
            assert [client.recv() for _ in range(100)] == [b"push %d" % n for n in range(100)]
            conn.send(bytearray(b"array"))
            conn.send(memoryview(b"view"))
            assert [client.recv(), client.recv()] == [b"array", b"view"]
        wait_for(lambda: journal.lost() == 1, "connection_lost")
        assert conn.closed
        with pytest.raises(ConnectionClosed):
            conn.send(b"late")
        assert issubclass(ConnectionClosed, ConnectionError)
        conn.close()  # idempotent, no error
        conn.abort()


def test_send_rejects_what_the_codec_cannot_frame_and_none() -> None:
    journal = Journal()
    with running(recording(journal)) as srv:
        with connect(srv.address):
            conn = journal.conns[only_connection(journal)]
            with pytest.raises(ValueError):
                conn.send(b"two\nlines")
            with pytest.raises(TypeError):
                conn.send(None)  # type: ignore[arg-type]
            with pytest.raises(TypeError):
                conn.send("text")  # type: ignore[arg-type]
            assert not conn.closed


def test_close_flushes_then_closes() -> None:
    journal = Journal()
    big = b"b" * (1 << 20)
    with running(recording(journal)) as srv:
        with connect(srv.address) as sock:
            conn = journal.conns[only_connection(journal)]
            for _ in range(8):
                conn.send(big)
            conn.close()
            assert conn.closed
            with pytest.raises(ConnectionClosed):
                conn.send(b"after close")
            received = recv_until_closed(sock)
            assert received == LINES.encode(big) * 8
        wait_for(lambda: journal.lost() == 1, "connection_lost")
    assert journal.calls[conn.id][-1] == ("lost", None)


def test_abort_drops_queued_output() -> None:
    journal = Journal()
    # Room for the 64 MiB pushed: the abort, not max_output, ends the connection.
    with running(recording(journal), LINES, max_output=128 << 20) as srv:
        with connect(srv.address) as sock:
            conn = journal.conns[only_connection(journal)]
            for _ in range(64):
                conn.send(b"a" * (1 << 20))
            conn.abort()
            assert conn.closed
            received = recv_until_closed(sock)
            assert len(received) < 64 * (1 << 20)
        wait_for(lambda: journal.lost() == 1, "connection_lost")
    assert [c[0] for c in journal.calls[conn.id]].count("lost") == 1


@pytest.mark.parametrize("fault", ["raises", "wrong_type"])
def test_a_failing_callback_closes_only_its_connection(
    fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    journal = Journal()

    def reply(message: bytes) -> Any:
        if message == b"bad":
            if fault == "raises":
                raise KeyError("boom")
            return 42
        return message

    with running(recording(journal, reply)) as srv, caplog.at_level(logging.ERROR, "iocp_echo"):
        # The bad one is raw: its end is awaited as it comes (EOF or reset).
        with connect(srv.address) as bad, framed(srv.address, LINES) as good:
            send_lines(bad, b"ok")
            assert recv_frames(bad, LINES, 1) == [b"ok"]
            send_lines(bad, b"bad", b"never seen")
            assert recv_until_closed(bad) == b""
            assert good.request(b"still") == b"still"
            wait_for(lambda: journal.lost() == 1, "connection_lost of the bad one")
        # The good one closes from its side before the server does: a clean close.
        wait_for(lambda: journal.lost() == 2, "connection_lost of the good one")
    assert "message_received failed" in caplog.text
    lost = [calls for calls in journal.calls.values() if calls[-1][0] == "lost"]
    failed = [calls for calls in lost if calls[-1][1] is not None]
    assert len(failed) == 1
    calls = failed[0]
    assert [c[0] for c in calls].count("lost") == 1
    assert (b"never seen") not in [c[1] for c in calls]
    exc = calls[-1][1]
    assert isinstance(exc, KeyError if fault == "raises" else TypeError)


def test_a_factory_that_raises_closes_that_connection(caplog: pytest.LogCaptureFixture) -> None:
    journal = Journal()
    recorder = recording(journal)
    made = []

    def factory() -> Protocol:
        made.append(1)
        if len(made) == 1:
            raise RuntimeError("no protocol today")
        return recorder()

    with running(factory) as srv, caplog.at_level(logging.ERROR, "iocp_echo"):
        with connect(srv.address) as first:
            assert recv_until_closed(first) == b""
        with framed(srv.address, LINES) as second:
            assert second.request(b"fine") == b"1:fine"
    assert "protocol factory failed" in caplog.text
    assert journal.lost() == 1


def test_connection_made_that_raises_gets_connection_lost_once() -> None:
    lost: list[Exception | None] = []

    class Broken(Protocol):
        def connection_made(self, conn: Connection) -> None:
            raise ValueError("cannot start")

        def connection_lost(self, exc: Exception | None) -> None:
            lost.append(exc)

    with running(Broken) as srv:
        with connect(srv.address) as sock:
            assert recv_until_closed(sock) == b""
        wait_for(lambda: len(lost) == 1, "connection_lost")
    assert len(lost) == 1 and isinstance(lost[0], ValueError)


def test_close_reasons_reach_connection_lost() -> None:
    journal = Journal()
    with running(recording(journal), max_frame=16) as srv:
        with connect(srv.address) as sock:
            sock.sendall(b"x" * 64)
            assert recv_until_closed(sock) == b""
        wait_for(lambda: journal.lost() == 1, "connection_lost")
        first = only_connection(journal)
        calls = journal.calls[first]
        assert isinstance(calls[-1][1], FrameTooLarge)
        second = connect(srv.address)
        wait_for(lambda: len(journal.conns) == 2, "the second connection")
    second.close()
    # Closed by the server while open: ConnectionAbortedError.
    assert journal.lost() == 2
    (second_id,) = set(journal.conns) - {first}
    second_calls = journal.calls[second_id]
    assert isinstance(second_calls[-1][1], ConnectionAbortedError)


def flow_recording(journal: Journal) -> type[Protocol]:
    """A recording protocol that also notes ``pause_writing`` and ``resume_writing``."""

    class FlowRecorder(recording(journal)):  # type: ignore[misc]
        def pause_writing(self) -> None:
            journal.note(self.conn.id, "pause")

        def resume_writing(self) -> None:
            journal.note(self.conn.id, "resume")

    return FlowRecorder


def flow_of(journal: Journal, conn_id: int) -> list[str]:
    """The ``pause``/``resume`` calls of one connection, in order."""
    return [c[0] for c in journal.calls[conn_id] if c[0] in ("pause", "resume")]


def test_pause_and_resume_writing_follow_the_water_marks() -> None:
    journal = Journal()
    chunk = b"p" * 4095
    count = 6_000  # 24 MiB: more than loopback's kernel buffers and high_water hold
    options = {"high_water": 64 << 10, "low_water": 16 << 10, "max_output": 64 << 20}
    with running(flow_recording(journal), LINES, **options) as srv:
        with framed(srv.address, LINES) as client:
            conn = journal.conns[only_connection(journal)]
            conn_id = conn.id
            for _ in range(count):
                conn.send(chunk)
            # While the client does not read, loopback's buffers (growing as the kernel
            # tunes them) may take some output meanwhile, and a pause may already have
            # been followed by a resume and another pause; but they cannot hold 24 MiB,
            # so once every chunk is queued the last word must be pause_writing.
            wait_for(lambda: flow_of(journal, conn_id)[-1:] == ["pause"], "pause_writing")
            assert conn.write_buffer_size > 64 << 10, "paused above high_water"
            assert [client.recv() for _ in range(count)] == [chunk] * count
            wait_for(lambda: ("resume",) in journal.calls[conn_id], "resume_writing")
            wait_for(lambda: conn.write_buffer_size == 0, "the output sent")
        wait_for(lambda: journal.lost() == 1, "connection_lost")
    assert conn.write_buffer_size == 0
    flow = flow_of(journal, conn_id)
    assert flow[:2] == ["pause", "resume"]
    assert all(a != b for a, b in zip(flow, flow[1:])), flow


def test_a_client_that_never_reads_is_closed_as_a_slow_consumer() -> None:
    journal = Journal()
    options = {"high_water": 64 << 10, "low_water": 16 << 10, "max_output": 1 << 20}
    offered = 16_384  # 64 MiB offered, far past what the kernel and max_output hold
    with running(recording(journal), LINES, **options) as srv:
        with connect(srv.address):
            conn = journal.conns[only_connection(journal)]
            pushed = 0
            with pytest.raises(ConnectionClosed):
                for _ in range(offered):
                    conn.send(b"s" * 4095)
                    pushed += 1
                wait_for(lambda: journal.lost() == 1, "connection_lost")
                conn.send(b"late")
            wait_for(lambda: journal.lost() == 1, "connection_lost")
        exc = journal.calls[conn.id][-1][1]
        assert isinstance(exc, ConnectionError) and "slow consumer" in str(exc), exc
        assert srv.stats()["slow_consumer_closes"] == 1


def test_connections_lists_the_open_connections() -> None:
    journal = Journal()
    with running(recording(journal)) as srv:
        assert srv.connections() == []
        with connect(srv.address) as a, connect(srv.address) as b:
            wait_for(lambda: len(srv.connections()) == 2, "two connections listed")
            listed = {conn.peer: conn for conn in srv.connections()}
            assert set(listed) == {a.getsockname(), b.getsockname()}
            assert all(isinstance(c, Connection) and not c.closed for c in listed.values())
            b.close()
            wait_for(lambda: len(srv.connections()) == 1, "the closed one gone")
            (left,) = srv.connections()
            assert left.peer == a.getsockname()
        wait_for(lambda: srv.connections() == [], "none left")
    with Server(lambda m: m, host="127.0.0.1", port=0, framing=LINES) as plain:
        with connect(plain.address):
            assert plain.connections() == []


def test_handler_and_protocol_together_are_a_type_error() -> None:
    with pytest.raises(TypeError, match="not both"):
        Server(lambda m: m, protocol=Protocol)
    with pytest.raises(TypeError, match="protocol must be callable"):
        Server(protocol=42)  # type: ignore[arg-type]


def test_the_base_protocol_does_nothing() -> None:
    with running(Protocol) as srv, connect(srv.address) as sock:
        send_lines(sock, b"ignored")
        sock.shutdown(socket.SHUT_WR)
        assert recv_until_closed(sock) == b""


def test_server_close_with_1000_connections_loses_each_once() -> None:
    count = 1000
    enough_descriptors(count)
    journal = Journal()
    fds = open_fds()
    socks: list[socket.socket] = []
    srv = Server(protocol=recording(journal), host="127.0.0.1", port=0, framing=LINES, workers=2)
    srv.start()
    address: Address = srv.address
    try:
        for _ in range(count):
            socks.append(connect(address))
        wait_for(lambda: len(journal.conns) == count, "every connection made")
        srv.close()
        assert journal.lost() == count
        for calls in journal.calls.values():
            assert [c[0] for c in calls] == ["made", "lost"]
            assert isinstance(calls[-1][1], ConnectionAbortedError)
        assert all(conn.closed for conn in journal.conns.values())
    finally:
        for sock in socks:
            sock.close()
        srv.close()
    assert open_fds() == fds


def test_cli_refuses_handler_with_protocol(capsys: pytest.CaptureFixture[str]) -> None:
    from iocp_echo.__main__ import main

    with pytest.raises(SystemExit):
        main(["--handler", "json:dumps", "--protocol", "iocp_echo:Protocol", "--port", "0"])
    assert "--protocol" in capsys.readouterr().err
