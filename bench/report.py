"""The results as Markdown (targets, ratios, absolute figures) and as a PNG chart."""

from __future__ import annotations

import datetime
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from clients import Measurement
from plan import CROWD, KIB, Case, Plan, Results, size_label
from servers import ServerSpec

if TYPE_CHECKING:
    from matplotlib.axes import Axes

REFERENCES = (("uvloop", "uvloop Protocol"), ("c_epoll", "C epoll"))
"""The servers every other is divided by."""


def format_us(value: float) -> str:
    """Microseconds with three significant digits."""
    if math.isnan(value):
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def format_ratio(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}x"


def _median(values: Sequence[float]) -> float:
    good = [v for v in values if not math.isnan(v)]
    return statistics.median(good) if good else float("nan")


def _valid(m: Measurement) -> bool:
    return m.messages > 0 and not math.isnan(m.cpu_us_per_message)


def median_of(
    results: Results, case: Case, key: str, metric: Callable[[Measurement], float]
) -> float:
    runs = results.runs.get((case, key), [])
    return _median([metric(m) for m in runs if _valid(m)])


def ratio(
    results: Results,
    case: Case,
    key: str,
    reference: str,
    metric: Callable[[Measurement], float],
) -> float:
    """Median over rounds of ``metric(key) / metric(reference)`` in the same round."""
    runs = results.runs.get((case, key), [])
    refs = results.runs.get((case, reference), [])
    pairs = [
        metric(a) / metric(b)
        for a, b in zip(runs, refs)
        if _valid(a) and _valid(b) and metric(b) > 0
    ]
    return _median(pairs)


def cpu(m: Measurement) -> float:
    return m.cpu_us_per_message


def rate(m: Measurement) -> float:
    return m.messages_per_s


def p50(m: Measurement) -> float:
    return m.p50_us


def p99(m: Measurement) -> float:
    return m.p99_us


@dataclass
class Target:
    """One row of the issue's targets: what was measured, the goal, pass or fail."""

    what: str
    measured: str
    goal: str
    passed: bool | None  # None: not measured


def targets(results: Results, plan: Plan) -> list[Target]:
    rows: list[Target] = []
    cpu_targets = (
        ("native echo on io_uring vs uvloop Protocol", "native_uring", "uvloop", 0.6),
        ("native echo on io_uring vs the C epoll echo", "native_uring", "c_epoll", 0.8),
        ("Python handler on io_uring vs uvloop Protocol", "python_uring", "uvloop", 0.9),
        ("native echo on epoll vs uvloop Protocol", "native_epoll", "uvloop", 1.0),
        ("protocol echo vs the function handler, io_uring", "protocol_uring", "python_uring", 1.1),
        ("async handler echo vs asyncio streams, io_uring", "async_uring", "streams", 0.5),
    )
    for what, key, ref, goal in cpu_targets:
        for size in (64, KIB):
            case = Case("bench", size, 50)
            value = ratio(results, case, key, ref, cpu)
            rows.append(
                Target(
                    f"{what}, CPU time per message, {size_label(size)} x50",
                    format_ratio(value),
                    f"<= {goal}x",
                    None if math.isnan(value) else value <= goal,
                )
            )
    case = Case("bench", 100 * KIB, 50)
    value = ratio(results, case, "native_uring", "uvloop", rate)
    rows.append(
        Target(
            "100 KiB messages x50, messages/s, native io_uring vs uvloop Protocol",
            format_ratio(value),
            ">= 1.0x",
            None if math.isnan(value) else value >= 1.0,
        )
    )
    for size in (64, KIB):
        case = Case("bench", size, CROWD)
        runs = results.runs.get((case, "native_uring"))
        if not runs:
            continue
        failed = sum(m.failed for m in runs)
        p99_us = median_of(results, case, "native_uring", p99)
        rows.append(
            Target(
                f"{CROWD:,} connections, {size_label(size)}, native io_uring",
                f"{failed} failed, p99 {format_us(p99_us)} us",
                "0 failed, p99 reported",
                failed == 0 and not math.isnan(p99_us),
            )
        )
    idle = sorted(n for (n, key) in results.idle if key == "native_uring")
    if idle:
        top = idle[-1]
        m = results.idle[(top, "native_uring")]
        per = m.bytes_per_connection
        if top >= 50_000:
            short = ""
        elif plan.quick:
            short = f" (quick run: at {top:,})"
        else:
            short = f" (at {top:,}: see notes)"
        rows.append(
            Target(
                f"RSS growth per idle connection at 50,000, native io_uring{short}",
                f"{per / KIB:.2f} KiB",
                "<= 2 KiB",
                None if math.isnan(per) else per <= 2 * KIB and m.connected == m.connections,
            )
        )
    return rows


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _case_label(case: Case, results: Results) -> str:
    if case.client == "ab":
        response = results.ab_response_bytes.get(case)
        size = f"{response} B" if response else ("ab request" if case.size is None else "")
        return f"{size} x{case.connections:,}"
    return case.label()


