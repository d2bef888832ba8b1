"""ChatApp: the Flask extension. ``init_app`` builds one app's state and mounts the blueprint."""

from __future__ import annotations

import logging
import socket
import weakref
from collections import ChainMap
from typing import Any

from flask import Flask

from ..broker.base import Broker
from ..cache import ResponseCache
from ..config import describe, load_settings
from ..errors import ConfigError
from ..metrics import Metrics
from ..providers.base import Provider
from ..turns import TurnRunner
from . import lifecycle
from .components import make_broker, make_cache, make_provider
from .cors import CorsPolicy
from .origin import origin_refused
from .owner import OwnerCallable, anonymous_owner, current_owner
from .ratelimit import make_limiter
from .sendguard import SendGuard
from .state import ChatAppState
from .streaming import StreamOptions, Streams
from .tokens import StreamTokens
from .views import bp

__all__ = ["ChatApp"]

log = logging.getLogger("chatapp")


class ChatApp:
    """Stream LLM chat replies over Server-Sent Events from a Flask app.

    ``ChatApp(app)`` or ``ChatApp()`` then ``init_app(app)``. Per-use behaviour goes in
    keyword arguments: ``owner`` (a callable returning the current user's id, or
    ``None`` when nobody is signed in), ``provider``, ``broker`` and ``cache`` (instances
    replacing the ones built from configuration; a ``cache`` still follows
    ``CHATAPP_CACHE_TTL_SECONDS``), ``url_prefix`` (overrides ``CHATAPP_URL_PREFIX``).

    ``init_app`` reads the settings below from ``app.config``, else the environment; it
    writes nothing into the host's config and leaves its ``secret_key`` alone (the
    default owner needs one: the host's, or ``CHATAPP_SECRET_KEY`` when the host has
    none). ``chatapp config`` prints the same table.

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
        overrides: dict[str, Any] = {}
        if self._url_prefix is not None:
            overrides["CHATAPP_URL_PREFIX"] = self._url_prefix
        settings = load_settings(ChainMap(overrides, app.config))

        if self._owner is None and not app.secret_key:
            # Only the default owner lives in the session cookie, so only it needs a key;
            # a host that brings its own owner keeps its session settings untouched.
            if not settings.secret_key:
                raise ConfigError(
                    "The default owner keeps an anonymous id in Flask's signed session cookie, "
                    "which needs a key: set app.secret_key (or CHATAPP_SECRET_KEY), or pass "
                    "ChatApp(owner=...) to name your signed-in users instead."
                )
            app.secret_key = settings.secret_key

        broker = self._broker or make_broker(settings)
        provider = self._provider or make_provider(settings)
        cache = None
        if settings.cache_ttl_seconds > 0:
            cache = self._cache if self._cache is not None else make_cache(settings, broker)
        metrics = Metrics(multiprocess_dir=settings.metrics_dir)
        runner = TurnRunner(
            broker,
            provider,
            model=settings.model,
            system_prompt=settings.system_prompt,
            cache=cache,
            cache_ttl_seconds=settings.cache_ttl_seconds,
            max_messages=settings.max_session_messages,
            max_session_bytes=settings.max_session_bytes,
            max_owner_bytes=settings.max_owner_bytes,
            cache_scope=settings.cache_scope,
            continuation=settings.continuation,
            metrics=metrics,
        )
        options = StreamOptions(settings.heartbeat_seconds, settings.retry_ms, settings.max_streams_per_owner)
        app.extensions["chatapp"] = ChatAppState(
            settings=settings,
            broker=broker,
            provider=provider,
            runner=runner,
            streams=Streams(
                broker, options, guard=SendGuard(settings.send_timeout_seconds), metrics=metrics, producing=runner.producing
            ),
            owner=self._owner or anonymous_owner,
            limiter=make_limiter(
                app,
                bp,
                settings,
                current_owner,
                anonymous=lambda: self._owner is None,
                refused=lambda: origin_refused(settings.cors_origins),
            ),
            cors=CorsPolicy(settings.cors_origins),
            tokens=StreamTokens(settings.stream_token_seconds, settings.secret_key),
            cache=cache,
            metrics=metrics,
            body_guard=SendGuard(settings.body_timeout_seconds, how=socket.SHUT_RD, what="a request body that stopped arriving"),
        )
        lifecycle.register(app.extensions["chatapp"])
        app.register_blueprint(bp, url_prefix=settings.url_prefix or None)
        if self._broker is None:
            # Flask has no app-shutdown hook: the broker chatapp built (a Redis pool and
            # its listener thread) closes when the app is collected, or at exit.
            weakref.finalize(app, _close, broker)


def _close(broker: Broker) -> None:
    broker.close()


ChatApp.__doc__ = (ChatApp.__doc__ or "") + "\n".join("    " + line if line else "" for line in describe().splitlines())
