#!/usr/bin/env python3
"""Where each server's CPU goes: the kernel's TCP send and receive, and the rest.

    python bench/floor.py                       # 64 B and 1 KiB x50, four servers
    python bench/floor.py --sizes 65536 --servers c_epoll,rust_bin

A server's CPU time per message (what compare.py measures) is the kernel's TCP work,
which every echo server on loopback pays in full for a receive and a send, plus what
the server itself adds: its syscalls or ring, its event loop, its own code. On loopback
the sender also pays the receiver's side of the TCP stack (the softirq that delivers a
segment runs in the sending thread), so a server's send carries most of the cost.

This samples each server with ``perf record -g`` (the cpu-clock software event, so it
works without hardware counters) while ``iocp-echo bench`` drives it, as in compare.py
(server on CPU 0, client on CPU 1), and splits its samples into the time under
``tcp_sendmsg`` and ``tcp_recvmsg`` (reached by ``send``/``write``, ``recv``/``read``
and io_uring's send and recv alike) and everything else. The TCP part times the CPU per
message is the **floor**: what a server that added nothing at all would still spend. A
floor / reference ratio is the best ratio any server doing one TCP send and receive per
message can reach against that reference.

Needs ``perf`` (Debian's linux-perf; installed with apt-get as root if missing) and the
same set-up as compare.py (scripts/setup). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from clients import run_load
from servers import BINARY, Children, ServerSpec, server_specs, start_server

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
TCP_SEND = "tcp_sendmsg"
TCP_RECV = "tcp_recvmsg"
DEFAULT_SERVERS = "uvloop,c_epoll,rust_bin,native_uring"


@dataclass
class Split:
    """One server at one load: CPU per message and its share under each TCP call."""

    key: str
    size: int
    cpu_us: float
    send_share: float
    recv_share: float
    samples: int

    @property
    def tcp_us(self) -> float:
        """CPU per message spent inside the kernel's TCP send and receive."""
        return self.cpu_us * (self.send_share + self.recv_share)

    @property
    def other_us(self) -> float:
        return self.cpu_us - self.tcp_us


def ensure_perf() -> str:
    """The path of ``perf``, installing Debian's linux-perf as root if it is missing."""
    found = shutil.which("perf")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-q", "linux-perf"], check=False)
        found = shutil.which("perf")
    if found is None:
        sys.exit("floor.py: perf not found (Debian: apt-get install linux-perf)")
    return found


