"""What a comparison measures (cases, servers, durations) and what it found."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field

from clients import IdleMeasurement, Measurement

KIB = 1024


@dataclass(frozen=True)
class Case:
    """One load: message size and concurrency, with our client or with ab."""

    client: str  # "bench" (iocp-echo bench) or "ab"
    size: int | None  # bytes; None is ab's own request (~100 bytes)
    connections: int

    def label(self) -> str:
        size = "ab request" if self.size is None else size_label(self.size)
        return f"{size} x{self.connections:,}"


@dataclass
class Plan:
    """What one invocation measures."""

    quick: bool
    duration: float
    rounds: int
    servers: list[str]
    cases: list[Case]
    crowd_servers: list[str]
    """Servers measured at 10,000 connections (every server in the full run)."""
    idle_counts: list[int]
    idle_servers: list[str]


CROWD = 10_000
ALL_SERVERS = [
    "uvloop",
    "asyncio",
    "streams",
    "c_epoll",
    "rust_bin",
    "native_uring",
    "python_uring",
    "protocol_uring",
    "native_epoll",
    "python_epoll",
]

EXTRA_SERVERS = ["native_uring_oneshot", "async_uring"]
"""Servers run only when named in ``--servers``: native io_uring with one-shot recvs and
accepts (what multishot saves), and the ``async def`` handler echo (against asyncio
streams: issue 11's target is <= 0.5x their CPU per message)."""


def make_plan(args: argparse.Namespace, nofile: int) -> Plan:
    servers = args.servers.split(",") if args.servers else list(ALL_SERVERS)
    known = ALL_SERVERS + EXTRA_SERVERS
    unknown = set(servers) - set(known)
    if unknown:
        sys.exit(f"compare.py: unknown servers {sorted(unknown)}; known: {known}")
    if args.quick:
        cases = [Case("bench", size, 50) for size in (64, KIB, 100 * KIB)]
        cases.append(Case("bench", 64, CROWD))
        cases.append(Case("ab", None, 50))
        crowd = ["uvloop", "c_epoll", "rust_bin", "native_uring"]
        idle_counts = [10_000]
        idle_servers = ["uvloop", "c_epoll", "native_uring"]
        duration = 0.8
    else:
        cases = [
            Case("bench", size, conns)
            for conns in (1, 10, 50, 1000)
            for size in (64, KIB, 10 * KIB, 100 * KIB)
        ]
        cases += [Case("bench", 64, CROWD), Case("bench", KIB, CROWD)]
        cases += [Case("ab", None, c) for c in (1, 50, 1000, CROWD)]
        cases.append(Case("ab", KIB, 50))
        crowd = list(ALL_SERVERS)
        idle_counts = [10_000, 50_000]
        idle_servers = list(ALL_SERVERS)
        duration = 2.0
    # A server holds one descriptor per connection: no more than its open-file limit.
    idle_counts = [min(n, nofile - 200) for n in idle_counts]
    return Plan(
        quick=args.quick,
        duration=args.duration or duration,
        rounds=args.rounds,
        servers=servers,
        cases=cases,
        crowd_servers=[s for s in crowd if s in servers],
        idle_counts=sorted(set(idle_counts)),
        idle_servers=[s for s in idle_servers if s in servers],
    )


@dataclass
class Results:
    """Every measurement, by case and server, one per round; and the idle figures."""

    runs: dict[tuple[Case, str], list[Measurement]] = field(default_factory=dict)
    ab_response_bytes: dict[Case, int] = field(default_factory=dict)
    idle: dict[tuple[int, str], IdleMeasurement] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def size_label(size: int) -> str:
    """64 B, 1 KiB, 100 KiB."""
    if size >= KIB and size % KIB == 0:
        return f"{size // KIB} KiB"
    return f"{size} B"
