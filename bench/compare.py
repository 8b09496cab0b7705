#!/usr/bin/env python3
"""Compare iocp_echo with the servers a Python user would pick instead, and with C epoll.

    python bench/compare.py --quick     # ~3 minutes: 50 connections, 64 B / 1 KiB / 100 KiB,
                                        # 10,000 connections, ab -k, idle memory at 10k
    python bench/compare.py             # the full run (~30 minutes)

The method is ../shared/BENCHMARKS.md (see bench/README.md): one server worker pinned to
CPU 0, the client pinned to CPU 1, every server measured in turn (interleaved) and each
figure the median of at least 3 runs; the figure that counts is the server's CPU time
per message, from /proc/<pid>/stat. Writes bench/results/<date>[-quick].md and .png.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

import report
from clients import (
    Measurement,
    ab_padding,
    failed_measurement,
    measure_idle,
    run_ab,
    run_load,
)
from plan import ALL_SERVERS, CROWD, EXTRA_SERVERS, KIB, Case, Plan, Results, make_plan
from servers import (
    BINARY,
    Children,
    RunningServer,
    ServerSpec,
    raise_nofile_limit,
    server_specs,
    start_server,
)

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"


def ensure_environment() -> None:
    """Run under the project's .venv, with uvloop and matplotlib installed into it."""
    if not VENV_PYTHON.exists():
        sys.exit(f"compare.py: {VENV_PYTHON} not found; run scripts/setup first (see README)")

    def importable(modules: str) -> bool:
        check = [str(VENV_PYTHON), "-c", f"import {modules}"]
        return subprocess.run(check, capture_output=True).returncode == 0

    if not importable("iocp_echo"):
        sys.exit("compare.py: iocp_echo is not installed in .venv; run scripts/setup first")
    if not importable("uvloop, matplotlib"):
        log("compare.py: installing uvloop and matplotlib into .venv")
        install = [str(VENV_PYTHON), "-m", "pip", "install", "--quiet", "uvloop", "matplotlib"]
        if subprocess.run(install).returncode != 0 or not importable("uvloop, matplotlib"):
            sys.exit("compare.py: could not install uvloop and matplotlib into .venv")
    if Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
        here = str(Path(__file__).resolve())
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), here, *sys.argv[1:]])


