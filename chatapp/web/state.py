"""What chatapp keeps for one app, in ``app.extensions["chatapp"]``."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from flask import current_app
from flask_limiter import Limiter

from ..broker.base import Broker
from ..cache import ResponseCache
from ..config import Settings
from ..metrics import Metrics
from ..providers.base import Provider
from ..turns import TurnRunner
from .cors import CorsPolicy
from .owner import OwnerCallable
from .sendguard import SendGuard
from .streaming import Streams
from .tokens import StreamTokens

__all__ = ["ChatAppState", "state"]


@dataclass(eq=False)
class ChatAppState:
    """Everything chatapp keeps for one app."""

    settings: Settings
    broker: Broker
    provider: Provider
    runner: TurnRunner
    streams: Streams
    owner: OwnerCallable
    limiter: Limiter
    cors: CorsPolicy
    #: Signs and checks the token in each ``stream_url``.
    tokens: StreamTokens
    #: ``None`` when ``CHATAPP_CACHE_TTL_SECONDS`` is 0.
    cache: ResponseCache | None = None
    #: This app's Prometheus registry and recording API (``metrics.cache_hit()``, ...).
    metrics: Metrics = field(default_factory=Metrics)
    #: The deadline on request bodies (``CHATAPP_BODY_TIMEOUT_SECONDS``).
    body_guard: SendGuard = field(default_factory=lambda: SendGuard(20.0, how=socket.SHUT_RD, what="a request body"))


def state() -> ChatAppState:
    """The chatapp state of the current app."""
    found: ChatAppState = current_app.extensions["chatapp"]
    return found
