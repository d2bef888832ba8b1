"""gunicorn's start-up under chatapp's settings: it prints the URL it really listens on,
and a port that is taken stops it at once with the fix."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping

import httpx
import pytest

from tests.support.servers import BIN, ROOT, free_port

URL_LINE = re.compile(r"^chatapp: open (http://\S+/)(.*)$")


def environment(tmp_path, env: Mapping[str, str]) -> dict[str, str]:
    return {"PATH": str(BIN) + ":/usr/bin:/bin", "HOME": str(tmp_path), **env}


@pytest.fixture
def gunicorn(tmp_path) -> Iterator:
    """Start ``gunicorn -c gunicorn.conf.py [args] wsgi:app``; returns the printed URL line."""
    processes: list[subprocess.Popen] = []

    def start(*args: str, env: Mapping[str, str] = {}) -> re.Match:
        process = subprocess.Popen(
            [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", *args, "wsgi:app"],
            cwd=ROOT,
            env=environment(tmp_path, env),
            stderr=subprocess.PIPE,
            text=True,
        )
        processes.append(process)
        assert process.stderr is not None
        seen = []
        for line in process.stderr:
            seen.append(line)
            found = URL_LINE.match(line.rstrip("\n"))
            if found:
                return found
        raise AssertionError("no URL line before gunicorn exited:\n" + "".join(seen))

    yield start
    for process in processes:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def test_the_url_of_bind_is_printed_and_answers(gunicorn) -> None:
    port = free_port()
    # The command line wins over CHATAPP_BIND, and the printed URL says so.
    found = gunicorn("--bind", f"127.0.0.1:{port}", env={"CHATAPP_BIND": "127.0.0.1:1"})
    assert found.group(1) == f"http://127.0.0.1:{port}/"
    assert httpx.get(found.group(1) + "healthz", timeout=10).status_code == 200


def test_port_zero_prints_the_port_the_system_chose(gunicorn) -> None:
    found = gunicorn(env={"CHATAPP_BIND": "127.0.0.1:0", "CHATAPP_URL_PREFIX": "/assistant"})
    url = found.group(1)
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/assistant/", url) and ":0/" not in url
    assert httpx.get(url + "healthz", timeout=10).status_code == 200


def test_all_interfaces_are_shown_as_localhost(gunicorn) -> None:
    port = free_port()
    found = gunicorn(env={"PORT": str(port)})
    assert found.group(1) == f"http://localhost:{port}/"
    assert "all interfaces" in found.group(2)
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200


@pytest.mark.parametrize(
    ("how", "fix"),
    [
        ("--bind", r"pass another port, such as --bind 127\.0\.0\.1:\d+\."),
        ("CHATAPP_BIND", r"set CHATAPP_BIND=127\.0\.0\.1:\d+, or pass --bind 127\.0\.0\.1:\d+\."),
        ("PORT", r"set PORT=\d+, or pass --bind 127\.0\.0\.1:\d+\."),
    ],
)
def test_a_port_in_use_stops_at_once_with_the_fix(how: str, fix: str, tmp_path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args, env = [], {}
        if how == "--bind":
            args = ["--bind", f"127.0.0.1:{port}"]
        elif how == "CHATAPP_BIND":
            env = {"CHATAPP_BIND": f"127.0.0.1:{port}"}
        else:
            env = {"PORT": str(port)}  # 0.0.0.0:port overlaps 127.0.0.1:port
        started = time.monotonic()
        result = subprocess.run(
            [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", *args, "wsgi:app"],
            cwd=ROOT,
            env=environment(tmp_path, env),
            capture_output=True,
            text=True,
            timeout=60,
        )
    # gunicorn on its own retries for five seconds, then says "Can't connect".
    assert time.monotonic() - started < 4.5
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert re.fullmatch(rf"chatapp: port {port} is in use on [0-9.]+ \(.*\): {fix}", last), result.stderr
    assert "Traceback" not in result.stderr and "Can't connect" not in result.stderr
