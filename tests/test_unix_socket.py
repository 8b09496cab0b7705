"""The server on a Unix domain socket (``Server(path=...)``, ``--unix PATH``; Linux only).

Echo in every framing, natively, through a function handler and a protocol (whose
``conn.peer`` / ``conn.local`` are what asyncio's ``get_extra_info`` gives); the socket
file's life (a stale socket replaced, a regular file left untouched, a live server's path
refused, the file removed on close); ``path`` with ``host``/``port`` refused; TLS; the
Python and Rust command lines.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import echo_of, framed, wait_for
from iocp_echo import Client, Connection, Framing, Protocol, Server
from server_process import START_TIMEOUT, STOP_TIMEOUT, read_line
from test_options import python_cli, rust_cli
from tls_client import server_tls, tls_framed

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="Unix sockets: Linux only")

LINES = Framing.lines()
FRAMINGS = {
    "raw": Framing.raw(),
    "lines": LINES,
    "length": Framing.length_prefixed(4, "big"),
}


@pytest.fixture
def folder() -> Iterator[Path]:
    """A short temporary folder (a socket path is at most 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="iocp-unix-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def connect(path: Path | str, bind: Path | None = None) -> socket.socket:
    """A blocking AF_UNIX client of ``path``; bound to ``bind`` first if given (named)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    if bind is not None:
        sock.bind(str(bind))
    sock.connect(str(path))
    return sock


def echoes(client: Client, reply: Callable[[bytes], bytes]) -> None:
    """Messages small and large come back as ``reply`` makes them (raw: read by length)."""
    for message in [b"x", b"hello", bytes(range(1, 10)) * 5000]:
        assert echo_of(client, message) == reply(message)


@pytest.mark.parametrize("name", FRAMINGS)
def test_native_echo_in_every_framing(folder: Path, name: str) -> None:
    path = folder / "echo.sock"
    with Server(None, path=str(path), framing=FRAMINGS[name], workers=2) as srv:
        assert srv.path == str(path)
        with pytest.raises(RuntimeError, match="Unix domain socket"):
            _ = srv.address
        clients = [framed(str(path), FRAMINGS[name]) for _ in range(3)]
        for client in clients:
            echoes(client, lambda m: m)
        for client in clients:
            client.close()
    assert not path.exists()


@pytest.mark.parametrize("name", ["lines", "length"])
def test_function_handler(folder: Path, name: str) -> None:
    path = folder / "handler.sock"
    with Server(bytes.upper, path=path, framing=FRAMINGS[name]), framed(str(path), name) as c:
        echoes(c, bytes.upper)


def asyncio_addresses(path: Path, client: Path) -> list[tuple[Any, Any]]:
    """What asyncio's ``get_extra_info("peername"/"sockname")`` gives on the server side
    for an unnamed client, then one bound to ``client``."""
    seen: list[tuple[Any, Any]] = []

    async def main() -> None:
        def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen.append((writer.get_extra_info("peername"), writer.get_extra_info("sockname")))
            writer.close()

        server = await asyncio.start_unix_server(on_client, path=str(path))
        async with server:
            for bind in (None, client):
                sock = await asyncio.to_thread(connect, path, bind)
                await asyncio.to_thread(sock.recv, 1)
                sock.close()
        os.unlink(client)

    asyncio.run(main())
    os.unlink(path)
    return seen


def test_protocol_sees_the_paths_asyncio_gives(folder: Path) -> None:
    path, client = folder / "proto.sock", folder / "client.sock"
    expected = asyncio_addresses(path, client)
    assert expected == [("", str(path)), (str(client), str(path))]
    seen: list[tuple[Any, Any]] = []

    class Addresses(Protocol):
        def connection_made(self, conn: Connection) -> None:
            seen.append((conn.peer, conn.local))

        def message_received(self, message: bytes) -> bytes:
            return message

    with Server(protocol=Addresses, path=path, framing=LINES) as srv:
        with framed(str(path), LINES) as unnamed:
            echoes(unnamed, lambda m: m)
        with Client(connect(path, bind=client), LINES) as named:
            echoes(named, lambda m: m)
        wait_for(lambda: srv.stats()["connections_open"] == 0, "both connections to close")
    assert seen == expected


def test_a_stale_socket_is_replaced(folder: Path) -> None:
    path = folder / "stale.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens
    with Server(None, path=path, framing=LINES), framed(str(path), LINES) as client:
        echoes(client, lambda m: m)
    assert not path.exists()


def test_a_regular_file_is_left_untouched_and_named(folder: Path) -> None:
    path = folder / "precious.txt"
    path.write_bytes(b"precious")
    srv = Server(None, path=path)
    with pytest.raises(FileExistsError) as raised:
        srv.start()
    assert raised.value.filename == str(path)
    assert str(path) in str(raised.value) and "not a socket" in str(raised.value)
    assert path.read_bytes() == b"precious"
    with pytest.raises(FileExistsError):
        Server(None, path=folder).start()  # a directory
    assert folder.is_dir()


def test_a_live_servers_path_is_refused(folder: Path) -> None:
    path = folder / "live.sock"
    with Server(None, path=path, framing=LINES) as first:
        with pytest.raises(OSError) as raised:
            Server(None, path=path).start()
        assert raised.value.errno == errno.EADDRINUSE
        assert raised.value.filename == str(path)
        with framed(str(path), LINES) as client:
            echoes(client, lambda m: m)
        assert first.stats()["connections_accepted"] >= 1
    assert not path.exists()


def test_the_file_is_removed_on_close_only_if_still_ours(folder: Path) -> None:
    path = folder / "close.sock"
    srv = Server(None, path=path)
    srv.start()
    assert path.is_socket()
    srv.close()
    assert not path.exists()
    srv = Server(None, path=path)
    srv.start()
    path.unlink()
    theirs = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    theirs.bind(str(path))
    srv.close()
    assert path.is_socket()
    theirs.close()


@pytest.mark.parametrize("other", [{"host": "127.0.0.1"}, {"port": 0}])
def test_path_excludes_host_and_port(other: dict[str, Any]) -> None:
    (name,) = other
    message = (
        f"path cannot be given with {name}: a server listens on a Unix socket or on TCP, not both"
    )
    with pytest.raises(ValueError) as raised:
        Server(None, path="/tmp/x.sock", **other)
    assert str(raised.value) == message


def test_tls_over_a_unix_socket(folder: Path) -> None:
    path = folder / "tls.sock"
    with Server(None, path=path, framing=LINES, tls=server_tls()) as srv:
        with tls_framed(str(path), LINES) as client:
            assert client.request(b"secret") == b"secret"
        wait_for(lambda: srv.stats()["tls_handshakes"] == 1, "the handshake to count")


@pytest.mark.parametrize("cli", [python_cli, rust_cli], ids=["python -m iocp_echo", "iocp-echo"])
def test_cli_serves_a_unix_socket_and_removes_it(cli: Any, folder: Path) -> None:
    path = folder / "cli.sock"
    args = cli("--unix", str(path), "--framing", "lines", "--workers", "2")
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            line = read_line(proc, START_TIMEOUT)
            assert line.startswith(f"iocp_echo listening on {path} (backend "), line
            with framed(str(path), LINES) as client:
                echoes(client, lambda m: m)
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=STOP_TIMEOUT) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    assert not path.exists()


@pytest.mark.parametrize("cli", [python_cli, rust_cli], ids=["python -m iocp_echo", "iocp-echo"])
def test_cli_refuses_a_regular_file_naming_it(cli: Any, folder: Path) -> None:
    path = folder / "precious.txt"
    path.write_bytes(b"precious")
    done = subprocess.run(
        cli("--unix", str(path)), capture_output=True, text=True, timeout=START_TIMEOUT
    )
    assert done.returncode != 0
    assert str(path) in done.stderr and "not a socket" in done.stderr, done.stderr
    assert path.read_bytes() == b"precious"
