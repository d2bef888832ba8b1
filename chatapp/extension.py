"""ChatApp: the Flask extension that wires settings, broker, provider and the blueprint."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from flask import Flask, current_app, request, session
from flask_limiter import Limiter

from .broker.base import Broker
from .cache import ResponseCache
from .config import Settings, load_settings, option_names
from .cors import CorsPolicy
from .metrics import Metrics
from .providers.base import Provider
from .sendguard import SendGuard
from .streaming import StreamRegistry
from .turns import TurnRunner

__all__ = ["ChatApp", "ChatAppState", "state", "anonymous_owner", "current_owner"]

log = logging.getLogger("chatapp")

OwnerCallable = Callable[[], "str | None"]

_OWNER_KEY = "chatapp_owner"
_OWNER_ENVIRON_KEY = "chatapp.owner"


def anonymous_owner() -> str:
    """The default owner: a random id kept in Flask's signed session cookie."""
    owner = session.get(_OWNER_KEY)
    if not isinstance(owner, str) or not owner:
        owner = "anon:" + secrets.token_urlsafe(16)
        session[_OWNER_KEY] = owner
        session.permanent = True
    return owner


@dataclass
class ChatAppState:
    """Everything chatapp keeps for one app, in ``app.extensions["chatapp"]``."""

    settings: Settings
    broker: Broker
    provider: Provider
    runner: TurnRunner
    streams: StreamRegistry
    owner: OwnerCallable
    limiter: Limiter
    cors: CorsPolicy
    send_guard: SendGuard
    #: ``None`` when ``CHATAPP_CACHE_TTL_SECONDS`` is 0.
    cache: ResponseCache | None = None
    #: This app's Prometheus registry and recording API (``metrics.cache_hit()``, ...).
    metrics: Metrics = field(default_factory=Metrics)


def state() -> ChatAppState:
    """The chatapp state of the current app."""
    return current_app.extensions["chatapp"]


def current_owner() -> str | None:
    """The owner of this request, or ``None``; asked of the owner callable once per request."""
    # Kept in the WSGI environ rather than ``g``: an app context (and its ``g``) can
    # outlive one request, as in tests that push one around several.
    environ = request.environ
    if _OWNER_ENVIRON_KEY not in environ:
        owner = state().owner()
        environ[_OWNER_ENVIRON_KEY] = str(owner) if owner is not None and owner != "" else None
    return environ[_OWNER_ENVIRON_KEY]


def _make_broker(settings: Settings) -> Broker:
    if settings.redis_url:
        from .broker.redis import RedisBroker

        return RedisBroker(settings.redis_url, session_ttl_seconds=settings.session_ttl_seconds)
    from .broker.memory import MemoryBroker

    return MemoryBroker(session_ttl_seconds=settings.session_ttl_seconds)


def _make_provider(settings: Settings) -> Provider:
    if settings.provider == "openai":
        from .providers.openai import OpenAIProvider

        return OpenAIProvider.from_settings(settings)
    from .providers.demo import DemoProvider

    return DemoProvider(delay_ms=settings.demo_delay_ms, reply_words=settings.demo_reply_words)


def _make_cache(settings: Settings, broker: Broker) -> ResponseCache | None:
    if settings.cache_ttl_seconds == 0:
        return None
    if broker.name == "redis":
        from .redis_cache import RedisResponseCache

        # Shared by every worker and host, on the broker's connection pool.
        return RedisResponseCache(broker.client)  # type: ignore[attr-defined]
    from .cache import MemoryResponseCache

    return MemoryResponseCache()


