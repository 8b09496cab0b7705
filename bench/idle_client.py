"""Open N idle TCP connections to 127.0.0.1:PORT, say so, and hold them until stdin closes.

Used by ``compare.py`` to measure a server's memory per idle connection. Connection i
(counting from ``--first``) comes from source address 127.0.0.(2 + i // per_source), so
that more connections than one address has ephemeral ports (~28k) can be opened. Prints
one line, ``connected N`` (then the first error, if any), when done.
"""

from __future__ import annotations

import argparse
import resource
import socket
import sys
import time

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--per-source", type=int, default=15_000)
    parser.add_argument("--timeout", type=float, default=10.0, help="per connect, seconds")
    parser.add_argument("--deadline", type=float, default=90.0, help="for all, seconds")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    held: list[socket.socket] = []
    error = ""
    deadline = time.monotonic() + args.deadline
    for i in range(args.first, args.first + args.count):
        if time.monotonic() > deadline:
            error = f"stopped after {args.deadline:g} s"
            break
        source = f"127.0.0.{2 + i // args.per_source}"
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            s.bind((source, 0))
            s.settimeout(args.timeout)
            s.connect(("127.0.0.1", args.port))
        except OSError as e:
            s.close()
            error = f"connection {i} from {source}: {e}"
            break
        held.append(s)
    print(f"connected {len(held)} {error}".rstrip(), flush=True)
    sys.stdin.read()  # hold until the bench closes our stdin (or kills us)
    for s in held:
        s.close()


if __name__ == "__main__":
    main()
