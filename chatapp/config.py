"""Every chatapp setting: its variable name, type, default and validation, declared once.

Two tables, each a frozen dataclass whose fields carry the variable's name, parser,
default and doc:

- :class:`Settings`, the app's: read from ``app.config[NAME]`` when the host app set it,
  else from the environment variable of the same name, else the default.
- :class:`ServerSettings`, the gunicorn server's (``chatapp serve``, ``gunicorn.conf.py``):
  read from the environment only, before any app exists.

:func:`load_settings` and :func:`load_server_settings` turn raw values into typed settings
once, at start-up; a bad value raises :class:`~chatapp.errors.ConfigError` naming the
variable (secrets are never echoed). ``chatapp config`` prints both tables
(:func:`describe`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError

__all__ = ["ServerSettings", "Settings", "describe", "load_server_settings", "load_settings", "option_names"]


def _integer(minimum: int) -> Callable[[Any], int]:
    def parse(raw: Any) -> int:
        if isinstance(raw, bool):
            raise ValueError("expected a whole number")
        value = raw if isinstance(raw, int) else int(str(raw).strip(), 10)
        if value < minimum:
            raise ValueError(f"must be at least {minimum}")
        return value

    return parse


def _number(*, positive: bool) -> Callable[[Any], float]:
    def parse(raw: Any) -> float:
        if isinstance(raw, bool):
            raise ValueError("expected a number")
        value = float(raw)
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("expected a finite number")
        if value < 0 or (positive and value == 0):
            raise ValueError("must be greater than 0" if positive else "must not be negative")
        return value

    return parse


def _choice(*allowed: str) -> Callable[[Any], str]:
    def parse(raw: Any) -> str:
        value = str(raw).strip().lower()
        if value not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}")
        return value

    return parse


def _boolean(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    value = str(raw).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected on or off (1/0, true/false, yes/no)")


def _text(raw: Any) -> str:
    return str(raw)


def _url(*schemes: str) -> Callable[[Any], str]:
    def parse(raw: Any) -> str:
        value = str(raw).strip()
        parts = urlsplit(value)
        if parts.scheme not in schemes or not (parts.netloc or parts.path):
            raise ValueError(f"expected a URL starting with {' or '.join(s + '://' for s in schemes)}")
        return value

    return parse


_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+$")


def _origins(raw: Any) -> tuple[str, ...]:
    items = raw if isinstance(raw, (list, tuple)) else str(raw).split(",")
    origins = tuple(item.strip().rstrip("/") for item in items if item.strip())
    for origin in origins:
        if origin != "*" and not _ORIGIN.match(origin):
            raise ValueError(f"{origin!r} is not an origin like https://example.com")
    return origins


def _rate_limit(raw: Any) -> str:
    # Parsed by the same library that enforces it, so start-up refuses what it would.
    from limits import parse_many

    value = str(raw).strip()
    parse_many(value)
    return value


def _metrics(raw: Any) -> str:
    """off, on, or a bearer token that /metrics then asks for."""
    if isinstance(raw, bool):
        return "on" if raw else "off"
    value = str(raw).strip()
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return "on"
    if lowered in ("0", "false", "no", "off"):
        return "off"
    if len(value) < 16 or not re.fullmatch(r"[A-Za-z0-9._~+/=-]+", value):
        raise ValueError("expected off, on, or a token of at least 16 letters, digits or -._~+/=")
    return value


def _frame_ancestors(raw: Any) -> str:
    """A CSP frame-ancestors source list: 'none', 'self' and origins."""
    items = str(raw).split()
    if not items:
        raise ValueError("expected 'none', 'self' or origins such as https://example.com")
    for item in items:
        if item not in ("'none'", "'self'") and not _ORIGIN.match(item.rstrip("/")):
            raise ValueError(f"{item!r} is not 'none', 'self' or an origin like https://example.com")
    if "'none'" in items and len(items) > 1:
        raise ValueError("'none' stands alone")
    return " ".join(items)


def _url_prefix(raw: Any) -> str:
    value = str(raw).strip().rstrip("/")
    if value and (not value.startswith("/") or "//" in value or not re.fullmatch(r"[\w\-./~]+", value)):
        raise ValueError("expected a path such as /assistant")
    return value


def _option(name: str, parse: Callable[[Any], Any], default: Any, doc: str, *, secret: bool = False) -> Any:
    return field(
        default=default,
        repr=not secret,
        metadata={"name": name, "parse": parse, "doc": doc, "secret": secret},
    )


@dataclass(frozen=True)
class Settings:
    """The validated settings of one app. Field metadata holds each variable's name."""

    provider: str = _option("CHATAPP_PROVIDER", _choice("demo", "openai"), "demo", "where replies come from: demo or openai")
    model: str = _option("CHATAPP_MODEL", _text, "", "model name sent upstream; blank means the provider's default")
    openai_api_key: str | None = _option("OPENAI_API_KEY", _text, None, "API key for the openai provider", secret=True)
    openai_base_url: str | None = _option("OPENAI_BASE_URL", _url("http", "https"), None, "OpenAI-compatible server URL", secret=True)
    system_prompt: str = _option("CHATAPP_SYSTEM_PROMPT", _text, "", "system prompt sent before the history")
    max_history_messages: int = _option("CHATAPP_MAX_HISTORY_MESSAGES", _integer(1), 40, "latest history messages sent upstream, the new message included")
    redis_url: str | None = _option("CHATAPP_REDIS_URL", _url("redis", "rediss", "unix", "redis+cluster", "rediss+cluster"), None, "Redis for scale-out (redis://, rediss://, unix://, or redis+cluster://host:port,host:port for a Redis Cluster); unset means the memory broker", secret=True)
    cors_origins: tuple[str, ...] = _option("CHATAPP_CORS_ORIGINS", _origins, (), "comma-separated origins allowed to call the API")
    rate_limit: str = _option("CHATAPP_RATE_LIMIT", _rate_limit, "30/minute", "per-owner limit on creating sessions and posting messages together, such as 30/minute or '10/second; 100/hour'")
    address_rate_limit: str = _option("CHATAPP_ADDRESS_RATE_LIMIT", _rate_limit, "30/minute; 300/hour", "per client address (behind CHATAPP_TRUSTED_PROXIES the forwarded one): anonymous owners creating sessions, so dropping the cookie buys nothing")
    history_rate_limit: str = _option("CHATAPP_HISTORY_RATE_LIMIT", _rate_limit, "60/minute", "per-owner limit on history reads (GET /api/sessions/<id>)")
    history_page_messages: int = _option("CHATAPP_HISTORY_PAGE_MESSAGES", _integer(1), 50, "the most messages one history read returns; older ones by ?before=<cursor>")
    history_page_bytes: int = _option("CHATAPP_HISTORY_PAGE_BYTES", _integer(1024), 262_144, "the most UTF-8 bytes of messages one history read returns (always at least one message)")
    heartbeat_seconds: float = _option("CHATAPP_HEARTBEAT_SECONDS", _number(positive=True), 15.0, "a `: ping` comment after this much silence")
    retry_ms: int = _option("CHATAPP_RETRY_MS", _integer(0), 3000, "reconnect delay sent to EventSource in the first frame")
    max_message_chars: int = _option("CHATAPP_MAX_MESSAGE_CHARS", _integer(1), 32_000, "longest accepted message, in characters")
    max_message_bytes: int = _option("CHATAPP_MAX_MESSAGE_BYTES", _integer(1), 131_072, "longest accepted message, in UTF-8 bytes (413 message_too_long)")
    max_session_bytes: int = _option("CHATAPP_MAX_SESSION_BYTES", _integer(1024), 2_097_152, "history one session may hold, in UTF-8 bytes; a reply stops (finish_reason length) where it would pass it, and a full chat refuses messages (413 history_too_large)")
    max_owner_bytes: int = _option("CHATAPP_MAX_OWNER_BYTES", _integer(1024), 16_777_216, "history one owner may hold across their sessions, in UTF-8 bytes (413 quota_exceeded)")
    max_process_bytes: int = _option("CHATAPP_MAX_PROCESS_BYTES", _integer(1_048_576), 268_435_456, "memory broker: what this process may hold in histories and event logs; past it new sessions and messages get 503 server_busy")
    cache_ttl_seconds: int = _option("CHATAPP_CACHE_TTL_SECONDS", _integer(0), 3600, "response cache lifetime; 0 disables")
    cache_scope: str = _option("CHATAPP_CACHE_SCOPE", _choice("owner", "global"), "owner", "owner: a reply is replayed only to its own owner; global: to anyone asking the same, which reveals who asked what")
    cache_max_bytes: int = _option("CHATAPP_CACHE_MAX_BYTES", _integer(0), 33_554_432, "memory cache: the most bytes of replies it keeps, least recently used out")
    demo_delay_ms: float = _option("CHATAPP_DEMO_DELAY_MS", _number(positive=False), 40.0, "demo provider: pause between words")
    demo_reply_words: int = _option("CHATAPP_DEMO_REPLY_WORDS", _integer(1), 60, "demo provider: words per reply")
    session_ttl_seconds: int = _option("CHATAPP_SESSION_TTL_SECONDS", _integer(1), 86_400, "idle sessions are forgotten after this")
    max_sessions_per_owner: int = _option("CHATAPP_MAX_SESSIONS_PER_OWNER", _integer(1), 100, "sessions one owner may keep at once")
    max_session_messages: int = _option("CHATAPP_MAX_SESSION_MESSAGES", _integer(2), 200, "messages (user and assistant) one session may hold")
    continuation: str = _option("CHATAPP_CONTINUE", _choice("prefill", "restart", "off"), "restart", "with Redis, a reply whose worker died is taken over by another: prefill continues it (vLLM, llama.cpp, Ollama, LM Studio, DeepSeek; the demo), restart generates it again, off ends it as interrupted")
    think_tags: str = _option("CHATAPP_THINK_TAGS", _choice("auto", "off"), "auto", "openai provider: auto reads <think>...</think> opening a reply as the model's reasoning; off leaves it in the text")
    finish_grace_seconds: float = _option("CHATAPP_FINISH_GRACE_SECONDS", _number(positive=True), 2.0, "openai provider: how long a stream may stay open after its finish reason before the turn ends")
    upstream_timeout_seconds: float = _option("CHATAPP_UPSTREAM_TIMEOUT_SECONDS", _number(positive=True), 60.0, "longest upstream silence before upstream_timeout")
    max_streams_per_owner: int = _option("CHATAPP_MAX_STREAMS_PER_OWNER", _integer(1), 16, "open streams one owner may hold (with Redis, across every worker and host)")
    send_timeout_seconds: float = _option("CHATAPP_SEND_TIMEOUT_SECONDS", _number(positive=True), 60.0, "a write to a client that stopped reading is abandoned after this (every response, streams or not)")
    body_timeout_seconds: float = _option("CHATAPP_BODY_TIMEOUT_SECONDS", _number(positive=True), 20.0, "a request body not fully arrived after this is answered 408 and its connection closed")
    trusted_proxies: int = _option("CHATAPP_TRUSTED_PROXIES", _integer(0), 0, "standalone app: proxies in front whose X-Forwarded-* headers are believed")
    cookie_samesite: str = _option("CHATAPP_COOKIE_SAMESITE", _choice("lax", "strict", "none"), "lax", "standalone app: SameSite of the owner cookie; none also makes it Secure")
    stream_token_seconds: int = _option("CHATAPP_STREAM_TOKEN_SECONDS", _integer(0), 600, "lifetime of the signed token in each stream_url that opens the stream without a cookie; 0 issues none")
    secret_key: str | None = _option("CHATAPP_SECRET_KEY", _text, None, "signs the owner cookie; share it across workers and hosts", secret=True)
    url_prefix: str = _option("CHATAPP_URL_PREFIX", _url_prefix, "", "mount point of the page and API, such as /assistant")
    frame_ancestors: str = _option("CHATAPP_FRAME_ANCESTORS", _frame_ancestors, "'self'", "who may show the page in a frame (CSP frame-ancestors): 'none', 'self' or origins of the hosts that embed it")
    metrics: str = _option("CHATAPP_METRICS", _metrics, "on", "Prometheus metrics at <prefix>/metrics: off, on, or a token that it then asks for as Authorization: Bearer <token>", secret=True)
    metrics_dir: str | None = _option("PROMETHEUS_MULTIPROC_DIR", _text, None, "a directory shared by the workers so /metrics sums them all (prometheus_client's multiprocess mode)")


