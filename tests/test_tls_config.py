"""`TlsConfig`: its arguments checked and its files read at construction, with errors
naming the argument or the file; the same files refused by ``python -m iocp_echo`` in one
line (exit code 2); ``Server(tls=...)`` and the ``tls_*`` keywords are one or the other.

An unreadable file is a directory's path: reading it fails for root too (``chmod 000``
does not stop root).
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from iocp_echo import Server, TlsConfig
from server_process import START_TIMEOUT
from tls_client import CERTS, client_context, server_tls, tls_framed

CERT = CERTS / "server.pem"
KEY = CERTS / "server.key"


def test_a_config_shows_what_it_was_given() -> None:
    tls = TlsConfig(
        str(CERT), KEY, cafile=CERTS / "ca.pem", alpn_protocols=["h2"], handshake_timeout=2
    )
    assert (tls.certfile, tls.keyfile, tls.cafile) == (str(CERT), str(KEY), str(CERTS / "ca.pem"))
    assert tls.alpn_protocols == ("h2",)
    assert tls.handshake_timeout == 2.0
    assert repr(tls).startswith(f"TlsConfig(certfile={str(CERT)!r}, keyfile=")
    plain = server_tls()
    assert (plain.cafile, plain.alpn_protocols, plain.handshake_timeout) == (None, None, 10.0)


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"certfile": None}, TypeError, "certfile must be a path"),
        ({"keyfile": 3}, TypeError, "keyfile must be a path"),
        ({"cafile": b"\0"}, TypeError, "cafile must be a path"),
        ({"alpn_protocols": [1]}, TypeError, "alpn_protocols must be a list of str"),
        ({"alpn_protocols": ["h2", ""]}, ValueError, "alpn_protocols must be protocol names"),
        ({"alpn_protocols": ["x" * 256]}, ValueError, "alpn_protocols must be protocol names"),
        ({"handshake_timeout": "5"}, TypeError, "handshake_timeout must be a number of seconds"),
        ({"handshake_timeout": 0}, ValueError, "handshake_timeout must be a positive number"),
        ({"handshake_timeout": -1.5}, ValueError, "handshake_timeout must be a positive number"),
        ({"handshake_timeout": math.nan}, ValueError, "handshake_timeout must be a positive"),
        ({"handshake_timeout": math.inf}, ValueError, "handshake_timeout must be at most"),
    ],
)
def test_bad_arguments_are_refused_naming_the_argument(
    arguments: dict[str, Any], error: type[Exception], message: str
) -> None:
    given: dict[str, Any] = {"certfile": CERT, "keyfile": KEY, **arguments}
    with pytest.raises(error, match=message):
        TlsConfig(**given)


def bad_files(tmp_path: Path) -> list[tuple[dict[str, Path], type[Exception], Path]]:
    """``TlsConfig`` arguments each with one file that cannot be used, the error it gets and
    the file it names."""
    missing = tmp_path / "missing.pem"
    directory = tmp_path / "a-directory.pem"
    directory.mkdir()
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    stranger_key = CERTS / "client.key"
    return [
        ({"certfile": missing}, FileNotFoundError, missing),
        ({"keyfile": directory}, IsADirectoryError, directory),
        ({"certfile": junk}, ValueError, junk),
        ({"keyfile": junk}, ValueError, junk),
        ({"cafile": junk}, ValueError, junk),
        ({"keyfile": stranger_key}, ValueError, stranger_key),
    ]


def test_bad_files_are_refused_naming_the_file(tmp_path: Path) -> None:
    for files, error, named in bad_files(tmp_path):
        given: dict[str, Any] = {"certfile": CERT, "keyfile": KEY, **files}
        with pytest.raises(error) as raised:
            TlsConfig(**given)
        if isinstance(raised.value, OSError):
            assert raised.value.filename == str(named)
        else:
            assert str(named) in str(raised.value)
            assert str(raised.value).startswith(f"{next(iter(files))}: "), raised.value
    with pytest.raises(ValueError, match="does not match the certificate"):
        TlsConfig(CERT, CERTS / "client.key")


def test_the_command_line_refuses_bad_files_in_one_line(tmp_path: Path) -> None:
    flag = {"certfile": "--tls-cert", "keyfile": "--tls-key", "cafile": "--tls-client-ca"}
    runs = []
    for files, _, named in bad_files(tmp_path):
        given = {"certfile": CERT, "keyfile": KEY, **files}
        args = [arg for name, path in given.items() for arg in (flag[name], str(path))]
        command = [sys.executable, "-m", "iocp_echo", "--port", "0", *args]
        runs.append(
            (
                named,
                subprocess.Popen(
                    command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
                ),
            )
        )
    for named, proc in runs:
        stdout, stderr = proc.communicate(timeout=START_TIMEOUT)
        assert (proc.returncode, stdout) == (2, ""), stderr
        assert stderr.startswith("iocp-echo: error: ") and stderr.count("\n") == 1, stderr
        assert str(named) in stderr, stderr


def test_tls_and_the_tls_keywords_are_one_or_the_other() -> None:
    keywords: dict[str, Any] = {"tls_cert": CERT, "tls_alpn": ["h2"], "tls_handshake_timeout": 1}
    for keyword, value in keywords.items():
        with pytest.raises(TypeError, match=f"not both \\(got tls= and {keyword}=\\)"):
            Server(None, tls=server_tls(), **{keyword: value})
    with pytest.raises(TypeError, match="tls must be a TlsConfig"):
        Server(None, tls="server.pem")  # type: ignore[arg-type]
    # None is "not given", on either side.
    Server(None, tls=None, tls_cert=CERT, tls_key=KEY)
    Server(None, tls=server_tls(), tls_cert=None)


def test_a_config_keeps_what_it_loaded(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    key = tmp_path / "key.pem"
    cert.write_bytes(CERT.read_bytes())
    key.write_bytes(KEY.read_bytes())
    tls = TlsConfig(cert, key)
    cert.unlink()
    key.unlink()
    with Server(None, port=0, framing="lines", tls=tls) as srv:
        with tls_framed(srv.address, "lines", client_context()) as client:
            assert client.request(b"ping") == b"ping"
