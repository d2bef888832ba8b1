"""Rate limits on the requests that cost: creating sessions, posting messages, reading history.

Flask-Limiter does the counting, in ``memory://`` or, when ``CHATAPP_REDIS_URL`` is set,
in that Redis so every worker shares one count. Three budgets:

- ``CHATAPP_RATE_LIMIT``, per owner (the anonymous cookie id or the host's user id):
  creating sessions and posting messages together (``POST /api/chat``, which does both
  at once, counts once);
- ``CHATAPP_ADDRESS_RATE_LIMIT``, per client address, for anonymous owners creating
  sessions: a new anonymous owner costs only a dropped cookie, so without it a script
  could start as many owners (each with its own per-owner budgets) as it likes. The
  address is ``request.remote_addr``: behind ``CHATAPP_TRUSTED_PROXIES`` (werkzeug's
  ``ProxyFix``) the forwarded client's, else the connection's;
- ``CHATAPP_HISTORY_RATE_LIMIT``, per owner, on history reads.

A request refused by the Origin check counts against nothing: a page of another origin
cannot spend its visitor's budget.

Flask-Limiter hooks into the whole app, so this limiter is told to ignore every request
outside chatapp's blueprint and any default or application-wide limits a host may have
configured for its own Flask-Limiter: the host's routes are never counted here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from flask import Blueprint, Flask, request
from flask_limiter import Limiter, RateLimitExceeded

from ..config import Settings
from ..errors import RateLimitedError

__all__ = ["ADDRESS_LIMITED_ENDPOINTS", "LIMITED_ENDPOINTS", "make_limiter", "rate_limited_error", "storage_uri"]

#: The endpoints whose POSTs draw on ``CHATAPP_RATE_LIMIT``.
LIMITED_ENDPOINTS = frozenset({"chatapp.create_session", "chatapp.post_message", "chatapp.chat"})
#: The endpoints whose POSTs by anonymous owners draw on ``CHATAPP_ADDRESS_RATE_LIMIT``:
#: those that create a session.
ADDRESS_LIMITED_ENDPOINTS = frozenset({"chatapp.create_session", "chatapp.chat"})
#: The endpoints whose GETs draw on ``CHATAPP_HISTORY_RATE_LIMIT``.
HISTORY_ENDPOINTS = frozenset({"chatapp.get_session"})


def storage_uri(settings: Settings) -> str:
    """Where the counts live: the Redis of ``CHATAPP_REDIS_URL`` when set, else memory."""
    url = settings.redis_url
    if not url:
        return "memory://"
    # redis-py spells a Unix socket unix:///path; the limits library, redis+unix:///path.
    if url.startswith("unix://"):
        return "redis+unix://" + url[len("unix://"):]
    return url


def make_limiter(
    app: Flask,
    blueprint: Blueprint,
    settings: Settings,
    owner: Callable[[], str | None],
    *,
    anonymous: Callable[[], bool] = lambda: True,
    refused: Callable[[], bool] = lambda: False,
) -> Limiter:
    """A limiter for ``blueprint`` on ``app``, counting per ``owner()`` and per address.

    ``anonymous()`` says whether owners are the anonymous cookie kind (the address limit
    applies to them only); ``refused()`` whether the request will be refused before any
    view runs (the Origin check), which then counts against nothing.
    """

    def key() -> str:
        return owner() or ""

    def exempt() -> bool:
        # Preflights and other methods are free, and so is a request with no owner: the
        # view answers 401, which costs nothing worth counting.
        return request.method != "POST" or request.endpoint not in LIMITED_ENDPOINTS or refused() or not owner()

    def address() -> str:
        return request.remote_addr or ""

    def address_exempt() -> bool:
        return request.method != "POST" or request.endpoint not in ADDRESS_LIMITED_ENDPOINTS or not anonymous() or refused()

    def history_exempt() -> bool:
        return request.method != "GET" or request.endpoint not in HISTORY_ENDPOINTS or not owner()

    limiter = Limiter(
        key,
        storage_uri=storage_uri(settings),
        strategy="fixed-window",
        key_prefix="chatapp",
        headers_enabled=False,
        # A host's RATELIMIT_DEFAULT / RATELIMIT_APPLICATION are for its own limiter.
        default_limits_exempt_when=lambda: True,
        application_limits_exempt_when=lambda: True,
        # A counting store that is down (or a Redis out of memory) lets requests through
        # rather than turning every chat into an error: the counts move to this process's
        # memory with one warning, and back once the store answers again.
        swallow_errors=True,
        in_memory_fallback_enabled=True,
    )
    limiter.request_filter(lambda: request.blueprint != blueprint.name)
    limiter.shared_limit(settings.rate_limit, scope="writes", methods=["POST"], exempt_when=exempt)(blueprint)
    limiter.shared_limit(
        settings.address_rate_limit, scope="address", key_func=address, methods=["POST"], exempt_when=address_exempt
    )(blueprint)
    limiter.shared_limit(settings.history_rate_limit, scope="history", methods=["GET"], exempt_when=history_exempt)(blueprint)
    limiter.init_app(app)
    return limiter


def rate_limited_error(limiter: Limiter, exc: RateLimitExceeded) -> RateLimitedError:
    """Flask-Limiter's breach as our 429, with the seconds until the window resets."""
    current = limiter.current_limit
    wait = math.ceil(current.window.reset_time - time.time()) if current is not None else 1
    return RateLimitedError(
        f"Too many requests: at most {exc.limit.limit}. Try again in {max(1, wait)} seconds.",
        retry_after=wait,
    )
