"""PROXY protocol (``proxy_protocol=True``): ``conn.peer`` is the client the header names,
through the protocol API, for v1 and v2, IPv4 and IPv6; LOCAL keeps the real peer; a bad or
untrusted header closes only its connection (counted in ``proxy_errors``); the options on
``Server`` and both command lines."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import threading
from typing import Any

import pytest
from helpers import EXTERNAL, EXTERNAL_SKIP, connect, recv_frames, recv_until_closed, wait_stats
from iocp_echo import Connection, Framing, Protocol, Server
from server_process import START_TIMEOUT, cli, running

pytestmark = pytest.mark.skipif(EXTERNAL is not None, reason=EXTERNAL_SKIP)

LINES = Framing.lines()
SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(host: str, port: int) -> bytes:
    family = "TCP6" if ":" in host else "TCP4"
    other = "2001:db8::2" if family == "TCP6" else "198.51.100.7"
    return f"PROXY {family} {host} {other} {port} 443\r\n".encode()


def v2(host: str, port: int) -> bytes:
    if ":" in host:
        body = socket.inet_pton(socket.AF_INET6, host) + socket.inet_pton(
            socket.AF_INET6, "2001:db8::2"
        )
        fam = 0x21
    else:
        body = socket.inet_aton(host) + socket.inet_aton("198.51.100.7")
        fam = 0x11
    body += struct.pack("!HH", port, 443)
    return SIGNATURE + bytes([0x21, fam]) + struct.pack("!H", len(body)) + body


V2_LOCAL = SIGNATURE + bytes([0x20, 0x00, 0x00, 0x00])


class Peers:
    """The peer each connection's protocol saw, in order."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: list[tuple[str, int] | str] = []

    def protocol(self) -> type[Protocol]:
        peers = self

        class Noting(Protocol):
            def connection_made(self, conn: Connection) -> None:
                with peers.lock:
                    peers.seen.append(conn.peer)

            def message_received(self, message: bytes) -> Any:
                return message

        return Noting


# Raw sockets throughout: a PROXY header, which a framed client cannot send, goes in the
# same write as the first messages.
@pytest.mark.parametrize("make", [v1, v2], ids=["v1", "v2"])
@pytest.mark.parametrize(
    ("host", "port"), [("192.0.2.1", 40000), ("2001:db8::1", 5555)], ids=["ipv4", "ipv6"]
)
def test_conn_peer_is_the_client_the_header_names(make: Any, host: str, port: int) -> None:
    peers = Peers()
    with Server(protocol=peers.protocol(), port=0, framing=LINES, proxy_protocol=True) as srv:
        with connect(srv.address) as sock:
            sock.sendall(make(host, port) + b"hello\n")
            assert recv_frames(sock, LINES, 1) == [b"hello"]
        assert peers.seen == [(host, port)]
        assert srv.stats()["proxy_errors"] == 0


def test_a_function_handler_echoes_behind_a_header() -> None:
    def upper(message: bytes) -> bytes:
        return message.upper()

    with Server(upper, port=0, framing=LINES, proxy_protocol=True) as srv:
        with connect(srv.address) as sock:
            sock.sendall(v2("2001:db8::9", 9) + b"one\ntwo\n")
            assert recv_frames(sock, LINES, 2) == [b"ONE", b"TWO"]


def test_local_keeps_the_real_peer() -> None:
    peers = Peers()
    with Server(protocol=peers.protocol(), port=0, framing=LINES, proxy_protocol=True) as srv:
        with connect(srv.address) as sock:
            sock.sendall(V2_LOCAL + b"hi\n")
            assert recv_frames(sock, LINES, 1) == [b"hi"]
            assert peers.seen == [sock.getsockname()[:2]]


@pytest.mark.parametrize(
    "first", [b"hello\n", b"PROXY TCP4 nowhere\r\n", b"PROXY UNKNOWN " + b"x" * 200]
)
def test_a_bad_header_closes_only_its_connection(first: bytes) -> None:
    peers = Peers()
    with Server(protocol=peers.protocol(), port=0, framing=LINES, proxy_protocol=True) as srv:
        with connect(srv.address) as good:
            good.sendall(v1("192.0.2.1", 1) + b"a\n")
            assert recv_frames(good, LINES, 1) == [b"a"]
            with connect(srv.address) as bad:
                bad.sendall(first)
                assert recv_until_closed(bad) == b""
            wait_stats(srv, "the bad header counted", lambda s: s["proxy_errors"] == 1)
            good.sendall(b"b\n")
            assert recv_frames(good, LINES, 1) == [b"b"]
        assert peers.seen == [("192.0.2.1", 1)]


def test_a_peer_outside_trusted_proxies_is_closed() -> None:
    with Server(port=0, proxy_protocol=True, trusted_proxies=["10.0.0.0/8"]) as srv:
        with connect(srv.address) as sock:
            sock.sendall(v1("192.0.2.1", 1) + b"x")
            assert recv_until_closed(sock) == b""
        wait_stats(srv, "the untrusted peer counted", lambda s: s["proxy_errors"] == 1)


def test_the_options_take_a_bool_and_cidrs() -> None:
    Server(proxy_protocol=True, trusted_proxies="10.0.0.0/8, 192.168.1.7")
    Server(proxy_protocol=False, trusted_proxies=["::1/128", "fd00::/8"])
    with pytest.raises(ValueError) as raised:
        Server(proxy_protocol=True, trusted_proxies=["10.0.0.0/8", "10.0.0.0/40"])
    assert str(raised.value) == (
        "trusted_proxies must be networks in CIDR notation (10.0.0.0/8, ::1/128) "
        'separated by commas, got "10.0.0.0/40"'
    )
    with pytest.raises(ValueError, match="proxy_protocol must be true or false"):
        Server(proxy_protocol="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="proxy_protocol must be a bool"):
        Server(proxy_protocol=[True])  # type: ignore[arg-type]


def test_the_command_line_takes_the_flags() -> None:
    args = cli("--proxy-protocol", "--trusted-proxies", "127.0.0.0/8,::1/128")
    with running(args) as server:
        with connect(server.address) as sock:
            sock.sendall(v2("203.0.113.5", 7) + b"echoed")
            got = b""
            while len(got) < 6:
                chunk = sock.recv(64)
                assert chunk
                got += chunk
            assert got == b"echoed"
        with connect(server.address) as sock:
            sock.sendall(b"no header")
            assert recv_until_closed(sock) == b""


def test_the_command_line_refuses_a_bad_cidr_in_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "iocp_echo", "--proxy-protocol", "--trusted-proxies", "10.0.0/8"],
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == (
        "iocp-echo: error: trusted_proxies must be networks in CIDR notation "
        '(10.0.0.0/8, ::1/128) separated by commas, got "10.0.0/8"\n'
    )
