"""The exception tree of chatapp.

::

    ChatAppError
    ├── ConfigError                 a bad setting; stops start-up, names the variable
    ├── APIError                    an HTTP answer of the JSON API: status + code
    │   ├── InvalidRequestError     400 invalid_request
    │   ├── UnauthenticatedError    401 unauthenticated
    │   ├── ForbiddenError          403 cross_origin_refused
    │   ├── SessionNotFoundError    404 session_not_found (also another owner's session)
    │   ├── RequestTimeoutError     408 body_timeout: the request body stopped arriving
    │   ├── ConflictError           409 generation_in_progress / history_full / too_many_sessions
    │   ├── PayloadTooLargeError    413 payload_too_large / message_too_long / history_too_large / quota_exceeded
    │   ├── UnsupportedMediaError   415 unsupported_media_type
    │   ├── RateLimitedError        429 rate_limited / too_many_streams, with Retry-After
    │   └── ServiceUnavailableError 503 broker_unavailable / broker_full / server_busy, Retry-After when known
    └── ProviderError               a reply could not be generated; becomes an ``error`` event
        ├── UpstreamAuthError       upstream_auth: key missing, wrong or not allowed
        ├── UpstreamRateLimitedError  upstream_rate_limited: 429, or said so in the stream (retryable)
        ├── UpstreamOverloadedError upstream_overloaded: the model is overloaded (retryable)
        ├── UpstreamUnavailableError  upstream_unavailable: 5xx (retryable)
        ├── ContextLengthError      context_length_exceeded: the chat is too long for the model
        ├── UpstreamRejectedError   upstream_rejected: another 4xx, e.g. an unknown model
        ├── UpstreamConnectionError upstream_connection: refused, reset, cut mid-reply (retryable)
        ├── UpstreamIncompleteError upstream_incomplete: ended with no finish reason (retryable)
        ├── UpstreamBadResponseError  upstream_bad_response: a chunk that is not the protocol
        ├── UpstreamReportedError   upstream_error: another error object inside the stream (retryable)
        ├── UpstreamTimeoutError    upstream_timeout: silent too long (retryable)
        ├── GenerationInterruptedError  the producer died mid-turn (retryable)
        └── ServerRestartingError   server_restarting: the server stopped mid-turn, nobody to hand it to (retryable)

``retryable`` says whether sending the same message again may work: true for faults of
the moment (rate limits, 5xx, lost connections, silence), false where a retry would fail
the same way (credentials, a rejected request, a server that does not speak the protocol,
a chat too long for the model).

Vendor exceptions (openai, redis) are translated into these at exactly one place each:
the provider and the broker modules. Nothing above them knows an SDK.
"""

from __future__ import annotations


class ChatAppError(Exception):
    """Base of every error chatapp raises on purpose."""


class ConfigError(ChatAppError):
    """A configuration value is missing or invalid; the message names the variable."""


class APIError(ChatAppError):
    """An error answered to an API client as ``{"error": {"code", "message"}}``."""

    status: int = 400
    code: str = "invalid_request"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidRequestError(APIError):
    status = 400
    code = "invalid_request"


class UnauthenticatedError(APIError):
    status = 401
    code = "unauthenticated"


class ForbiddenError(APIError):
    status = 403
    code = "cross_origin_refused"


class SessionNotFoundError(APIError):
    status = 404
    code = "session_not_found"

    def __init__(self, message: str = "No such chat session.") -> None:
        super().__init__(message)


class RequestTimeoutError(APIError):
    status = 408
    code = "body_timeout"


class ConflictError(APIError):
    status = 409
    code = "generation_in_progress"

    def __init__(self, message: str = "A reply is already being generated in this session.", *, code: str | None = None) -> None:
        super().__init__(message, code=code)


class PayloadTooLargeError(APIError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaError(APIError):
    status = 415
    code = "unsupported_media_type"


class RateLimitedError(APIError):
    """Too many requests or open streams; ``retry_after`` (seconds) becomes ``Retry-After``."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = max(1, retry_after)


class ServiceUnavailableError(APIError):
    """A dependency is down or full; ``retry_after`` (seconds) becomes ``Retry-After`` when set."""

    status = 503
    code = "broker_unavailable"

    def __init__(self, message: str, *, code: str | None = None, retry_after: int | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class ProviderError(ChatAppError):
    """A turn failed; ``code`` and ``retryable`` go to clients, the message too.

    The message must be safe to show to anyone: no keys, no URLs with credentials, no
    stack traces. Operators get the detail from the chained exception in the log.
    """

    code: str = "upstream_error"
    retryable: bool = True

    def __init__(self, message: str, *, code: str | None = None, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if retryable is not None:
            self.retryable = retryable


class UpstreamTimeoutError(ProviderError):
    code = "upstream_timeout"
    retryable = True


class GenerationInterruptedError(ProviderError):
    """The producer of a turn died mid-reply (its worker was killed); the partial reply is kept."""

    code = "generation_interrupted"
    retryable = True

    def __init__(self, message: str = "The reply was interrupted; please try again.") -> None:
        super().__init__(message)


class ServerRestartingError(ProviderError):
    """The server stopped while replying, and no other process could carry the turn on."""

    code = "server_restarting"
    retryable = True


class UpstreamAuthError(ProviderError):
    code = "upstream_auth"
    retryable = False


class UpstreamRateLimitedError(ProviderError):
    code = "upstream_rate_limited"
    retryable = True


class UpstreamUnavailableError(ProviderError):
    code = "upstream_unavailable"
    retryable = True


class UpstreamRejectedError(ProviderError):
    code = "upstream_rejected"
    retryable = False


class UpstreamConnectionError(ProviderError):
    code = "upstream_connection"
    retryable = True


class UpstreamBadResponseError(ProviderError):
    code = "upstream_bad_response"
    retryable = False


class UpstreamReportedError(ProviderError):
    code = "upstream_error"
    retryable = True


class UpstreamOverloadedError(ProviderError):
    code = "upstream_overloaded"
    retryable = True


class ContextLengthError(ProviderError):
    code = "context_length_exceeded"
    retryable = False


class UpstreamIncompleteError(ProviderError):
    code = "upstream_incomplete"
    retryable = True
