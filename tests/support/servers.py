"""Real chatapp servers on loopback ports, and a small API client for them."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import httpx

from tests.support.sseclient import EventStream

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

#: Fast, short demo replies: most tests only need a few tokens quickly.
FAST = {"CHATAPP_DEMO_DELAY_MS": "1", "CHATAPP_DEMO_REPLY_WORDS": "12"}

#: Limits that would bite the tests' own polling and clients (all on one address).
TEST_LIMITS = {"CHATAPP_ADDRESS_RATE_LIMIT": "1000000/minute", "CHATAPP_HISTORY_RATE_LIMIT": "1000000/minute"}

#: How each kind of server is started.
KINDS = ("gevent", "gthread", "flask", "uwsgi")

#: uWSGI with gevent, as docs/deploy.md documents it (less the bind address and module).
UWSGI_OPTIONS = (
    "--master", "--processes", "1", "--lazy-apps",
    "--gevent", "1000", "--gevent-early-monkey-patch",
    "--http-keepalive", "--http-auto-chunked", "--http-timeout", "75",
    "--need-app", "--die-on-term", "--buffer-size", "32768",
    "--ignore-sigpipe", "--ignore-write-errors", "--disable-write-exception",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ChatServer:
    """One server process: gunicorn (gevent or gthread worker), ``flask run`` or uWSGI."""

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        *,
        kind: str = "gevent",
        log_dir: Path,
        app: str = "wsgi:app",
        cwd: Path = ROOT,
        health_path: str = "/healthz",
    ) -> None:
        """Serve the WSGI target ``app`` from ``cwd`` (the repository's ``wsgi:app`` by
        default), always with the repository's gunicorn config; ``health_path`` is
        polled until the server answers 200."""
        self.kind = kind
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.health_url = self.base_url + health_path
        self.log_path = log_dir / f"server-{kind}-{self.port}.log"
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("CHATAPP_", "OPENAI_", "WEB_CONCURRENCY"))}
        # Every test client comes from 127.0.0.1 and polls history while it waits: the
        # limits per address and on history reads are out of the way unless a test sets them.
        environ.update(TEST_LIMITS)
        environ.update(env or {})
        if kind == "flask":
            cmd = [str(BIN / "flask"), "--app", app, "run", "--port", str(self.port), "--with-threads", "--no-reload"]
        elif kind == "uwsgi":
            # The uWSGI command of docs/deploy.md, on a loopback port.
            cmd = [str(BIN / "uwsgi"), "--http", f"127.0.0.1:{self.port}", *UWSGI_OPTIONS, "--module", app]
        else:
            cmd = [str(BIN / "gunicorn"), "-c", str(ROOT / "gunicorn.conf.py"), "--bind", f"127.0.0.1:{self.port}"]
            if kind == "gthread":
                cmd += ["-k", "gthread", "--threads", "32"]
            cmd.append(app)
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(cmd, cwd=cwd, env=environ, stdout=self._log, stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.kind} server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.health_url, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.kind} server did not answer within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def health(self) -> dict:
        return httpx.get(self.health_url, timeout=5).json()

    def worker_pids(self) -> list[int]:
        """The pids of gunicorn's worker processes (children of the master)."""
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in path.read_text().split()]

    def worker_rss(self) -> int:
        """Resident memory in bytes of the (first) gunicorn worker."""
        worker = self.worker_pids()[0]
        with open(f"/proc/{worker}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS in /proc status")

    def client(self, prefix: str = "") -> ChatClient:
        return ChatClient(self.base_url, prefix=prefix)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()


class ChatClient(httpx.Client):
    """An API client with its own cookie jar, so it is one owner."""

    def __init__(self, base_url: str, *, prefix: str = "") -> None:
        super().__init__(base_url=base_url + prefix, timeout=httpx.Timeout(10.0))

    def new_session(self) -> str:
        response = self.post("/api/sessions", json={})
        assert response.status_code == 201, response.text
        return response.json()["session_id"]

    def send_message(self, session_id: str, text: str) -> dict:
        response = self.post(f"/api/sessions/{session_id}/messages", json={"message": text})
        assert response.status_code == 202, response.text
        return response.json()

    def history(self, session_id: str) -> dict:
        response = self.get(f"/api/sessions/{session_id}")
        assert response.status_code == 200, response.text
        return response.json()

    @contextlib.contextmanager
    def open_stream(
        self,
        session_id: str,
        *,
        last_event_id: str | None = None,
        params: Mapping[str, str] | None = None,
        read_timeout: float = 10.0,
    ) -> Iterator[EventStream]:
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        with super().stream(
            "GET",
            f"/api/sessions/{session_id}/stream",
            headers=headers,
            params=params,
            timeout=httpx.Timeout(10.0, read=read_timeout),
        ) as response:
            yield EventStream(response)


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):
    """Poll ``predicate`` until it returns something truthy; that value, or the last one."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    return value


#: The ``start_server`` fixture: ``start_server(env, kind=..., app=...)`` -> a running server.
ServerFactory = Callable[..., ChatServer]
