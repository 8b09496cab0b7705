"""A CPU-bound Python handler in one process against ``--processes 2``.

The handler (``peers/cpu_handler.py``) hashes each 1 KiB message 100 times with
SHA-256 while holding the GIL, so one process serves on about one core however many
workers it has. Both servers run ``python -m iocp_echo --handler
cpu_handler:work --workers 2``; one of them with ``--processes 2``. The load is
``iocp-echo bench`` (closed loop, raw framing, 1 KiB messages, 32 connections),
alternated between the two servers for ``--rounds`` rounds; the figure is the median
messages per second of each, and their ratio (the target is >= 1.8x on 2 cores).

    python bench/processes.py [--rounds 3] [--duration 5] [--hash-rounds 100]
                              [--output-dir bench/results]

The result is written to ``<output-dir>/<date>-processes[-x<hash-rounds>].md`` only if
the machine was quiet (1-minute load average below 1.0 before the run); otherwise it is
printed alone.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "bench" / "peers"
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON if VENV_PYTHON.exists() else Path(sys.executable))
BANNER = re.compile(r"listening on [0-9.]+:([0-9]+)")
QUIET_LOAD = 1.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def start(processes: int, hash_rounds: int) -> tuple[subprocess.Popen[str], int]:
    """The server, and its port once it listens."""
    argv = [PYTHON, "-m", "iocp_echo", "--port", "0", "--workers", "2"]
    argv += ["--handler", "cpu_handler:work", "--processes", str(processes)]
    env = {**os.environ, "PYTHONPATH": str(PEERS), "CPU_HANDLER_ROUNDS": str(hash_rounds)}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = BANNER.search(line)
    if not match:
        proc.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    return proc, int(match[1])


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def tree(pid: int) -> list[int]:
    """`pid` and its descendants."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids = (task / "children").read_text().split()
        except OSError:
            continue
        for kid in kids:
            found += tree(int(kid))
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` and its descendants (all threads)."""
    total = 0
    for one in tree(pid):
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / CLOCK_TICKS


def load(port: int, duration: float) -> float:
    """Messages per second of one bench run against `port`."""
    argv = [PYTHON, "-m", "iocp_echo", "bench", "--port", str(port), "--size", "1024"]
    argv += ["--connections", "32", "--duration", str(duration), "--warmup", "1", "--json"]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    report = json.loads(done.stdout)
    if report["errors"] or not report["connected"]:
        raise SystemExit(f"the bench failed: {done.stdout} {done.stderr}")
    return float(report["messages_per_s"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--output-dir", type=Path, default=ROOT / "bench" / "results")
    p.add_argument(
        "--hash-rounds",
        type=int,
        default=100,
        help="SHA-256 rounds per message: the heavier, the smaller the client's share",
    )
    args = p.parse_args()
    load_before = os.getloadavg()[0]
    servers = {1: start(1, args.hash_rounds), 2: start(2, args.hash_rounds)}
    figures: dict[int, list[float]] = {1: [], 2: []}
    cores: dict[int, list[float]] = {1: [], 2: []}
    try:
        for r in range(args.rounds):
            for n, (proc, port) in servers.items():
                before, started = cpu_seconds(proc.pid), time.monotonic()
                figures[n].append(load(port, args.duration))
                cores[n].append((cpu_seconds(proc.pid) - before) / (time.monotonic() - started))
                print(
                    f"round {r + 1}: {n} process(es): {figures[n][-1]:,.0f} msg/s, "
                    f"server CPU {cores[n][-1]:.2f} cores",
                    flush=True,
                )
    finally:
        for proc, _ in servers.values():
            stop(proc)
    load_after = os.getloadavg()[0]
    one, two = statistics.median(figures[1]), statistics.median(figures[2])
    core1, core2 = statistics.median(cores[1]), statistics.median(cores[2])
    when = datetime.now(timezone.utc)
    text = "\n".join(
        [
            f"# --processes 2 against one process, CPU-bound handler ({when:%Y-%m-%d %H:%M} UTC)",
            "",
            f"`python bench/processes.py --rounds {args.rounds} --duration {args.duration:g} "
            f"--hash-rounds {args.hash_rounds}` "
            f"on {os.cpu_count()} CPUs; load average {load_before:.2f} before, "
            f"{load_after:.2f} after.",
            f"Handler: SHA-256 of each 1 KiB message {args.hash_rounds} times (GIL held), echoed; "
            "`--workers 2`; client `iocp-echo bench`, 32 connections, raw framing.",
            "",
            "| server | messages/s (median) | runs | server CPU, cores (median) |",
            "|---|---|---|---|",
            f"| 1 process | {one:,.0f} | {', '.join(f'{x:,.0f}' for x in figures[1])} "
            f"| {core1:.2f} |",
            f"| --processes 2 | {two:,.0f} | {', '.join(f'{x:,.0f}' for x in figures[2])} "
            f"| {core2:.2f} |",
            "",
            f"Ratio: **{two / one:.2f}x** (target >= 1.8x). Messages per server CPU-second: "
            f"{one / core1:,.0f} (1 process), {two / core2:,.0f} (2 processes).",
            "",
        ]
    )
    print(text)
    if load_before < QUIET_LOAD:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        heavier = "" if args.hash_rounds == 100 else f"-x{args.hash_rounds}"
        out = args.output_dir / f"{when:%Y-%m-%d}-processes{heavier}.md"
        out.write_text(text)
        print(f"written to {out}")
    else:
        print(f"not written: the load average was {load_before:.2f} (>= {QUIET_LOAD})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