def _grid(
    title: str,
    cases: Sequence[Case],
    keys: Sequence[str],
    specs: dict[str, ServerSpec],
    cell: Callable[[Case, str], str],
    results: Results,
) -> list[str]:
    header = ["case", *(specs[k].short for k in keys)]
    rows = [[_case_label(c, results), *(cell(c, k) for k in keys)] for c in cases]
    return ["", f"### {title}", "", *_table(header, rows)]


def markdown(
    *,
    command: str,
    started: datetime.datetime,
    machine: dict[str, str],
    plan: Plan,
    specs: dict[str, ServerSpec],
    results: Results,
) -> str:
    keys = [k for k in plan.servers if k in specs]
    out = [
        f"# iocp_echo benchmark, {started:%Y-%m-%d}" + (" (quick)" if plan.quick else ""),
        "",
        f"* command: `{command}`",
        f"* date: {started:%Y-%m-%d %H:%M} UTC",
        f"* machine: {machine['nproc']} CPUs (nproc), {machine['cpu']}, Linux {machine['kernel']}",
        f"* software: iocp_echo {machine['commit']}, Python {machine['python']}, "
        f"uvloop {machine['uvloop']}",
        f"* method: one server worker pinned to CPU 0, the client pinned to CPU 1 (taskset); "
        f"servers interleaved within each case, {plan.rounds} round(s) of "
        f"{plan.duration:g} s; each figure is the median of the rounds, each ratio the "
        "median of the per-round ratios. **CPU per message** = the server's utime + stime "
        "(/proc/<pid>/stat) across the run / messages echoed. Client: `iocp-echo bench` "
        "(closed loop, one thread, raw framing), and `ab -k`.",
        "",
        "## Targets (issue 4)",
        "",
    ]
    verdict = {True: "pass", False: "**FAIL**", None: "not measured"}
    out += _table(
        ["target", "measured", "goal", "result"],
        [[t.what, t.measured, t.goal, verdict[t.passed]] for t in targets(results, plan)],
    )
    bench_cases = [c for c in plan.cases if c.client == "bench" and _measured(c, results)]
    ab_cases = [c for c in plan.cases if c.client == "ab" and _measured(c, results)]
    for ref, ref_label in REFERENCES:
        if ref not in keys:
            continue
        out += [
            "",
            f"## Server CPU time per message, ratio to {ref_label} (lower is better)",
        ]

        def ratio_cell(c: Case, k: str, ref: str = ref) -> str:
            return format_ratio(ratio(results, c, k, ref, cpu))

        for title, cases in (("iocp-echo bench", bench_cases), ("ab -k", ab_cases)):
            if cases:
                out += _grid(title, cases, keys, specs, ratio_cell, results)
    out += ["", "## Absolute figures (medians)"]
    for client, cases in (("iocp-echo bench", bench_cases), ("ab -k", ab_cases)):
        if not cases:
            continue
        unit = "ms" if client == "ab -k" else "us"  # ab measures whole milliseconds
        scale = 1000.0 if client == "ab -k" else 1.0
        # (title, metric, divisor, whole numbers?)
        figures: list[tuple[str, Callable[[Measurement], float], float, bool]] = [
            ("server CPU time per message, us", cpu, 1.0, False),
            ("messages/s", rate, 1.0, True),
            (f"p50 latency, {unit}", p50, scale, unit == "ms"),
            (f"p99 latency, {unit}", p99, scale, unit == "ms"),
        ]
        for name, metric, divisor, whole in figures:

            def cell(
                c: Case,
                k: str,
                metric: Callable[[Measurement], float] = metric,
                divisor: float = divisor,
                whole: bool = whole,
            ) -> str:
                if (c, k) not in results.runs:
                    return ""
                value = median_of(results, c, k, metric) / divisor
                if whole:
                    text = "-" if math.isnan(value) else f"{value:,.0f}"
                else:
                    text = format_us(value)
                failed = sum(m.failed for m in results.runs[(c, k)])
                return text + (f" ({failed} failed)" if failed else "")

            out += _grid(f"{client}: {name}", cases, keys, specs, cell, results)
    if ab_cases:
        out += [
            "",
            "ab measures latency in whole milliseconds. ab takes the echo of "
            "its own keep-alive request as a complete response without a body (counted as "
            "non-2xx, not failed): a closed-loop echo client; the case names the echoed "
            "size.",
        ]
    out += _idle_section(results, specs)
    out += ["", "## Servers", ""]
    out += _table(
        ["column", "server", "command"],
        [[specs[k].short, specs[k].label, "`" + _command(specs[k]) + "`"] for k in keys],
    )
    notes = list(results.notes)
    for (case, key), runs in results.runs.items():
        for m in runs:
            if m.note:
                notes.append(f"{case.client} {case.label()} {specs[key].label}: {m.note}")
    for (count, key), idle in results.idle.items():
        if idle.note:
            notes.append(f"idle {count:,} {specs[key].label}: {idle.note}")
    if notes:
        out += ["", "## Notes", ""] + [f"* {n}" for n in dict.fromkeys(notes)]
    return "\n".join(out) + "\n"


