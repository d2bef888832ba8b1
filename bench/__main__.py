"""Run every server through every workload, side by side, and write BENCHMARKS.md.

``bench/run`` (which sets up ``bench/.venv``) or ``bench/.venv/bin/python -m bench``::

    bench/run                      # all workloads, 3 repeats, writes BENCHMARKS.md
    bench/run --quick              # small counts, 1 repeat: a smoke check, writes nothing
    bench/run --only W1 --servers chatapp,flask --repeat 5
    bench/run --profile            # also a py-spy profile of chatapp under W1

Each (repeat, workload, server) gets a fresh server process; within a repeat the servers
run one after the other, so a change in the machine's load touches all of them alike.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import report
from .harness import ROOT, VENV_BIN, PerfSyscalls, PySpy, Server, drive, free_port, running

# -- what is measured ------------------------------------------------------------------

FULL = {
    "W1": {"streams": 100, "tokens": 2000},
    "W2": {"streams": 1000, "tokens": 200, "delay_ms": 50, "steady_s": 5},
    "W3": {"streams": 10_000, "hold_s": 15, "hb": 5},
}
QUICK = {
    "W1": {"streams": 20, "tokens": 500},
    "W2": {"streams": 200, "tokens": 60, "delay_ms": 50, "steady_s": 1},
    "W3": {"streams": 1000, "hold_s": 5, "hb": 1},
}
WORKLOADS = ("W1", "W2", "W3", "W4")
PEERS = ("chatapp", "flask", "sse-starlette", "fastapi", "node")
SECRET = "benchmark-only-secret-key-0123456789abcdef"


def chatapp_env(size: dict[str, Any], *, workload: str) -> dict[str, str]:
    env = {
        "CHATAPP_DEMO_DELAY_MS": str(size.get("delay_ms", 0)),
        "CHATAPP_DEMO_REPLY_WORDS": str(size.get("tokens", 60)),
        "CHATAPP_HEARTBEAT_SECONDS": str(size.get("hb", 15)),
        "CHATAPP_WORKER_CONNECTIONS": "12000",
        # The benchmark is one client opening thousands of streams: no limit may bite.
        "CHATAPP_RATE_LIMIT": "100000000/minute",
        "CHATAPP_ADDRESS_RATE_LIMIT": "100000000/minute",
        "CHATAPP_MAX_STREAMS_PER_OWNER": "100000",
        # Every stream asks something new, and the cache is off besides: no replays.
        "CHATAPP_CACHE_TTL_SECONDS": "0",
        "CHATAPP_SECRET_KEY": SECRET,
    }
    return env


#: Snapshots of other revisions of chatapp, by label (``--compare``).
TREES: dict[str, Path] = {}


def snapshot(rev: str, into: Path) -> Path:
    """The files of revision ``rev`` of this repository, unpacked under ``into``."""
    target = into / f"tree-{rev}"
    target.mkdir(parents=True)
    # BENCH_REPO: the repository to take revisions from when this copy is not one.
    repo = os.environ.get("BENCH_REPO", str(ROOT))
    archive = subprocess.run(["git", "-C", repo, "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def make_server(name: str, size: dict[str, Any], *, workload: str, log_dir: Path, redis_port: int | None = None) -> Server:
    gunicorn = str(VENV_BIN / "gunicorn")
    uvicorn = [str(VENV_BIN / "uvicorn"), "--host", "127.0.0.1", "--port", "{port}", "--no-access-log", "--log-level", "warning"]
    base, _, rev = name.partition("@")
    if base in ("chatapp", "chatapp-redis"):
        env = chatapp_env(size, workload=workload)
        app = "bench.chatapp_stamped:app" if size.get("stamp") else "wsgi:app"
        command = [gunicorn, "-c", "gunicorn.conf.py", "--bind", "127.0.0.1:{port}"]
        if base == "chatapp-redis":
            env["CHATAPP_REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
            command += ["--workers", "2"]
        return Server(name, [*command, app], env, "/healthz", log_dir, cwd=TREES[rev] if rev else ROOT)
    if name == "flask":
        return Server(name, [gunicorn, "-c", "bench/peers/flask_gunicorn.conf.py", "--bind", "127.0.0.1:{port}", "bench.peers.flask_app:app"], {}, "/healthz", log_dir)
    if name == "sse-starlette":
        return Server(name, [*uvicorn, "bench.peers.starlette_app:app"], {}, "/healthz", log_dir)
    if name == "fastapi":
        return Server(name, [*uvicorn, "bench.peers.fastapi_app:app"], {"BENCH_HEARTBEAT_SECONDS": str(size.get("hb", 15))}, "/healthz", log_dir)
    if name == "node":
        return Server(name, ["node", "bench/peers/node_server.js", "{port}"], {}, "/healthz", log_dir)
    raise ValueError(name)


def redis_server(log_dir: Path) -> Server:
    port = free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--protected-mode", "yes"]
    server = Server("redis", command, {}, "", log_dir, port=port)
    return server


# -- one run of one workload on one server ---------------------------------------------


@dataclass
class Options:
    sizes: dict[str, dict[str, Any]]
    log_dir: Path
    profile: bool


def target(name: str) -> dict[str, str]:
    if name.startswith("chatapp"):
        return {"target": "chatapp"}
    return {"target": "peer", "path": "/stream"}


def run_stream(name: str, workload: str, size: dict[str, Any], opts: Options, *, syscalls: bool = False, profile: bool = False) -> dict[str, Any]:
    """W1/W2 (and W4's versions of them): N streams of tokens, full speed or paced."""
    with ExitStack() as stack:
        redis = None
        if name.startswith("chatapp-redis"):
            redis = stack.enter_context(running_redis(opts.log_dir))
        server = stack.enter_context(running(make_server(name, size, workload=workload, log_dir=opts.log_dir, redis_port=redis.port if redis else None)))
        tools: dict[str, Any] = {}

        def on_mark(mark: str) -> None:
            if mark == "start" and syscalls:
                tools["perf"] = PerfSyscalls(server.workers(), opts.log_dir / f"perf-{name}-{time.time_ns()}.txt")
            if mark == "start" and profile:
                tools["pyspy"] = PySpy(server.workers()[0], opts.log_dir / f"profile-{name}.txt")
            if mark == "end":
                if "perf" in tools:
                    tools["perf_counts"] = tools.pop("perf").stop()
                if "pyspy" in tools:
                    tools["profile"] = tools.pop("pyspy").stop()

        config = {"mode": "stream", "streams": size["streams"], "tokens": size["tokens"], "delay_ms": size.get("delay_ms", 0),
                  "stamp": bool(size.get("stamp")), "steady_s": size.get("steady_s", 0), "concurrency": 200, **target(name)}
        timeout = 60 + size["tokens"] * size["streams"] / 5000 + size.get("delay_ms", 0) * size["tokens"] / 1000 * 2
        result, marks = drive(server, config, extra_pids=(redis.pids if redis else list), redis_port=redis.port if redis else None, on_mark=on_mark, timeout=timeout)
    start, end = marks["start"], marks["end"]
    elapsed = result["elapsed_s"]
    cpu = end.cpu_s - start.cpu_s
    out: dict[str, Any] = {
        "tokens": result["tokens"],
        "expected": size["streams"] * size["tokens"],
        "failed": result["failed"],
        "elapsed_s": elapsed,
        "events_per_s": result["tokens"] / elapsed,
        "server_cpu_s": cpu,
        "cpu_per_100k": cpu / max(1, result["tokens"]) * 1e5,
        "server_cpu_pct": 100 * cpu / elapsed,
        "loadgen_cpu_pct": result["loadgen_cpu_pct"],
        "open_s": result.get("open_s"),
    }
    if "steady" in marks and "steady-end" in marks:
        s0, s1 = marks["steady"], marks["steady-end"]
        out["steady_cpu_pct"] = 100 * (s1.cpu_s - s0.cpu_s) / (s1.t - s0.t)
    if "latency_ms" in result:
        out["p50_ms"] = result["latency_ms"]["p50"]
        out["p99_ms"] = result["latency_ms"]["p99"]
        out["max_ms"] = result["latency_ms"]["max"]
        out["latency_n"] = result["latency_ms"]["n"]
    if start.redis_calls is not None:
        out["redis_calls"] = end.redis_calls - start.redis_calls
        out["redis_cmds_per_token"] = out["redis_calls"] / max(1, result["tokens"])
    if "perf_counts" in tools:
        counts = tools["perf_counts"]
        tokens = max(1, result["tokens"])
        out["syscalls"] = counts
        out["syscalls_per_event"] = counts.get("total", 0) / tokens
        out["writes_per_event"] = sum(counts.get(k, 0) for k in ("sendto", "write", "writev")) / tokens
    if "profile" in tools:
        out["profile_path"] = str(tools["profile"])
    return out


def run_idle(name: str, size: dict[str, Any], opts: Options) -> dict[str, Any]:
    """W3: N idle streams held open with heartbeats."""
    with running(make_server(name, size, workload="W3", log_dir=opts.log_dir)) as server:
        path = {"target": "chatapp"} if name.startswith("chatapp") else {"target": "peer", "path": "/idle"}
        config = {"mode": "idle", "streams": size["streams"], "hold_s": size["hold_s"], "hb": size["hb"], "concurrency": 256, "setup_concurrency": 64, **path}
        result, marks = drive(server, config, timeout=60 + size["hold_s"] + size["streams"] / 200)
    before, sessions, opened, held = marks["before"], marks["sessions"], marks["opened"], marks["held"]
    n = size["streams"]
    return {
        "streams": n,
        "failed_open": result["failed_open"],
        "still_open": result["still_open"],
        "open_s": result["open_s"],
        "kib_per_stream": (opened.rss_kib - sessions.rss_kib) / n,
        "kib_per_session": (sessions.rss_kib - before.rss_kib) / n,
        "rss_mib": opened.rss_kib / 1024,
        "heartbeat_cpu_pct": 100 * (held.cpu_s - opened.cpu_s) / (held.t - opened.t),
        "cpu_us_per_ping": 1e6 * (held.cpu_s - opened.cpu_s) / max(1, result["hold_pings"]),
        "pings_per_stream_s": result["pings_per_stream_s"],
        "loadgen_cpu_pct": result["loadgen_cpu_pct"],
    }


class running_redis:
    def __init__(self, log_dir: Path) -> None:
        self.server = redis_server(log_dir)

    def __enter__(self) -> Server:
        import redis

        server = self.server
        # redis-server has no HTTP health check: start it and wait for PING.
        from subprocess import STDOUT, Popen

        environ = dict(os.environ)
        server.log_path = server.log_dir / f"redis-{server.port}.log"
        server._log = open(server.log_path, "wb")
        server.process = Popen(["taskset", "-c", "0", *server.command], cwd=ROOT, env=environ, stdout=server._log, stderr=STDOUT, start_new_session=True)
        client = redis.Redis(port=server.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()
        return server

    def __exit__(self, *exc: object) -> None:
        self.server.stop()


# -- the whole run ---------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts and one repeat, for a smoke check")
    parser.add_argument("--repeat", type=int, help="runs of each workload per server (default 3, quick 1)")
    parser.add_argument("--only", default=",".join(WORKLOADS), help="workloads to run, e.g. W1,W3")
    parser.add_argument("--servers", default=",".join(PEERS), help="servers to run (W4 is chatapp on Redis only)")
    parser.add_argument("--profile", nargs="?", const="W1", choices=("W1", "W2"), help="also profile chatapp's worker under W1 (or W2) with py-spy")
    parser.add_argument("--no-syscalls", action="store_true", help="skip the separate W1 run that counts syscalls")
    parser.add_argument("--write", choices=("auto", "yes", "no"), default="auto", help="update BENCHMARKS.md (auto: full runs only)")
    parser.add_argument("--label", default="", help="a name for this run in the saved results")
    parser.add_argument("--compare", default="", help="also run chatapp as of these git revisions (comma-separated), side by side")
    args = parser.parse_args(argv)

    repeat = args.repeat or (1 if args.quick else 3)
    sizes = QUICK if args.quick else FULL
    only = [w.strip().upper() for w in args.only.split(",") if w.strip()]
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    revisions = [r.strip() for r in args.compare.split(",") if r.strip()]
    full_run = not args.quick and set(only) == set(WORKLOADS) and set(servers) == set(PEERS) and repeat >= 3
    write = args.write == "yes" or (args.write == "auto" and full_run)

    # A stop (Ctrl-C, SIGTERM) still stops the servers it started: the finally blocks run.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # The orchestrator shares the client's core; the server has the other one to itself.
    os.sched_setaffinity(0, {1})
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (65536, 65536))
    except (ValueError, OSError):
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    meta = report.machine(sizes=sizes, repeat=repeat, argv=sys.argv[1:] if argv is None else argv)
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    log_dir = Path(tempfile.mkdtemp(prefix="chatapp-bench-"))
    opts = Options(sizes, log_dir, bool(args.profile))
    for rev in revisions:
        TREES[rev] = snapshot(rev, log_dir)
        servers.insert(servers.index("chatapp") + 1 if "chatapp" in servers else 0, f"chatapp@{rev}")
    full_run = full_run and not revisions
    print(f"bench: logs in {log_dir}; load {meta['load_before']}", file=sys.stderr)

    def record(workload: str, server: str, value: dict[str, Any]) -> None:
        results.setdefault(workload, {}).setdefault(server, []).append(value)
        shown = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in value.items() if k not in ("syscalls", "profile_path")}
        print(f"  {workload:<8} {server:<14} {json.dumps(shown)}", file=sys.stderr)

    started = time.monotonic()
    for r in range(repeat):
        print(f"bench: repeat {r + 1}/{repeat}", file=sys.stderr)
        for workload in only:
            redis_servers = [n.replace("chatapp", "chatapp-redis") for n in servers if n.startswith("chatapp")]
            for name in servers if workload != "W4" else redis_servers:
                try:
                    if workload == "W1":
                        record("W1", name, run_stream(name, "W1", sizes["W1"], opts))
                    elif workload == "W2":
                        record("W2", name, run_stream(name, "W2", {**sizes["W2"], "stamp": True}, opts))
                    elif workload == "W3":
                        record("W3", name, run_idle(name, sizes["W3"], opts))
                    elif workload == "W4":
                        record("W4-W1", name, run_stream(name, "W1", sizes["W1"], opts))
                        record("W4-W2", name, run_stream(name, "W2", {**sizes["W2"], "stamp": True}, opts))
                except Exception as exc:  # one failing server must not lose the others' figures
                    print(f"bench: {workload} {name} failed: {exc}", file=sys.stderr)
                    record(workload, name, {"error": str(exc)[:2000]})
    # Syscalls per event and the profile: separate runs, so the counters and the
    # sampler do not slow the runs the throughput figures come from.
    if "W1" in only and not args.no_syscalls:
        for name in servers:
            try:
                record("W1-syscalls", name, run_stream(name, "W1", sizes["W1"], opts, syscalls=True))
            except Exception as exc:
                print(f"bench: syscalls {name} failed: {exc}", file=sys.stderr)
        if "W4" in only:
            for name in [n.replace("chatapp", "chatapp-redis") for n in servers if n.startswith("chatapp")]:
                try:
                    record("W4-syscalls", name, run_stream(name, "W1", sizes["W1"], opts, syscalls=True))
                except Exception as exc:
                    print(f"bench: syscalls {name} failed: {exc}", file=sys.stderr)
    profile_text = None
    if args.profile and "chatapp" in servers:
        size = sizes["W1"] if args.profile == "W1" else {**sizes["W2"], "stamp": True}
        value = run_stream("chatapp", args.profile, size, opts, profile=True)
        record(f"{args.profile}-profile", "chatapp", value)
        profile_text = report.summarize_profile(Path(value["profile_path"]))
        print(profile_text, file=sys.stderr)

    meta["load_after"] = report.load_average()
    meta["duration_s"] = round(time.monotonic() - started)
    meta["label"] = args.label
    meta["profiled"] = args.profile
    saved = ROOT / "bench" / "results"
    saved.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = saved / f"{stamp}{'-' + args.label if args.label else ''}.json"
    out.write_text(json.dumps({"meta": meta, "results": results, "profile": profile_text}, indent=1))
    text = report.render(results, meta, profile_text)
    print(text)
    print(f"bench: results saved to {out.relative_to(ROOT)}", file=sys.stderr)
    if write:
        report.update(ROOT / "BENCHMARKS.md", text)
        print("bench: BENCHMARKS.md updated", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
