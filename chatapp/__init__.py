"""chatapp: stream LLM chat replies from Flask to browsers over Server-Sent Events.

The public API: :class:`ChatApp` (the Flask extension), :func:`create_app` (the
standalone app), :class:`ServerSentEvent` (the wire format), the interfaces a host may
implement (:class:`Provider`, :class:`Broker`, :class:`ResponseCache`) and the errors.
"""

from __future__ import annotations

from .broker.base import Broker
from .cache.base import ResponseCache
from .errors import (
    APIError,
    ChatAppError,
    ConfigError,
    ConflictError,
    ContextLengthError,
    ForbiddenError,
    GenerationInterruptedError,
    InvalidRequestError,
    PayloadTooLargeError,
    ProviderError,
    RateLimitedError,
    RequestTimeoutError,
    ServerRestartingError,
    ServiceUnavailableError,
    SessionNotFoundError,
    UnauthenticatedError,
    UnsupportedMediaError,
    UpstreamAuthError,
    UpstreamBadResponseError,
    UpstreamConnectionError,
    UpstreamIncompleteError,
    UpstreamOverloadedError,
    UpstreamRateLimitedError,
    UpstreamRejectedError,
    UpstreamReportedError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from .providers.base import Provider
from .sse import ServerSentEvent
from .web.app import create_app
from .web.extension import ChatApp

__all__ = [
    "APIError",
    "Broker",
    "ChatApp",
    "ChatAppError",
    "ConfigError",
    "ConflictError",
    "ContextLengthError",
    "ForbiddenError",
    "GenerationInterruptedError",
    "InvalidRequestError",
    "PayloadTooLargeError",
    "Provider",
    "ProviderError",
    "RateLimitedError",
    "RequestTimeoutError",
    "ResponseCache",
    "ServerRestartingError",
    "ServerSentEvent",
    "ServiceUnavailableError",
    "SessionNotFoundError",
    "UnauthenticatedError",
    "UnsupportedMediaError",
    "UpstreamAuthError",
    "UpstreamBadResponseError",
    "UpstreamConnectionError",
    "UpstreamIncompleteError",
    "UpstreamOverloadedError",
    "UpstreamRateLimitedError",
    "UpstreamRejectedError",
    "UpstreamReportedError",
    "UpstreamTimeoutError",
    "UpstreamUnavailableError",
    "__version__",
    "create_app",
]

__version__ = "0.2.0"
