"""The command line (`python -m iocp_echo`) and `serve()`, each run as a real process."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from client import run_clients
from helpers import Address, echo_of, framed
from iocp_echo import Framing
from server_process import FORCED, START_TIMEOUT, cli, running


def echo_check(address: Address, framing: Framing, reply: bytes = b"") -> None:
    """20 concurrent clients get their messages back (with ``reply`` appended, if given),
    written in random chunks (cut prefixes and delimiters); then one framed client does."""
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    delimiter = framing.encode(b"") if framing.kind == "lines" else b"\xff"
    talks = [
        [bytes(rng.choice(b"abcxyz") for _ in range(rng.randint(0, 300))) for _ in range(3)]
        for _ in range(20)
    ]
    assert all(delimiter not in m for t in talks for m in t)
    run_clients(
        address,
        framing,
        talks,
        seed=seed,
        reply=(lambda m: m.upper() + reply) if reply else (lambda m: m),
    )
    message = b"through the framed client"
    with framed(address, framing) as client:
        assert echo_of(client, message) == (message.upper() + reply if reply else message)


@pytest.mark.parametrize(
    ("options", "framing"),
    [
        (["--framing", "raw"], Framing.raw()),
        (["--framing", "lines"], Framing.lines()),
        (["--framing", "lines", "--delimiter", "\\r\\n"], Framing.lines(b"\r\n")),
        (["--framing", "length"], Framing.length_prefixed(4, "big")),
        (
            ["--framing", "length", "--length-width", "2", "--byteorder", "little"],
            Framing.length_prefixed(2, "little"),
        ),
    ],
    ids=["raw", "lines", "crlf", "length", "length-2-little"],
)
def test_cli_echoes_and_stops_on_sigint(options: list[str], framing: Framing) -> None:
    with running(cli(*options, "--workers", "2")) as server:
        assert server.address[0] == "127.0.0.1"
        assert server.address[1] > 0
        assert server.workers == 2
        if FORCED is not None:
            assert server.backend == FORCED
        echo_check(server.address, framing)
        code, stderr = server.stop(signal.SIGINT)
    assert code == 0, stderr
    assert "Traceback" not in stderr


def test_cli_stops_on_sigterm_with_open_connections() -> None:
    with running(cli("--framing", "lines")) as server:
        with socket.create_connection(server.address, timeout=30) as idle:
            idle.sendall(b"half a li")  # raw: a line left unfinished
            code, stderr = server.stop(signal.SIGTERM)
    assert code == 0, stderr
    assert "Traceback" not in stderr


def test_cli_handler_by_import_path(tmp_path: Path) -> None:
    (tmp_path / "shouting_handler.py").write_text(
        "def shout(message):\n    return message.upper() + b'!'\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    args = cli("--framing", "lines", "--handler", "shouting_handler:shout")
    with running(args, env=env) as server:
        echo_check(server.address, Framing.lines(), reply=b"!")
        code, stderr = server.stop(signal.SIGINT)
    assert code == 0, stderr


def run_to_exit(args: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=START_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail("the server kept running instead of refusing its options")


def assert_one_line_error(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode == 2, done
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("iocp-echo: error:"), lines[0]
    for word in words:
        assert word in lines[0]


def test_cli_busy_port_is_one_line_and_exit_2() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_to_exit([sys.executable, "-m", "iocp_echo", "--port", str(port)])
    assert_one_line_error(done, str(port), "in use")


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (["--framing", "bogus"], ["framing", "bogus"]),
        (["--port", "x"], ["port must be an integer", '"x"']),
        (["--port", "70000"], ["port"]),
        (["--workers", "0"], ["workers"]),
        (["--max-frame", "0"], ["max_frame"]),
        (["--idle-timeout", "-1"], ["idle_timeout"]),
        (["--framing", "length", "--length-width", "3"], ["--length-width", "3"]),
        (["--byteorder", "middle"], ["--byteorder", "middle"]),
        (["--framing", "lines", "--delimiter", ""], ["--delimiter"]),
        (["--backend", "bogus"], ["backend", "bogus"]),
        (["--high-water", "1000", "--low-water", "2000"], ["low_water", "high_water"]),
        (["--handler", "nosuchmodule:f"], ["nosuchmodule"]),
        (["--handler", "os"], ["MODULE:FUNCTION"]),
        (["--handler", "os:nosuchfunction"], ["nosuchfunction"]),
        (["--handler", "os:sep"], ["not callable"]),
        (["--no-such-option"], ["--no-such-option"]),
    ],
    ids=lambda v: " ".join(v) if v and v[0].startswith("--") else "",
)
def test_cli_bad_option_is_one_line_and_exit_2(options: list[str], words: list[str]) -> None:
    assert_one_line_error(run_to_exit(cli(*options)), *words)


# serve() with the address it picked printed, by wrapping the Server it builds.
SERVE = """
import sys, iocp_echo
Real = iocp_echo.Server
def announce(*args, **kwargs):
    srv = Real(*args, **kwargs)
    srv.start()
    host, port = srv.address
    print(f"iocp_echo listening on {host}:{port} (backend {srv.backend}, {srv.workers} workers)",
          flush=True)
    return srv
iocp_echo.Server = announce
iocp_echo.serve(lambda m: m.upper() + b"!", port=0, framing="lines")
print("serve returned", flush=True)
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serve_returns_on_a_signal(signum: int) -> None:
    with running([sys.executable, "-c", SERVE]) as server:
        echo_check(server.address, Framing.lines(), reply=b"!")
        code, stderr = server.stop(signum)
    assert code == 0, stderr
    assert "Traceback" not in stderr
    assert server.stdout == "serve returned\n"