class ChatApp:
    """Stream LLM chat replies over Server-Sent Events from a Flask app.

    ``ChatApp(app)`` or ``ChatApp()`` then ``init_app(app)``. Per-use behaviour goes in
    keyword arguments: ``owner`` (a callable returning the current user's id, or
    ``None`` when nobody is signed in), ``provider``, ``broker`` and ``cache`` (instances
    replacing the ones built from configuration; a ``cache`` still follows
    ``CHATAPP_CACHE_TTL_SECONDS``), ``url_prefix`` (overrides ``CHATAPP_URL_PREFIX``).

    Configuration keys, read from ``app.config`` or else the environment:
    ``CHATAPP_PROVIDER``, ``CHATAPP_MODEL``, ``OPENAI_API_KEY``, ``OPENAI_BASE_URL``,
    ``CHATAPP_SYSTEM_PROMPT``, ``CHATAPP_MAX_HISTORY_MESSAGES``, ``CHATAPP_REDIS_URL``, ``CHATAPP_CORS_ORIGINS``,
    ``CHATAPP_RATE_LIMIT``, ``CHATAPP_HEARTBEAT_SECONDS``, ``CHATAPP_RETRY_MS``,
    ``CHATAPP_MAX_MESSAGE_CHARS``, ``CHATAPP_CACHE_TTL_SECONDS``,
    ``CHATAPP_DEMO_DELAY_MS``, ``CHATAPP_DEMO_REPLY_WORDS``,
    ``CHATAPP_SESSION_TTL_SECONDS``, ``CHATAPP_UPSTREAM_TIMEOUT_SECONDS``,
    ``CHATAPP_MAX_STREAMS_PER_OWNER``, ``CHATAPP_SECRET_KEY``, ``CHATAPP_URL_PREFIX``,
    ``CHATAPP_METRICS``.
    Their types and defaults are in :mod:`chatapp.config`.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        owner: OwnerCallable | None = None,
        provider: Provider | None = None,
        broker: Broker | None = None,
        cache: ResponseCache | None = None,
        url_prefix: str | None = None,
    ) -> None:
        self._owner = owner
        self._provider = provider
        self._broker = broker
        self._cache = cache
        self._url_prefix = url_prefix
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        if "chatapp" in app.extensions:
            raise RuntimeError("ChatApp is already registered on this app; call init_app once per app.")
        if self._url_prefix is not None:
            app.config["CHATAPP_URL_PREFIX"] = self._url_prefix
        # The environment fills in what the host's config leaves out (setdefault), so
        # app.config shows every value in force.
        for name in option_names():
            if name in os.environ and os.environ[name] != "":
                app.config.setdefault(name, os.environ[name])
        settings = load_settings(app.config, environ={})

        if self._owner is None and not app.secret_key:
            # Only the default owner lives in the session cookie, so only it needs a key;
            # a host that brings its own owner keeps its session settings untouched.
            # A random key is fine for one process; several workers need a shared one.
            app.secret_key = settings.secret_key or secrets.token_hex(32)

        broker = self._broker or _make_broker(settings)
        provider = self._provider or _make_provider(settings)
        cache = None
        if settings.cache_ttl_seconds > 0:
            cache = self._cache if self._cache is not None else _make_cache(settings, broker)
        metrics = Metrics()
        runner = TurnRunner(
            broker,
            provider,
            model=settings.model,
            system_prompt=settings.system_prompt,
            cache=cache,
            cache_ttl_seconds=settings.cache_ttl_seconds,
            metrics=metrics,
        )
        from .api import bp
        from .ratelimit import make_limiter

        app.extensions["chatapp"] = ChatAppState(
            settings=settings,
            broker=broker,
            provider=provider,
            runner=runner,
            # A stream renews its shared slot between heartbeats, so the lease outlasts one.
            streams=StreamRegistry(broker, lease_seconds=max(60.0, 3 * settings.heartbeat_seconds)),
            owner=self._owner or anonymous_owner,
            limiter=make_limiter(app, bp, settings, current_owner),
            cors=CorsPolicy(settings.cors_origins),
            send_guard=SendGuard(settings.send_timeout_seconds),
            cache=cache,
            metrics=metrics,
        )
        app.register_blueprint(bp, url_prefix=settings.url_prefix or None)
