"""BENCHMARKS.md: the machine, the versions, and each workload's table.

Only the part between the two ``bench:results`` markers is rewritten, so the analysis
written around it (what limits each figure, the optimisation log) stays.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import Any

START = "<!-- bench:results:start -->"
END = "<!-- bench:results:end -->"

LABELS = {
    "chatapp": "**chatapp** (full path)",
    "chatapp-redis": "**chatapp** on Redis, 2 workers",
    "flask": "Flask generator, gunicorn `-k gevent`",
    "sse-starlette": "sse-starlette on uvicorn",
    "fastapi": "FastAPI native SSE on uvicorn",
    "node": "Node `http`",
}
PACKAGES = ["flask", "werkzeug", "gunicorn", "gevent", "greenlet", "redis", "uvicorn", "uvloop", "httptools", "starlette", "sse-starlette", "fastapi", "pydantic"]


def label(name: str) -> str:
    base, _, rev = name.partition("@")
    text = LABELS.get(base, base)
    return f"{text} at `{rev}`" if rev else text


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _version(command: list[str]) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "not found"


def machine(*, sizes: dict[str, Any], repeat: int, argv: list[str]) -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    versions = {"python": platform.python_version(), "node": _version(["node", "--version"]), "redis-server": _version(["redis-server", "--version"]).split(" sha=")[0]}
    for name in ["chatapp", *PACKAGES]:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "load_before": load_average(),
        "versions": versions,
        "sizes": sizes,
        "repeat": repeat,
        "command": "bench/run " + " ".join(argv),
    }


# -- statistics ------------------------------------------------------------------------


def _values(runs: list[dict[str, Any]], key: str) -> list[float]:
    return [run[key] for run in runs if "error" not in run and run.get(key) is not None]


def med(runs: list[dict[str, Any]], key: str) -> float | None:
    values = _values(runs, key)
    return statistics.median(values) if values else None


def _fmt(value: float | None, digits: int) -> str:
    if value is None:
        return "–"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def cell(runs: list[dict[str, Any]], key: str, digits: int = 0) -> str:
    """``median (min–max)``, or the one value when there is one run."""
    values = _values(runs, key)
    if not values:
        errors = [run["error"].splitlines()[0][:60] for run in runs if "error" in run]
        return f"failed: {errors[0]}" if errors else "–"
    middle = _fmt(statistics.median(values), digits)
    if len(values) == 1:
        return middle
    return f"{middle} ({_fmt(min(values), digits)}–{_fmt(max(values), digits)})"


def ratio(value: float | None, base: float | None) -> str:
    if value is None or not base:
        return "–"
    return f"{value / base:.2f}×"


def _maxcell(runs: list[dict[str, Any]], key: str) -> str:
    values = _values(runs, key)
    return f"{max(values):.0f}" if values else "–"


def _failed(runs: list[dict[str, Any]], key: str = "failed") -> str:
    values = _values(runs, key)
    return str(int(sum(values))) if values else "–"


# -- the tables ------------------------------------------------------------------------


def render(results: dict[str, dict[str, list[dict[str, Any]]]], meta: dict[str, Any], profile: str | None) -> str:
    sizes = meta["sizes"]
    lines = [
        START,
        "",
        f"Run of {meta['date']}: `{meta['command'].strip()}`, {meta['repeat']} run(s) of each workload per server,",
        f"servers interleaved within each repeat; {meta.get('duration_s', '?')} s in all. Figures are medians with",
        "(min–max) over the runs; × is the ratio to the plain-Flask generator in the same run.",
        "",
        f"- Machine: {meta['cpu']}, {meta['cores']} cores, {meta['memory_gib']} GiB, Linux {meta['kernel']}. Server on core 0 "
        "(`taskset -c 0`), load generator and orchestrator on core 1 (`taskset -c 1`).",
        f"- Load average (1, 5, 15 min) before: {meta['load_before']}; after: {meta.get('load_after', '?')}. The machine is shared, so",
        "  only figures from one run are compared with each other.",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".",
        "",
    ]
    base = results.get("W1", {}).get("flask", [])
    w1 = results.get("W1", {})
    if w1:
        s = sizes["W1"]
        lines += [
            f"### W1: {s['streams']} streams × {s['tokens']:,} tokens, as fast as possible",
            "",
            "| server | events/s | × Flask | server CPU s per 100k events | server CPU % | load generator CPU % (max) | failed streams |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, runs in w1.items():
            lines.append(
                f"| {label(name)} | {cell(runs, 'events_per_s')} | {ratio(med(runs, 'events_per_s'), med(base, 'events_per_s'))} "
                f"| {cell(runs, 'cpu_per_100k', 2)} | {cell(runs, 'server_cpu_pct')} | {_maxcell(runs, 'loadgen_cpu_pct')} | {_failed(runs)} |"
            )
        lines.append("")
    sc = {**results.get("W1-syscalls", {}), **results.get("W4-syscalls", {})}
    if sc:
        lines += [
            "Syscalls per event (a separate W1 run per server with `perf stat -e raw_syscalls:sys_enter,syscalls:sys_enter_*`"
            " attached to the serving processes; Redis's own are not counted):",
            "",
            "| server | syscalls/event | writes (sendto, write, writev)/event | getsockopt/event | epoll_wait/event | reads/event |",
            "|---|---|---|---|---|---|",
        ]
        for name, runs in sc.items():
            run = next((r for r in runs if "syscalls" in r), None)
            if run is None:
                continue
            c, t = run["syscalls"], max(1, run["tokens"])
            reads = (c.get("recvfrom", 0) + c.get("read", 0)) / t
            lines.append(
                f"| {label(name)} | {run['syscalls_per_event']:.3f} | {run['writes_per_event']:.3f} "
                f"| {c.get('getsockopt', 0) / t:.3f} | {c.get('epoll_wait', 0) / t:.3f} | {reads:.3f} |"
            )
        lines.append("")
    w2 = results.get("W2", {})
    base2 = w2.get("flask", [])
    if w2:
        s = sizes["W2"]
        rate = 1000 / s["delay_ms"]
        lines += [
            f"### W2: {s['streams']:,} streams × {rate:.0f} tokens/s for {s['tokens'] / rate:.0f} s",
            "",
            "Latency from the token's creation (a stamp the server puts in its text) to its receipt, for tokens made from one",
            f"second after the last stream opened; server CPU over {s['steady_s']} s of that steady state.",
            "",
            "| server | p50 ms | p99 ms | max ms | server CPU % | × Flask CPU | load generator CPU % (max) | failed streams |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, runs in w2.items():
            lines.append(
                f"| {label(name)} | {cell(runs, 'p50_ms', 2)} | {cell(runs, 'p99_ms', 2)} | {cell(runs, 'max_ms', 1)} "
                f"| {cell(runs, 'steady_cpu_pct', 1)} | {ratio(med(runs, 'steady_cpu_pct'), med(base2, 'steady_cpu_pct'))} "
                f"| {_maxcell(runs, 'loadgen_cpu_pct')} | {_failed(runs)} |"
            )
        lines.append("")
    w3 = results.get("W3", {})
    base3 = w3.get("flask", [])
    if w3:
        s = sizes["W3"]
        lines += [
            f"### W3: {s['streams']:,} idle streams, a heartbeat every {s['hb']} s, held {s['hold_s']} s",
            "",
            "Memory is the growth of the server's RSS while the streams open (for chatapp, after its sessions were created,",
            "which the next column shows apart); heartbeat CPU is the server's CPU while the streams are held.",
            "",
            "| server | time to open all, s | KiB per stream | × Flask | KiB per chatapp session | heartbeat CPU % | CPU µs per heartbeat | pings per stream per s | failed to open |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, runs in w3.items():
            session = cell(runs, "kib_per_session", 1) if name.startswith("chatapp") else "–"
            lines.append(
                f"| {label(name)} | {cell(runs, 'open_s', 2)} | {cell(runs, 'kib_per_stream', 1)} "
                f"| {ratio(med(runs, 'kib_per_stream'), med(base3, 'kib_per_stream'))} | {session} "
                f"| {cell(runs, 'heartbeat_cpu_pct', 1)} | {cell(runs, 'cpu_us_per_ping', 1)} | {cell(runs, 'pings_per_stream_s', 2)} | {_failed(runs, 'failed_open')} |"
            )
        lines.append("")
    w41, w42 = results.get("W4-W1", {}), results.get("W4-W2", {})
    if w41 or w42:
        lines += [
            "### W4: chatapp on Redis, two gunicorn workers",
            "",
            "redis-server (the bench's own, on a free port) shares core 0 with the two workers; its CPU counts as the server's.",
            "",
            "| server | workload | events/s | × memory mode | Redis commands per token | p50 ms | p99 ms | server CPU % | failed streams |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name in dict.fromkeys([*w41, *w42]):
            memory = w1.get(name.replace("chatapp-redis", "chatapp"), [])
            runs1, runs2 = w41.get(name, []), w42.get(name, [])
            lines += [
                f"| {label(name)} | W1 | {cell(runs1, 'events_per_s')} | {ratio(med(runs1, 'events_per_s'), med(memory, 'events_per_s'))} "
                f"| {cell(runs1, 'redis_cmds_per_token', 3)} | – | – | {cell(runs1, 'server_cpu_pct')} | {_failed(runs1)} |",
                f"| {label(name)} | W2 | {cell(runs2, 'events_per_s')} | – | {cell(runs2, 'redis_cmds_per_token', 3)} "
                f"| {cell(runs2, 'p50_ms', 2)} | {cell(runs2, 'p99_ms', 2)} | {cell(runs2, 'steady_cpu_pct', 1)} | {_failed(runs2)} |",
            ]
        lines.append("")
    if profile:
        lines += [f"### Profile of chatapp's worker under {meta.get('profiled', 'W1')} (py-spy)", "", "```text", profile.rstrip(), "```", ""]
    lines.append(END)
    return "\n".join(lines)


def update(path: Path, text: str) -> None:
    """Replace the generated part of ``path``, keeping the rest."""
    current = path.read_text() if path.exists() else f"# Benchmarks\n\n{START}\n{END}\n"
    if START not in current or END not in current:
        current = current.rstrip() + f"\n\n{START}\n{END}\n"
    head, rest = current.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(head + text + tail)


def summarize_profile(path: Path, top: int = 18) -> str:
    """The functions where the worker spent its samples: own time and time below."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_short(f) for f in stack.split(";") if f]
        if frames:
            own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    if not total:
        return "(no samples)"
    lines = [f"{total} samples. Own time (the function itself):"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)]
    lines.append("Inclusive time of chatapp's functions and the server's write path:")
    keep = ("chatapp/", "gunicorn/", "gevent/", "flask/", "werkzeug/")
    chosen = [(name, n) for name, n in inclusive.most_common() if any(k in name for k in keep)][:top]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in chosen]
    return "\n".join(lines)


def _short(frame: str) -> str:
    # py-spy's raw frames look like "function (path/to/file.py:123)".
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    file, _, _line = where.rpartition(":")
    root = str(Path(__file__).resolve().parent.parent) + "/"
    if file.startswith(root):
        file = file[len(root):]
    elif "site-packages/" in file:
        file = file.split("site-packages/", 1)[1]
    return f"{name} ({file})"