def _measured(case: Case, results: Results) -> bool:
    return any(c == case for c, _k in results.runs)


def _command(spec: ServerSpec) -> str:
    root = str(Path(__file__).resolve().parent.parent) + "/"
    parts = [a.replace(root, "") for a in spec.argv]
    if parts[0].endswith("/python"):
        parts[0] = "python"
    if parts[0].startswith("/tmp/"):
        parts[0] = "epoll_echo"
    return " ".join(parts)


def _idle_section(results: Results, specs: dict[str, ServerSpec]) -> list[str]:
    if not results.idle:
        return []
    counts = sorted({n for n, _k in results.idle})
    keys = [k for k in specs if any((n, k) in results.idle for n in counts)]
    header = ["server"]
    for n in counts:
        header += [f"RSS at {n:,} idle, KiB", f"per connection at {n:,}"]
    rows = []
    for k in keys:
        row = [specs[k].label]
        for n in counts:
            m = results.idle.get((n, k))
            if m is None:
                row += ["", ""]
                continue
            opened = "" if m.connected == m.connections else f" ({m.connected:,} opened)"
            row += [
                f"{m.rss_before_kib:,} -> {m.rss_after_kib:,}{opened}",
                f"{m.bytes_per_connection:,.0f} B",
            ]
        rows.append(row)
    return [
        "",
        "## Idle connections: server RSS growth per open idle connection",
        "",
        "VmRSS (/proc/<pid>/status) after a short echo, then with N idle connections "
        "open (accepted, nothing sent); the growth divided by N.",
        "",
        *_table(header, rows),
    ]


def chart(
    path: Path, *, plan: Plan, specs: dict[str, ServerSpec], results: Results, title: str
) -> None:
    """Four panels: CPU per message, ratio to uvloop, messages/s, idle memory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in plan.servers if k in specs]
    cases = [c for c in plan.cases if c.client == "bench" and _measured(c, results)]
    fig, axes = plt.subplots(2, 2, figsize=(16, 10))
    width = 0.8 / max(len(keys), 1)
    xs = range(len(cases))
    labels = [c.label() for c in cases]

    def bars(ax: Axes, metric: Callable[[Case, str], float], ylabel: str, log: bool) -> None:
        for i, k in enumerate(keys):
            values = [metric(c, k) for c in cases]
            ax.bar([x + i * width for x in xs], values, width, label=specs[k].short)
        ax.set_xticks([x + width * (len(keys) - 1) / 2 for x in xs])
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(ylabel)
        if log:
            ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3)

    bars(axes[0][0], lambda c, k: median_of(results, c, k, cpu), "server CPU us / message", True)
    axes[0][0].set_title("Server CPU time per message (lower is better)")
    axes[0][0].legend(fontsize=8, ncol=3)
    if "uvloop" in keys:
        bars(
            axes[0][1],
            lambda c, k: ratio(results, c, k, "uvloop", cpu),
            "CPU per message / uvloop's",
            False,
        )
        axes[0][1].axhline(1.0, color="black", linewidth=0.8)
        axes[0][1].set_title("CPU per message relative to uvloop Protocol (lower is better)")
    bars(axes[1][0], lambda c, k: median_of(results, c, k, rate), "messages / s", True)
    axes[1][0].set_title("Messages per second (client-bound on a shared machine)")
    ax = axes[1][1]
    counts = sorted({n for n, _k in results.idle})
    idle_keys = [k for k in keys if any((n, k) in results.idle for n in counts)]
    for j, n in enumerate(counts):
        values = [
            results.idle[(n, k)].bytes_per_connection / KIB if (n, k) in results.idle else 0.0
            for k in idle_keys
        ]
        ax.bar([i + j * 0.4 for i in range(len(idle_keys))], values, 0.4, label=f"{n:,} idle")
    ax.set_xticks([i + 0.2 * (len(counts) - 1) for i in range(len(idle_keys))])
    ax.set_xticklabels([specs[k].short for k in idle_keys], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("KiB per idle connection")
    ax.set_title("Server RSS growth per idle connection")
    ax.axhline(2.0, color="red", linewidth=0.8, linestyle="--")
    if counts:
        ax.legend(fontsize=8)
    fig.suptitle(f"iocp_echo vs peers, {title}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
