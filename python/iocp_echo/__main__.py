"""The command-line server: ``python -m iocp_echo`` or ``iocp-echo``.

``python -m iocp_echo bench [options]`` runs the load generator instead.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from . import BACKENDS, OPTIONS, Framing, Handler, Server, ServerOption
from ._metrics import DEFAULT_HOST as DEFAULT_METRICS_HOST
from ._metrics import MetricsBindError, MetricsPlan, plan, url
from ._native import option_from_text, run_bench
from ._supervisor import READY_FD_ENV, child_link, report_ready, supervise

PROG = "iocp-echo"
_DEFAULTS = {option.name: option.default for option in OPTIONS}


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        _fail(message)


def _fail(message: str) -> NoReturn:
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="A TCP echo/message server on a completion port.")
    # Every server option, from the one definition the Rust binary and Server(...)
    # share; its text goes to Server(...) as given, so Rust checks every value.
    for option in OPTIONS:
        if option.kind == "flag":
            p.add_argument(
                option.flag,
                dest=option.name,
                action="store_true",
                default=argparse.SUPPRESS,
                help=f"{option.help} (default off)".replace("%", "%%"),
            )
            continue
        p.add_argument(
            option.flag,
            dest=option.name,
            default=argparse.SUPPRESS,
            metavar=_metavar(option),
            help=f"{option.help} (default {_shown(option.default)})".replace("%", "%%"),
        )
    p.add_argument(
        "--delimiter", default="\\n", help="lines delimiter, escapes allowed (default \\n)"
    )
    p.add_argument(
        "--length-width", default="4", metavar="1|2|4|8", help="prefix bytes (default 4)"
    )
    p.add_argument(
        "--byteorder", default="big", metavar="big|little", help="prefix byte order (default big)"
    )
    p.add_argument(
        "--handler",
        default=None,
        metavar="MODULE:FUNCTION",
        help="a Python handler by import path (default: native echo)",
    )
    p.add_argument(
        "--protocol",
        default=None,
        metavar="MODULE:CLASS",
        help="a Protocol class (or factory) by import path, one instance per connection",
    )
    p.add_argument(
        "--processes",
        type=int,
        default=1,
        metavar="N",
        help="processes, each its own interpreter and listener on the port (SO_REUSEPORT), "
        "under a parent that restarts them and reloads them one at a time on SIGHUP "
        "(Linux only; default 1)",
    )
    p.add_argument("--log-level", default="WARNING", help="Python logging level (default WARNING)")
    # Metrics: Python only (served through prometheus-client; see iocp_echo._metrics).
    p.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        metavar="PORT",
        help="serve Prometheus metrics on http://ADDR:PORT/metrics, 0: any free port "
        "(needs prometheus-client: pip install 'iocp_echo[metrics]'; default off)",
    )
    p.add_argument(
        "--metrics-host",
        default=None,
        metavar="ADDR",
        help=f"the address of --metrics-port (default {DEFAULT_METRICS_HOST})",
    )
    return p


def _metrics_address(args: argparse.Namespace) -> tuple[str, int] | None:
    """``(host, port)`` of ``--metrics-host``/``--metrics-port``, None without them."""
    if args.metrics_port is None:
        if args.metrics_host is not None:
            _fail("--metrics-host goes with --metrics-port")
        return None
    return (args.metrics_host or DEFAULT_METRICS_HOST, args.metrics_port)


def _metavar(option: ServerOption) -> str:
    if option.choices:
        return "|".join(option.choices)
    if option.kind == "seconds":
        return "SECONDS|none" if option.optional else "SECONDS"
    return {
        "host": "ADDR",
        "bytes": "BYTES",
        "path": "FILE",
        "names": "NAME,...",
        "cidrs": "CIDR,...",
    }.get(option.kind, "N")


def _shown(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ",".join(value)
    return str(value)


def _framing(args: argparse.Namespace) -> Framing | str:
    """The codec the framing flags ask for; other names go to Server as they are."""
    try:
        Framing.length_prefixed(4, args.byteorder)
    except ValueError as e:
        _fail(f"--byteorder: {e}")
    name: str = getattr(args, "framing", "raw")
    if name == "lines":
        try:
            delimiter = args.delimiter.encode("utf-8").decode("unicode_escape").encode("latin-1")
            return Framing.lines(delimiter)
        except (UnicodeError, ValueError) as e:
            _fail(f"--delimiter: {e}")
    if name in ("length", "length_prefixed"):
        try:
            return Framing.length_prefixed(int(args.length_width), args.byteorder)
        except ValueError as e:
            _fail(f"--length-width: {e}")
    return name


def _handler(spec: str | None) -> Handler | None:
    if spec is None:
        return None
    handler: Handler = _import_callable("--handler", "MODULE:FUNCTION", spec)
    return handler


def _protocol(spec: str | None) -> Callable[[], Any] | None:
    if spec is None:
        return None
    factory: Callable[[], Any] = _import_callable("--protocol", "MODULE:CLASS", spec)
    return factory


def _import_callable(flag: str, shape: str, spec: str) -> Any:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        _fail(f"{flag} must be {shape}, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        _fail(f"{flag}: cannot import {module_name!r}: {e}")
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            _fail(f"{flag}: {module_name!r} has no attribute {attr!r}")
    if not callable(target):
        _fail(f"{flag}: {spec} is not callable")
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until Ctrl-C or SIGTERM (or ``bench ...``); returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        return _bench(argv[1:])
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    framing = _framing(args)
    given = vars(args)
    # A child of --processes serves no metrics: its parent serves their sum. (The
    # link is taken after the handler is imported, which may look for it.)
    metrics = _metrics_address(args) if READY_FD_ENV not in os.environ else None
    metrics_plan: MetricsPlan | None = None
    try:
        options: dict[str, Any] = {
            o.name: given[o.name] if o.kind == "flag" else option_from_text(o.name, given[o.name])
            for o in OPTIONS
            if o.name in given and o.name != "framing"
        }
        if args.handler is not None and args.protocol is not None:
            _fail("--handler and --protocol cannot be given together")
        handler, protocol = _handler(args.handler), _protocol(args.protocol)
        if metrics is not None and args.processes != 1:
            # The parent of --processes serves the children's stats summed.
            called = handler is not None or protocol is not None
            metrics_plan = plan(metrics, handler=called, options=options)
            metrics = None
        server = Server(handler, protocol=protocol, framing=framing, metrics=metrics, **options)
    except (ValueError, TypeError, ImportError) as e:
        # ImportError: metrics without prometheus-client (the message says what to install).
        _fail(str(e))
    except OSError as e:
        # A TLS file that cannot be read: the error names it.
        _fail(f"{e.filename}: {e.strerror}" if e.filename else str(e))
    if args.processes != 1:
        return _supervise(args, argv, given, metrics_plan)
    link = child_link()
    try:
        server.start()
    except MetricsBindError as e:
        _fail(str(e.strerror))
    except (ValueError, TypeError) as e:
        _fail(str(e))
    except OSError as e:
        if server.path is not None:
            _fail(f"cannot listen on {server.path}: {e.strerror or e}")
        host = given.get("host", _DEFAULTS["host"])
        port = given.get("port", _DEFAULTS["port"])
        _fail(f"cannot listen on {host}:{port}: {e.strerror or e}")

    try:
        # Both stop the server cleanly, even where SIGINT was ignored at startup
        # (a background job of a non-interactive shell). From here on a signal
        # lands inside this try, whenever it comes.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _interrupt)
        if server.path is not None:
            where = server.path
        else:
            host, port = server.address
            where = f"{host}:{port}"
        if link is not None:
            # A child of --processes: its parent prints the one startup line.
            report_ready(link, server.backend, server.workers, server.stats)
        else:
            metrics_words = ""
            if server.metrics_address is not None:
                metrics_words = f", metrics on {url(server.metrics_address)}"
            print(
                f"iocp_echo listening on {where} "
                f"(backend {server.backend}, {server.workers} workers, "
                f"framing {getattr(args, 'framing', 'raw')}{_tls_words(given)}){metrics_words}",
                flush=True,
            )
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


def _supervise(
    args: argparse.Namespace, argv: list[str], given: dict[str, Any], metrics: MetricsPlan | None
) -> int:
    """``--processes N``: the supervising parent (Linux only); see ``_supervisor``."""
    if args.processes < 1:
        _fail(f"--processes must be at least 1, got {args.processes}")
    if sys.platform != "linux":
        _fail(
            f"--processes {args.processes} is supported on Linux only "
            "(each process listens on the port with SO_REUSEPORT); leave it at 1"
        )
    host = str(given.get("host", _DEFAULTS["host"]))
    port = int(str(given.get("port", _DEFAULTS["port"])))
    drain = float(str(given.get("drain_timeout", _DEFAULTS["drain_timeout"])))
    try:
        return supervise(
            argv, args.processes, host, port, drain, getattr(args, "framing", "raw"), metrics
        )
    except OSError as e:
        _fail(f"cannot listen on {host}:{port}: {e.strerror or e}")


def _tls_words(given: dict[str, Any]) -> str:
    """What the listening line says of TLS (as the Rust binary says it)."""
    if not given.get("tls_cert"):
        return ""
    if given.get("tls_client_ca"):
        return ", TLS on, client certificates required"
    return ", TLS on"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _bench_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=f"{PROG} bench",
        description="A closed-loop echo load generator on the same completion-port core.",
    )
    p.add_argument("--host", default="127.0.0.1", help="server address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="server port (default 8080)")
    p.add_argument("--connections", type=int, default=50, help="connections (default 50)")
    p.add_argument("--size", type=int, default=64, help="payload bytes per message (default 64)")
    limit = p.add_mutually_exclusive_group()
    limit.add_argument("--duration", type=float, default=None, help="seconds (default 10)")
    limit.add_argument("--count", type=int, default=None, help="messages in total")
    p.add_argument(
        "--framing", choices=["raw", "lines", "length"], default="raw", help="(default raw)"
    )
    p.add_argument("--threads", type=int, default=1, help="client threads (default 1)")
    p.add_argument("--warmup", type=float, default=0.0, help="unmeasured seconds first")
    p.add_argument(
        "--backend", choices=["auto", *BACKENDS], default="auto", help="I/O backend (default auto)"
    )
    p.add_argument(
        "--messages-per-connection",
        type=int,
        default=None,
        metavar="N",
        help="close each connection after N messages and open a new one (default: never)",
    )
    p.add_argument(
        "--tls",
        action="store_true",
        help="speak TLS (rustls), verifying the server against --tls-ca",
    )
    p.add_argument(
        "--tls-ca", metavar="FILE", help="PEM file of the CA of the server's certificate"
    )
    p.add_argument(
        "--tls-server-name", metavar="NAME", help="the name the certificate must carry (--host)"
    )
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    return p


def _bench(argv: Sequence[str]) -> int:
    """``bench``: run the load, print the report; 1 if a message failed or nothing connected."""
    parser = _bench_parser()
    args = parser.parse_args(argv)
    if args.tls and args.tls_ca is None:
        parser.error("--tls needs --tls-ca FILE (the CA that signed the server's certificate)")
    if not args.tls and (args.tls_ca is not None or args.tls_server_name is not None):
        parser.error("--tls-ca and --tls-server-name go with --tls")
    try:
        report = run_bench(
            host=args.host,
            port=args.port,
            connections=args.connections,
            size=args.size,
            duration=args.duration,
            count=args.count,
            framing=args.framing,
            threads=args.threads,
            warmup=args.warmup,
            backend=args.backend,
            progress=sys.platform != "win32" and sys.stderr.isatty(),
            tls_ca=args.tls_ca,
            tls_server_name=args.tls_server_name,
            messages_per_connection=args.messages_per_connection,
        )
    except ValueError as e:
        _fail(str(e))
    except OSError as e:
        print(f"{PROG} bench: error: {e}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG} bench: interrupted", file=sys.stderr, flush=True)
        return 130
    if args.json:
        fields = {k: v for k, v in report.items() if k not in ("notes", "summary")}
        print(json.dumps(fields), flush=True)
        for note in report["notes"]:
            print(f"{PROG} bench: {note}", file=sys.stderr, flush=True)
    else:
        print(report["summary"], end="", flush=True)
    return 0 if report["errors"] == 0 and report["connected"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