class Bench:
    """Runs the plan: starts servers, interleaves the loads, kills everything at the end."""

    def __init__(self, plan: Plan, specs: dict[str, ServerSpec], client: list[str]) -> None:
        self.plan = plan
        self.specs = specs
        self.client = client
        self.children = Children()
        self.results = Results()
        self.logs = Path(tempfile.mkdtemp(prefix="iocp-echo-bench-"))
        self.running: dict[str, RunningServer] = {}
        self.have_ab = shutil.which("ab") is not None

    def close(self) -> None:
        self.children.kill_all()
        shutil.rmtree(self.logs, ignore_errors=True)

    def server(self, key: str) -> RunningServer:
        """The running server ``key``, (re)started if it is not running."""
        current = self.running.get(key)
        if current is not None and current.alive():
            return current
        if current is not None:
            self.results.notes.append(
                f"{current.spec.label} exited and was restarted: {current.log_tail()}"
            )
            self.children.kill(current.proc)
        started = start_server(self.specs[key], self.children, self.logs)
        self.running[key] = started
        return started

    def stop_servers(self) -> None:
        for running in self.running.values():
            self.children.kill(running.proc)
        self.running.clear()

    def run(self) -> None:
        plan = self.plan
        for key in list(plan.servers):
            try:
                self.server(key)
            except RuntimeError as e:
                self.results.notes.append(f"not measured: {e}")
                log(f"compare.py: {e}")
                plan.servers.remove(key)
        self.warm_up()
        for case in plan.cases:
            keys = plan.crowd_servers if case.connections >= CROWD else plan.servers
            if case.client == "ab" and not self.have_ab:
                continue
            for round_ in range(plan.rounds):
                for key in keys:
                    if key in plan.servers:
                        self.measure(case, key, round_)
        self.stop_servers()
        for count in plan.idle_counts:
            for key in plan.idle_servers:
                self.measure_idle(count, key)

    def warm_up(self) -> None:
        """A short load on every server first, so no server pays its start-up in round 1."""
        log(f"warming up {len(self.plan.servers)} servers")
        for key in self.plan.servers:
            run_load(self.children, self.client, self.server(key), 50, KIB, 0.3)

    def measure(self, case: Case, key: str, round_: int) -> None:
        try:
            result = self.load(case, key)
        except (RuntimeError, OSError) as e:
            result = failed_measurement(str(e), case.connections)
        self.results.runs.setdefault((case, key), []).append(result)
        log(
            f"{case.client:5} {case.label():>18} round {round_ + 1}/{self.plan.rounds} "
            f"{self.specs[key].label:36} {report.format_us(result.cpu_us_per_message):>8} "
            f"us/msg {result.messages_per_s:>10,.0f} msg/s  p99 "
            + (
                f"{result.p99_us / 1000:.0f} ms"  # ab: whole milliseconds
                if case.client == "ab"
                else f"{report.format_us(result.p99_us)} us"
            )
            + (f"  failed {result.failed}" if result.failed else "")
            + (f"  [{result.note}]" if result.note else "")
        )

    def load(self, case: Case, key: str) -> Measurement:
        """One run of ``case`` against server ``key``."""
        server = self.server(key)
        if case.client == "ab":
            padding = ab_padding(self.children, server, case.size)
            result, response = run_ab(
                self.children, server, case.connections, self.plan.duration, padding
            )
            if response:
                self.results.ab_response_bytes[case] = response
        else:
            assert case.size is not None
            result = run_load(
                self.children,
                self.client,
                server,
                case.connections,
                case.size,
                self.plan.duration,
            )
        return result

    def measure_idle(self, count: int, key: str) -> None:
        try:
            server = start_server(self.specs[key], self.children, self.logs)
        except RuntimeError as e:
            self.results.notes.append(f"idle {count:,}: {e}")
            return
        try:
            result = measure_idle(self.children, server, count)
        except (RuntimeError, OSError) as e:
            self.results.notes.append(f"idle {count:,} {server.spec.label}: {e}")
            return
        finally:
            self.children.kill(server.proc)
        self.results.idle[(count, key)] = result
        log(
            f"idle  {count:>18,} {server.spec.label:36} connected {result.connected:,} "
            f"RSS {result.rss_before_kib:,} -> {result.rss_after_kib:,} KiB: "
            f"{result.bytes_per_connection:,.0f} B/connection"
            + (f"  [{result.note}]" if result.note else "")
        )


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def machine() -> dict[str, str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
        except OSError:
            return ""
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {
        "nproc": str(os.cpu_count()),
        "kernel": platform.release(),
        "cpu": model,
        "python": platform.python_version(),
        "uvloop": importlib.metadata.version("uvloop"),
        "commit": (commit or "unknown") + (" with uncommitted changes" if dirty else ""),
    }


def prepare(args: argparse.Namespace, workdir: Path) -> tuple[Path, list[str], list[str]]:
    """Build what the bench needs; (C epoll binary, client command, notes)."""
    notes: list[str] = []
    if not args.no_build:
        log("building target/release/iocp-echo (cargo build --release)")
        built = subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT)
        if built.returncode != 0:
            sys.exit("compare.py: cargo build --release failed (see above); --no-build skips it")
    client = [str(BINARY), "bench"]
    probe = subprocess.run([*client, "--help"], capture_output=True, text=True)
    if probe.returncode != 0 or "--connections" not in probe.stdout + probe.stderr:
        sys.exit(f"compare.py: {BINARY} has no `bench` subcommand; build it first")
    epoll_echo = workdir / "epoll_echo"
    cc = os.environ.get("CC", "cc")
    subprocess.run(
        [cc, "-O2", "-o", str(epoll_echo), str(BENCH / "peers" / "epoll_echo.c")], check=True
    )
    if shutil.which("ab") is None and not args.no_ab:
        notes.extend(install_ab())
    if args.no_ab or shutil.which("ab") is None:
        notes.append("ab -k was not run (" + ("--no-ab" if args.no_ab else "not installed") + ")")
    return epoll_echo, client, notes


