"""Settings: defaults, precedence, validation, and refusals at start-up."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from chatapp import create_app
from chatapp.config import Settings, load_settings, option_names
from chatapp.errors import ConfigError
from tests.support.servers import BIN, ROOT, free_port

SPEC_KEYS = {
    "CHATAPP_PROVIDER", "CHATAPP_MODEL", "OPENAI_API_KEY", "OPENAI_BASE_URL", "CHATAPP_SYSTEM_PROMPT",
    "CHATAPP_REDIS_URL", "CHATAPP_CORS_ORIGINS", "CHATAPP_RATE_LIMIT", "CHATAPP_HEARTBEAT_SECONDS",
    "CHATAPP_RETRY_MS", "CHATAPP_MAX_MESSAGE_CHARS", "CHATAPP_CACHE_TTL_SECONDS", "CHATAPP_DEMO_DELAY_MS",
    "CHATAPP_DEMO_REPLY_WORDS", "CHATAPP_SESSION_TTL_SECONDS", "CHATAPP_UPSTREAM_TIMEOUT_SECONDS",
    "CHATAPP_MAX_STREAMS_PER_OWNER", "CHATAPP_SECRET_KEY", "CHATAPP_URL_PREFIX",
}


def test_every_key_of_the_spec_is_declared() -> None:
    assert set(option_names()) >= SPEC_KEYS


def test_the_extension_docstring_lists_every_setting() -> None:
    from dataclasses import fields

    from chatapp import ChatApp
    from chatapp.config import ServerSettings

    for table in (Settings, ServerSettings):
        for f in fields(table):
            assert f.metadata["name"] in (ChatApp.__doc__ or "")


def test_server_settings_from_the_environment() -> None:
    from chatapp.config import load_server_settings

    assert load_server_settings({}).address == "0.0.0.0:8000"
    assert load_server_settings({"PORT": "9001"}).address == "0.0.0.0:9001"
    assert load_server_settings({"PORT": "9001", "CHATAPP_BIND": "127.0.0.1:7000"}).address == "127.0.0.1:7000"
    with pytest.raises(ConfigError, match="WEB_CONCURRENCY='0' is invalid"):
        load_server_settings({"WEB_CONCURRENCY": "0"})


def test_defaults() -> None:
    settings = load_settings({}, {})
    assert settings == Settings()
    assert (settings.provider, settings.heartbeat_seconds, settings.retry_ms, settings.cache_ttl_seconds) == ("demo", 15.0, 3000, 3600)


def test_config_wins_over_environment_and_empty_means_unset() -> None:
    settings = load_settings({"CHATAPP_RETRY_MS": 10}, {"CHATAPP_RETRY_MS": "20", "CHATAPP_HEARTBEAT_SECONDS": "2.5", "CHATAPP_MODEL": ""})
    assert (settings.retry_ms, settings.heartbeat_seconds, settings.model) == (10, 2.5, "")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CHATAPP_PROVIDER", "gpt"),
        ("CHATAPP_HEARTBEAT_SECONDS", "0"),
        ("CHATAPP_HEARTBEAT_SECONDS", "soon"),
        ("CHATAPP_HEARTBEAT_SECONDS", "nan"),
        ("CHATAPP_RETRY_MS", "-5"),
        ("CHATAPP_RETRY_MS", "1.5"),
        ("CHATAPP_MAX_MESSAGE_CHARS", "0"),
        ("CHATAPP_DEMO_DELAY_MS", "-1"),
        ("CHATAPP_DEMO_REPLY_WORDS", "many"),
        ("CHATAPP_MAX_HISTORY_MESSAGES", "0"),
        ("CHATAPP_MAX_HISTORY_MESSAGES", "all"),
        ("CHATAPP_REDIS_URL", "localhost:6379"),
        ("OPENAI_BASE_URL", "ftp://example.com"),
        ("CHATAPP_CORS_ORIGINS", "example.com"),
        ("CHATAPP_URL_PREFIX", "assistant"),
        ("CHATAPP_RATE_LIMIT", "lots"),
        ("CHATAPP_RATE_LIMIT", "30 per fortnight"),
        ("CHATAPP_MAX_SESSIONS_PER_OWNER", "0"),
        ("CHATAPP_MAX_SESSION_MESSAGES", "1"),
        ("CHATAPP_MAX_STREAMS_PER_OWNER", "0"),
        ("CHATAPP_SEND_TIMEOUT_SECONDS", "0"),
        ("CHATAPP_SEND_TIMEOUT_SECONDS", "forever"),
        ("CHATAPP_TRUSTED_PROXIES", "-1"),
        ("CHATAPP_COOKIE_SAMESITE", "sometimes"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings({}, {name: value})
    with pytest.raises(ConfigError, match=name):
        create_app({name: value})


def test_secrets_are_not_echoed() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({}, {"CHATAPP_REDIS_URL": "http://user:hunter2@host"})
    assert "hunter2" not in str(caught.value)
    assert "hunter2" not in repr(load_settings({}, {"OPENAI_API_KEY": "hunter2"}))


def test_protection_defaults() -> None:
    settings = load_settings({}, {})
    assert (settings.rate_limit, settings.max_streams_per_owner, settings.max_sessions_per_owner) == ("30/minute", 16, 100)
    assert (settings.max_session_messages, settings.send_timeout_seconds, settings.trusted_proxies) == (200, 60.0, 0)
    assert (settings.cors_origins, settings.cookie_samesite) == ((), "lax")


def test_cors_origins_and_prefix_are_normalised() -> None:
    settings = load_settings({}, {"CHATAPP_CORS_ORIGINS": "https://a.example, http://localhost:3000/", "CHATAPP_URL_PREFIX": "/assistant/"})
    assert settings.cors_origins == ("https://a.example", "http://localhost:3000")
    assert settings.url_prefix == "/assistant"


def run_gunicorn(env: dict[str, str], *args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{free_port()}", *args, "wsgi:app"],
        cwd=ROOT,
        env={"PATH": str(BIN) + ":/usr/bin:/bin", "HOME": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "args"),
    [({}, ("--workers", "2")), ({"WEB_CONCURRENCY": "3"}, ())],
)
def test_gunicorn_refuses_several_workers_on_the_memory_broker(env: dict, args: tuple, tmp_path: Path) -> None:
    result = run_gunicorn(env, *args, tmp_path=tmp_path)
    assert result.returncode != 0
    assert "CHATAPP_REDIS_URL" in result.stderr


@pytest.mark.parametrize(("name", "value"), [("CHATAPP_HEARTBEAT_SECONDS", "often"), ("CHATAPP_RATE_LIMIT", "lots")])
def test_gunicorn_refuses_a_bad_value_naming_it(name: str, value: str, tmp_path: Path) -> None:
    result = run_gunicorn({name: value}, tmp_path=tmp_path)
    assert result.returncode != 0
    assert name in result.stderr
    assert "Traceback" not in result.stderr


def test_gunicorn_refuses_several_workers_without_a_shared_secret(tmp_path: Path) -> None:
    result = run_gunicorn({"CHATAPP_REDIS_URL": "redis://127.0.0.1:1/0", "WEB_CONCURRENCY": "2"}, tmp_path=tmp_path)
    assert result.returncode != 0
    assert "CHATAPP_SECRET_KEY" in result.stderr


def test_gunicorn_defaults_to_a_worker_per_core_with_redis(start_server, redis_server) -> None:
    import os

    server = start_server({"CHATAPP_REDIS_URL": redis_server.url, "CHATAPP_SECRET_KEY": "k"})
    assert len(server.worker_pids()) == os.cpu_count()


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"CHATAPP_PROVIDER": "openai", "OPENAI_BASE_URL": "http://127.0.0.1:1/v1"}, "CHATAPP_MODEL"),
        ({"CHATAPP_PROVIDER": "openai", "CHATAPP_MODEL": "gpt-4o-mini"}, "OPENAI_API_KEY"),
    ],
)
def test_provider_settings_that_do_not_fit_together_stop_start_up(env: dict, named: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=named):
        load_settings({}, env)
    result = run_gunicorn(env, tmp_path=tmp_path)
    assert result.returncode != 0
    assert named in result.stderr and "Traceback" not in result.stderr


def test_a_base_url_with_credentials_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({}, {"OPENAI_BASE_URL": "ftp://user:hunter2@host"})
    assert "hunter2" not in str(caught.value)
    assert "hunter2" not in repr(load_settings({}, {"OPENAI_BASE_URL": "https://user:hunter2@host/v1", "OPENAI_API_KEY": "k"}))