def children_shares(perf: str, data: Path) -> tuple[float, float, int]:
    """(share under tcp_sendmsg, share under tcp_recvmsg, samples) from ``perf report``."""
    report = subprocess.run(
        [
            perf,
            "report",
            "-i",
            str(data),
            "--children",
            "--sort",
            "sym",
            "--stdio",
            "-g",
            "none",
            "--percent-limit",
            "0.5",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    shares = {TCP_SEND: 0.0, TCP_RECV: 0.0}
    samples = 0
    for line in report.splitlines():
        if line.startswith("# Samples:"):
            # "# Samples: 12K of event 'cpu-clock:pppH'"
            count = line.split()[2]
            scale = 1000 if count.endswith("K") else 1
            samples = int(float(count.rstrip("K")) * scale)
        parts = line.split()
        if len(parts) >= 4 and parts[0].endswith("%") and parts[-1] in shares:
            shares[parts[-1]] = float(parts[0].rstrip("%")) / 100
    return shares[TCP_SEND], shares[TCP_RECV], samples


def measure(
    perf: str, spec: ServerSpec, size: int, connections: int, seconds: float, work: Path
) -> Split:
    """Drive ``spec`` for ``seconds`` under ``perf record`` and split its CPU."""
    children = Children()
    client = [str(BINARY), "bench"]
    try:
        server = start_server(spec, children, work)
        run_load(children, client, server, connections, size, 0.5)  # warm up
        data = work / f"{spec.key}-{size}.perf"
        recorder = children.spawn(
            [perf, "record", "-q", "-e", "cpu-clock", "-g", "-p", str(server.pid), "-o", str(data)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        load = run_load(children, client, server, connections, size, seconds)
        children.kill(recorder, grace=10.0)
        if load.failed or not load.messages:
            sys.exit(f"floor.py: {spec.label} failed under load: {load.note}")
        send, recv, samples = children_shares(perf, data)
        return Split(spec.key, size, load.cpu_us_per_message, send, recv, samples)
    finally:
        children.kill_all()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument(
        "--servers",
        default=DEFAULT_SERVERS,
        help=f"servers (compare.py's keys), default {DEFAULT_SERVERS}",
    )
    parser.add_argument("--sizes", default="64,1024", help="message sizes in bytes")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per figure (median)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if not VENV_PYTHON.exists() or not BINARY.exists():
        sys.exit("floor.py: run scripts/setup and cargo build --release first (see README)")
    if Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), str(Path(__file__).resolve()), *sys.argv[1:]])
    perf = ensure_perf()
    work = Path(tempfile.mkdtemp(prefix="iocp-echo-floor-"))
    try:
        epoll_echo = work / "epoll_echo"
        subprocess.run(
            [
                os.environ.get("CC", "cc"),
                "-O2",
                "-o",
                str(epoll_echo),
                str(BENCH / "peers" / "epoll_echo.c"),
            ],
            check=True,
        )
        specs = {s.key: s for s in server_specs(epoll_echo)}
        keys = [k for k in args.servers.split(",") if k]
        unknown = [k for k in keys if k not in specs]
        if unknown:
            sys.exit(f"floor.py: unknown servers {unknown}; known: {sorted(specs)}")
        sizes = [int(s) for s in args.sizes.split(",")]
        rows: list[Split] = []
        for size in sizes:
            runs: dict[str, list[Split]] = {k: [] for k in keys}
            for _ in range(args.rounds):
                for key in keys:
                    print(f"floor.py: {key} {size} B x{args.connections}", file=sys.stderr)
                    runs[key].append(
                        measure(perf, specs[key], size, args.connections, args.duration, work)
                    )
            for key in keys:
                rows.append(median_split(runs[key]))
        print(render(rows, args, sizes, keys))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def median_split(runs: list[Split]) -> Split:
    """The run with the median CPU per message (its shares go with it)."""
    return sorted(runs, key=lambda s: s.cpu_us)[len(runs) // 2]


def render(rows: list[Split], args: argparse.Namespace, sizes: list[int], keys: list[str]) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# Where the server CPU goes ({now}, {platform.node() or 'this machine'}, "
        f"{os.cpu_count()} CPUs, Linux {platform.release()})",
        "",
        f"`python bench/floor.py --servers {','.join(keys)} "
        f"--sizes {','.join(map(str, sizes))} --connections {args.connections}`: "
        f"median of {args.rounds} runs of {args.duration:g} s, perf cpu-clock samples.",
        "",
        "| server | size | CPU us/msg | under tcp_sendmsg | under tcp_recvmsg "
        "| the rest | TCP floor us/msg | floor / C epoll | floor / uvloop |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for size in sizes:
        at = {r.key: r for r in rows if r.size == size}
        for key in keys:
            r = at[key]
            ratios = [
                f"{r.tcp_us / at[ref].cpu_us:.2f}x" if ref in at else "-"
                for ref in ("c_epoll", "uvloop")
            ]
            lines.append(
                f"| {key} | {size:,} B | {r.cpu_us:.2f} | {r.send_share:.0%} | "
                f"{r.recv_share:.0%} | {1 - r.send_share - r.recv_share:.0%} "
                f"({r.other_us:.2f} us) | {r.tcp_us:.2f} | {ratios[0]} | {ratios[1]} |"
            )
    spread = [r.samples for r in rows]
    lines += [
        "",
        f"Samples per run: {min(spread):,} to {max(spread):,} "
        f"(median {statistics.median(spread):,.0f}).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