@dataclass(frozen=True)
class ServerSettings:
    """The gunicorn server's settings, from the environment; ``None`` means "work it out"."""

    bind: str | None = _option("CHATAPP_BIND", _text, None, "address to listen on, such as 127.0.0.1:8000; default 0.0.0.0:$PORT")
    port: int = _option("PORT", _integer(1), 8000, "port to listen on when CHATAPP_BIND is unset")
    workers: int | None = _option("WEB_CONCURRENCY", _integer(1), None, "worker processes; default 1, or one per core with CHATAPP_REDIS_URL")
    worker_connections: int = _option("CHATAPP_WORKER_CONNECTIONS", _integer(1), 10_000, "open connections (each stream is one) per gevent worker")
    graceful_timeout: int = _option("CHATAPP_GRACEFUL_TIMEOUT", _integer(1), 10, "seconds a stopping worker lets its requests finish")

    @property
    def address(self) -> str:
        """Where the server listens."""
        return self.bind or f"0.0.0.0:{self.port}"


def option_names() -> list[str]:
    """The variable names of every app setting, in declaration order."""
    return [f.metadata["name"] for f in fields(Settings)]


def load_settings(config: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every app setting from ``config``, falling back to ``environ``.

    ``environ`` defaults to the process environment. An empty environment variable counts
    as unset, as container tooling often writes ``NAME=`` for "no value".
    """
    settings = Settings(**_read(Settings, config, os.environ if environ is None else environ))
    _check_together(settings)
    return settings


def load_server_settings(environ: Mapping[str, str] | None = None) -> ServerSettings:
    """Read and validate the server's settings from ``environ`` (default: the process's)."""
    return ServerSettings(**_read(ServerSettings, {}, os.environ if environ is None else environ))


def _read(table: type, config: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for f in fields(table):
        name: str = f.metadata["name"]
        raw = config.get(name)
        if raw is None:
            raw = environ.get(name) or None
        if raw is None:
            assert f.default is not MISSING
            values[f.name] = f.default
            continue
        try:
            values[f.name] = f.metadata["parse"](raw)
        except (TypeError, ValueError) as exc:
            shown = "" if f.metadata["secret"] else f"={str(raw)[:80]!r}"
            raise ConfigError(f"{name}{shown} is invalid: {exc} ({f.metadata['doc']}).") from None
    return values


def describe() -> str:
    """Every setting as a text table: variable, default, what it does."""
    lines = []
    for title, table in (("App settings (app.config or the environment)", Settings), ("Server settings (the environment)", ServerSettings)):
        lines += [title, ""]
        for f in fields(table):
            default = "" if f.default in (None, "", ()) else f" [default: {_shown(f.default)}]"
            lines.append(f"  {f.metadata['name']}{default}")
            lines.append(f"      {f.metadata['doc']}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _check_together(settings: Settings) -> None:
    """Settings that are valid alone but not in this combination."""
    if settings.provider == "openai":
        if not settings.model:
            raise ConfigError(
                "CHATAPP_MODEL must name the model when CHATAPP_PROVIDER=openai "
                "(for example gpt-4o-mini on OpenAI, or llama3.2 on Ollama)."
            )
        if not settings.openai_api_key and not settings.openai_base_url:
            raise ConfigError(
                "OPENAI_API_KEY is required for OpenAI itself; for a local server that needs "
                "no key, set OPENAI_BASE_URL to it instead."
            )
