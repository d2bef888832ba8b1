"""Start servers pinned to one core, drive the load generator on the other, measure.

The server under test runs under ``taskset -c 0``, the load generator (and this
orchestrator) on core 1. The load generator stops at each point where a reading is
needed (``MARK <name>``); this side then reads the server's CPU time (the sum of its
threads' ``schedstat`` run time, in nanoseconds), its memory (``VmRSS``), Redis's
command counters, and starts or stops the tools attached to the run (``perf stat`` for
syscalls, ``py-spy`` for a profile), then lets it go on.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
VENV_BIN = Path(sys.executable).parent
SERVER_CORE = "0"
CLIENT_CORE = "1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- reading processes -----------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                children = Path(f"/proc/{current}/task/{task}/children").read_text().split()
                todo.extend(int(child) for child in children)
        except OSError:
            continue
    return pids


def cpu_seconds(pids: list[int]) -> float:
    """CPU time of every thread of ``pids``, from the scheduler's nanosecond counters."""
    total = 0
    for pid in pids:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                total += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
    return total / 1e9


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


# -- servers ---------------------------------------------------------------------------


@dataclass
class Server:
    """One running server process (and its children), pinned to the server core."""

    name: str
    command: list[str]
    env: Mapping[str, str]
    health_path: str
    log_dir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    #: Where the server starts (and imports ``wsgi``, ``chatapp`` and ``bench`` from):
    #: the checkout, or a snapshot of another revision to compare with.
    cwd: Path = ROOT

    def start(self) -> Server:
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("CHATAPP_", "OPENAI_", "WEB_CONCURRENCY"))}
        environ.update(self.env)
        command = [part.replace("{port}", str(self.port)) for part in self.command]
        self.log_path = self.log_dir / f"{self.name}-{self.port}.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            ["taskset", "-c", SERVER_CORE, *command],
            cwd=self.cwd,
            env=environ,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.port}{self.health_path}"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        # Let gunicorn's workers finish booting and settle.
                        time.sleep(0.3)
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer {url} within {timeout}s:\n{self.log()}")

    def pids(self) -> list[int]:
        return process_tree(self.process.pid)

    def workers(self) -> list[int]:
        """The processes that serve requests: gunicorn's workers, or the process itself."""
        children = [pid for pid in self.pids() if pid != self.process.pid]
        return children or [self.process.pid]

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)
        self._log.close()


@contextmanager
def running(server: Server) -> Iterator[Server]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- attached tools --------------------------------------------------------------------

SYSCALL_EVENTS = [
    "raw_syscalls:sys_enter",
    "syscalls:sys_enter_sendto",
    "syscalls:sys_enter_write",
    "syscalls:sys_enter_writev",
    "syscalls:sys_enter_recvfrom",
    "syscalls:sys_enter_read",
    "syscalls:sys_enter_epoll_wait",
    "syscalls:sys_enter_epoll_ctl",
    "syscalls:sys_enter_getsockopt",
    "syscalls:sys_enter_futex",
]


class PerfSyscalls:
    """``perf stat`` counting the syscalls of the server's processes during the window."""

    def __init__(self, pids: list[int], out: Path) -> None:
        self.out = out
        self.process = subprocess.Popen(
            ["perf", "stat", "-x", ",", "-o", str(out), "-e", ",".join(SYSCALL_EVENTS), "-p", ",".join(map(str, pids))],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.3)

    def stop(self) -> dict[str, int]:
        self.process.send_signal(signal.SIGINT)
        self.process.wait(10)
        counts: dict[str, int] = {}
        for line in self.out.read_text().splitlines():
            parts = line.split(",")
            if len(parts) > 2 and parts[0].strip().isdigit():
                counts[parts[2].split(":")[-1].replace("sys_enter_", "") if parts[2] != "raw_syscalls:sys_enter" else "total"] = int(parts[0])
        return counts


class PySpy:
    """A sampling profile of one server process during the window (collapsed stacks)."""

    def __init__(self, pid: int, out: Path, rate: int = 1000) -> None:
        self.out = out
        self.process = subprocess.Popen(
            [str(VENV_BIN / "py-spy"), "record", "-p", str(pid), "-r", str(rate), "-f", "raw", "-o", str(out), "--nonblocking"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)

    def stop(self) -> Path:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        return self.out


def redis_calls(port: int) -> int:
    """Commands Redis has run (``INFO commandstats``), less our own INFO calls."""
    import redis

    client = redis.Redis(port=port)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return sum(v["calls"] for k, v in stats.items() if k not in ("cmdstat_info",))


# -- the load generator ----------------------------------------------------------------


@dataclass
class Reading:
    t: float
    cpu_s: float
    rss_kib: int
    redis_calls: int | None = None


def drive(
    server: Server,
    config: dict[str, Any],
    *,
    extra_pids: Callable[[], list[int]] = list,
    redis_port: int | None = None,
    on_mark: Callable[[str], None] | None = None,
    timeout: float = 300.0,
) -> tuple[dict[str, Any], dict[str, Reading]]:
    """Run the load generator against ``server``; its result and the readings at each mark."""
    config = {"port": server.port, "deadline_s": timeout - 10, **config}
    process = subprocess.Popen(
        ["taskset", "-c", CLIENT_CORE, "node", str(BENCH / "loadgen.js"), json.dumps(config)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    readings: dict[str, Reading] = {}
    result: dict[str, Any] | None = None
    deadline = time.monotonic() + timeout
    try:
        for line in process.stdout:
            if line.startswith("MARK "):
                name = line.split()[1]
                pids = server.pids() + extra_pids()
                readings[name] = Reading(
                    time.monotonic(), cpu_seconds(pids), rss_kib(pids), redis_calls(redis_port) if redis_port else None
                )
                if on_mark:
                    on_mark(name)
                process.stdin.write("ok\n")
                process.stdin.flush()
            elif line.startswith("RESULT "):
                result = json.loads(line[7:])
            if time.monotonic() > deadline:
                break
        process.wait(max(1.0, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    if result is None:
        raise RuntimeError(f"the load generator gave no result (exit {process.returncode})")
    if "error" in result:
        raise RuntimeError(f"load generator: {result['error']}\nserver log:\n{server.log()}")
    return result, readings