def install_ab() -> list[str]:
    """apt-get install apache2-utils, as root on Debian; notes on why not otherwise."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return ["ab not found; install Debian's apache2-utils to add the ab -k figures"]
    log("installing apache2-utils (ab) with apt-get")
    for step in (["apt-get", "update"], ["apt-get", "install", "-y", "apache2-utils"]):
        done = subprocess.run(step, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            return [f"`{' '.join(step)}` failed: {done.stderr.strip()[-200:]}"]
    return []


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the ~3-minute subset")
    parser.add_argument("--rounds", type=int, default=3, help="runs per figure (median; >= 3)")
    parser.add_argument("--duration", type=float, help="seconds per run (0.8 quick, 2 full)")
    parser.add_argument(
        "--servers",
        help=f"comma-separated subset of: {','.join(ALL_SERVERS + EXTRA_SERVERS)}",
    )
    parser.add_argument("--no-ab", action="store_true", help="skip the ab -k figures")
    parser.add_argument("--no-idle", action="store_true", help="skip idle-connection memory")
    parser.add_argument("--no-build", action="store_true", help="do not run cargo build")
    parser.add_argument(
        "--output-dir", type=Path, default=BENCH / "results", help="where .md and .png go"
    )
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def main() -> None:
    args = parse_args()
    ensure_environment()
    clock = time.monotonic()
    started = datetime.datetime.now(datetime.timezone.utc)
    command = "python bench/compare.py " + " ".join(sys.argv[1:])

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    nofile = raise_nofile_limit()
    workdir = Path(tempfile.mkdtemp(prefix="iocp-echo-bench-build-"))
    bench: Bench | None = None
    try:
        epoll_echo, client, notes = prepare(args, workdir)
        plan = make_plan(args, nofile)
        if args.no_idle:
            plan.idle_counts = []
        if args.no_ab or shutil.which("ab") is None:
            plan.cases = [c for c in plan.cases if c.client != "ab"]
        specs = {spec.key: spec for spec in server_specs(epoll_echo)}
        bench = Bench(plan, specs, client)
        bench.results.notes.extend(notes)
        if plan.rounds < 3:
            bench.results.notes.append(f"only {plan.rounds} round(s): not a valid result")
        if plan.idle_counts and max(plan.idle_counts) < (10_000 if plan.quick else 50_000):
            bench.results.notes.append(
                f"idle connections capped at {max(plan.idle_counts):,}: the open-file hard "
                f"limit (ulimit -Hn) is {nofile:,} and cannot be raised here, and a server "
                "holds one descriptor per connection"
            )
        bench.run()
        elapsed = time.monotonic() - clock
        markdown = report.markdown(
            command=command,
            started=started,
            machine=machine(),
            plan=plan,
            specs=specs,
            results=bench.results,
        )
        stem = started.strftime("%Y-%m-%d") + ("-quick" if plan.quick else "")
        args.output_dir.mkdir(parents=True, exist_ok=True)
        md_path = args.output_dir / f"{stem}.md"
        png_path = args.output_dir / f"{stem}.png"
        report.chart(png_path, plan=plan, specs=specs, results=bench.results, title=stem)
        markdown += f"\n![chart]({png_path.name})\n"
        md_path.write_text(markdown)
        print(markdown)
        log(f"wrote {md_path} and {png_path} ({elapsed:.0f} s)")
    except KeyboardInterrupt:
        log("compare.py: interrupted; stopping every server and client")
        sys.exit(130)
    finally:
        if bench is not None:
            bench.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
