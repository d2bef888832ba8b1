"""The ``chatapp`` command: ``serve`` from anywhere, ``ask`` against real servers, and
``doctor`` directly and through proxies that buffer, compress or time out."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chatapp.providers.demo import DemoProvider
from tests.support.proxies import Proxy
from tests.support.servers import BIN, ROOT, ChatServer, ServerFactory, free_port
from tests.support.upstream import Reply, Upstream

CHATAPP = str(BIN / "chatapp")


def run(*args: str, timeout: float = 60, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("CHATAPP_", "WEB_CONCURRENCY"))}
    environ.update(env or {})
    return subprocess.run([CHATAPP, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=environ)


# -- ask ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(start_server: ServerFactory) -> ChatServer:
    """Replies slow enough to see pace, with frequent heartbeats."""
    return start_server({"CHATAPP_DEMO_DELAY_MS": "50", "CHATAPP_DEMO_REPLY_WORDS": "30", "CHATAPP_HEARTBEAT_SECONDS": "0.3"})


def expected_reply(message: str, words: int) -> str:
    return "".join(DemoProvider(reply_words=words).reply_for(message))


def test_ask_streams_the_reply(server: ChatServer) -> None:
    result = run("ask", "what is streaming?", "--url", server.base_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected_reply("what is streaming?", 30) + "\n"


def test_ask_takes_the_url_from_the_environment_with_a_prefix(start_server: ServerFactory) -> None:
    site = start_server(
        {"CHATAPP_DEMO_DELAY_MS": "1", "CHATAPP_DEMO_REPLY_WORDS": "5", "CHATAPP_URL_PREFIX": "/assistant"},
        health_path="/assistant/healthz",
    )
    result = run("ask", "prefixed", env={"CHATAPP_URL": site.base_url + "/assistant"})
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected_reply("prefixed", 5) + "\n"


def test_ask_exits_non_zero_on_an_error_event(start_server: ServerFactory) -> None:
    failing = start_server(app="tests.support.apps.failing:failing_app")
    result = run("ask", "hello", "--url", failing.base_url)
    assert result.returncode == 1
    assert result.stdout.startswith("Hello")
    assert "upstream_timeout: The model stopped answering." in result.stderr


def test_ask_reports_api_errors_and_unreachable_servers(server: ChatServer) -> None:
    wrong = run("ask", "hello", "--url", server.base_url + "/not-here")
    assert wrong.returncode == 1
    assert "404" in wrong.stderr and "Traceback" not in wrong.stderr
    nobody = run("ask", "hello", "--url", f"http://127.0.0.1:{free_port()}")
    assert nobody.returncode == 1
    assert "cannot talk to" in nobody.stderr and "Traceback" not in nobody.stderr


# -- doctor -------------------------------------------------------------------------------


def doctor(url: str, *args: str) -> tuple[int, dict]:
    result = run("doctor", url, "--idle-seconds", "2", "--json", *args, timeout=90)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def statuses(report: dict) -> dict[str, str]:
    return {check["name"]: check["status"] for check in report["checks"]}


@pytest.fixture
def proxy(request: pytest.FixtureRequest) -> Iterator[list[Proxy]]:
    proxies: list[Proxy] = []
    yield proxies
    for each in proxies:
        each.stop()


def test_doctor_passes_a_direct_connection(server: ChatServer) -> None:
    code, report = doctor(server.base_url)
    assert code == 0, report
    assert report["ok"] is True and report["culprits"] == []
    assert statuses(report) == {name: "ok" for name in ("health", "stream", "reply", "unbuffered", "heartbeats", "idle")}


def test_doctor_passes_a_proxy_that_streams(server: ChatServer, proxy: list[Proxy]) -> None:
    proxy.append(Proxy(server.port, "pass"))
    code, report = doctor(proxy[0].base_url)
    assert code == 0, report
    assert report["culprits"] == []


def test_doctor_flags_a_buffering_proxy(server: ChatServer, proxy: list[Proxy]) -> None:
    proxy.append(Proxy(server.port, "buffer", buffer_bytes=64 * 1024))
    code, report = doctor(proxy[0].base_url)
    assert code == 1
    assert report["culprits"] == ["proxy buffering"]
    assert statuses(report)["unbuffered"] == "fail"
    assert statuses(report)["heartbeats"] == "fail"


def test_doctor_flags_a_compressing_proxy(server: ChatServer, proxy: list[Proxy]) -> None:
    proxy.append(Proxy(server.port, "gzip"))
    code, report = doctor(proxy[0].base_url)
    assert code == 1
    assert report["culprits"] == ["compression"]
    assert statuses(report)["stream"] == "fail"
    # The compressor held the events: the reply still arrived whole, all at once.
    assert statuses(report)["reply"] == "ok"
    assert statuses(report)["unbuffered"] == "fail"


def test_doctor_flags_an_idle_timeout(start_server: ServerFactory, proxy: list[Proxy]) -> None:
    quiet = start_server({"CHATAPP_DEMO_DELAY_MS": "20", "CHATAPP_DEMO_REPLY_WORDS": "30", "CHATAPP_HEARTBEAT_SECONDS": "5"})
    proxy.append(Proxy(quiet.port, "idle", idle_timeout=1.0))
    code, report = doctor(proxy[0].base_url, "--idle-seconds", "4")
    assert code == 1
    assert report["culprits"] == ["idle timeout"]
    assert statuses(report)["idle"] == "fail"
    assert statuses(report)["unbuffered"] == "ok"


def test_doctor_text_report_names_the_fix(server: ChatServer, proxy: list[Proxy]) -> None:
    proxy.append(Proxy(server.port, "buffer"))
    result = run("doctor", proxy[0].base_url, "--idle-seconds", "1", timeout=90)
    assert result.returncode == 1
    assert "Likely culprit: proxy buffering" in result.stdout
    assert "proxy_buffering off" in result.stdout


def test_doctor_cannot_run_against_something_else(server: ChatServer) -> None:
    result = run("doctor", server.base_url + "/elsewhere", "--idle-seconds", "1")
    assert result.returncode == 2
    assert "/healthz" in result.stderr and "Traceback" not in result.stderr


# -- serve --------------------------------------------------------------------------------


def test_serve_uses_the_packaged_config_from_any_folder(tmp_path: Path) -> None:
    port = free_port()
    # gunicorn.conf.py is not here: the settings must come from the package.
    process = subprocess.Popen(
        [CHATAPP, "serve", "--bind", f"127.0.0.1:{port}"],
        cwd=tmp_path,
        env={"PATH": str(BIN) + ":/usr/bin:/bin", "HOME": str(tmp_path), "CHATAPP_DEMO_DELAY_MS": "1", "CHATAPP_DEMO_REPLY_WORDS": "4"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        from tests.support.servers import wait_for

        def healthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return process.poll() is not None

        assert wait_for(healthy, timeout=30) and process.poll() is None
        result = run("ask", "served", "--url", f"http://127.0.0.1:{port}")
        assert result.stdout == expected_reply("served", 4) + "\n"
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0]
    assert "Using worker: gevent" in output
    # The request log of the packaged config: one JSON line per request.
    assert any(line.startswith("{") and json.loads(line)["path"] == "/api/sessions" for line in output.splitlines())


def test_serve_refuses_several_workers_on_the_memory_broker(tmp_path: Path) -> None:
    result = subprocess.run(
        [CHATAPP, "serve", "--bind", f"127.0.0.1:{free_port()}", "--workers", "2"],
        cwd=tmp_path,
        env={"PATH": str(BIN) + ":/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "CHATAPP_REDIS_URL" in result.stderr


def test_ask_stops_quietly_when_its_reader_leaves(start_server: ServerFactory) -> None:
    import subprocess

    server = start_server({"CHATAPP_DEMO_DELAY_MS": "5", "CHATAPP_DEMO_REPLY_WORDS": "400"})
    ask = subprocess.Popen(
        [str(BIN / "chatapp"), "ask", "a long one", "--url", server.base_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert ask.stdout is not None and ask.stdout.read(20)
    ask.stdout.close()
    assert ask.wait(30) == 0
    assert b"cannot talk" not in ask.stderr.read()


# -- config -------------------------------------------------------------------------------


def test_config_prints_every_setting_of_both_tables() -> None:
    from dataclasses import fields

    from chatapp.config import ServerSettings, Settings

    result = run("config")
    assert result.returncode == 0, result.stderr
    for table in (Settings, ServerSettings):
        for f in fields(table):
            assert f"  {f.metadata['name']}" in result.stdout
    assert "CHATAPP_HEARTBEAT_SECONDS [default: 15]" in result.stdout


def test_config_check_names_a_bad_variable_and_hides_secrets() -> None:
    bad = run("config", "--check", env={"CHATAPP_RETRY_MS": "soon"})
    assert bad.returncode == 1 and "CHATAPP_RETRY_MS='soon' is invalid" in bad.stderr
    secret = run("config", "--check", env={"CHATAPP_REDIS_URL": "http://user:hunter2@host"})
    assert secret.returncode == 1 and "CHATAPP_REDIS_URL" in secret.stderr and "hunter2" not in secret.stderr
    assert run("config", "--check", env={"CHATAPP_RETRY_MS": "500", "PORT": "9000"}).returncode == 0


def test_ask_shows_reasoning_on_stderr_and_the_answer_on_stdout(start_server: ServerFactory, upstream: Upstream) -> None:
    from tests.providers.test_openai_stream import openai_env

    upstream.script("think first", Reply(["The answer ", "is 4."], reasoning=["Two and ", "two…"]))
    server = start_server(openai_env(upstream.url))
    shown = run("ask", "think first", "--url", server.base_url)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == "The answer is 4.\n"
    # Not a terminal: plain text, no colour codes.
    assert shown.stderr == "Two and two…\n"
    hidden = run("ask", "think first", "--url", server.base_url, "--no-reasoning")
    assert (hidden.stdout, hidden.stderr) == ("The answer is 4.\n", "")
