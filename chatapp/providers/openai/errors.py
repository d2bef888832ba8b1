"""The one place where the SDK's and the HTTP client's exceptions become chatapp errors.

=============================================  ============================  =========
what happened                                  code                          retryable
=============================================  ============================  =========
401, 403                                       ``upstream_auth``             no
429, or a rate-limit error inside the stream   ``upstream_rate_limited``     yes
an "overloaded" error (HTTP 529, in-stream)    ``upstream_overloaded``       yes
5xx                                            ``upstream_unavailable``      yes
408, or silence longer than the timeout        ``upstream_timeout``          yes
the chat is longer than the model's context    ``context_length_exceeded``   no
another 4xx (an unknown model)                 ``upstream_rejected``         no
refused, reset, cut before the reply ended     ``upstream_connection``       yes
ended cleanly with no finish reason            ``upstream_incomplete``       yes
a chunk that is not the protocol               ``upstream_bad_response``     no
another error object inside the stream         ``upstream_error``            yes
=============================================  ============================  =========

Messages are written here for users; the SDK's own text (which may quote the upstream)
reaches only the log, as the chained cause.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

import openai

from ...errors import (
    ContextLengthError,
    ProviderError,
    UpstreamAuthError,
    UpstreamBadResponseError,
    UpstreamConnectionError,
    UpstreamOverloadedError,
    UpstreamRateLimitedError,
    UpstreamRejectedError,
    UpstreamReportedError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)

__all__ = ["translate"]

_RATE_LIMITED = "The model server is busy or over its rate limit; try again shortly."
_OVERLOADED = "The model is overloaded right now; try again shortly."
_TOO_LONG = "This chat is longer than the model can read; start a new chat to go on."


def translate(exc: Exception) -> ProviderError | None:
    """The chatapp error for an SDK or HTTP-client exception; ``None`` for anything else."""
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status in (401, 403):
            return UpstreamAuthError(f"The model server refused chatapp's credentials (HTTP {status}).")
        if status == 429:
            return UpstreamRateLimitedError(_RATE_LIMITED)
        if status == 408:
            return UpstreamTimeoutError("The model server timed out (HTTP 408); try again.")
        if status == 529 or (status >= 500 and _kind(exc.body) == "overloaded"):
            return UpstreamOverloadedError(_OVERLOADED)
        if status >= 500:
            return UpstreamUnavailableError(f"The model server failed (HTTP {status}); try again.")
        if _kind(exc.body) == "context_length":
            return ContextLengthError(_TOO_LONG)
        return UpstreamRejectedError(f"The model server rejected the request (HTTP {status}).")
    if isinstance(exc, openai.APITimeoutError):
        return UpstreamTimeoutError("The model server stopped answering; try again.")
    if isinstance(exc, openai.APIConnectionError):
        return UpstreamConnectionError("The connection to the model server failed or was lost; try again.")
    if isinstance(exc, (openai.APIResponseValidationError, ValueError)):
        # ValueError: a chunk that is not JSON (json.JSONDecodeError) or not a chunk.
        return UpstreamBadResponseError("The model server sent a reply chatapp could not read.")
    if isinstance(exc, openai.APIError):
        # An error object inside a 200 stream: say what it was.
        kind = _kind(exc.body)
        if kind == "rate_limit":
            return UpstreamRateLimitedError(_RATE_LIMITED)
        if kind == "overloaded":
            return UpstreamOverloadedError(_OVERLOADED)
        if kind == "context_length":
            return ContextLengthError(_TOO_LONG)
        return UpstreamReportedError("The model server reported an error during the reply; try again.")
    timeouts, transport = _transport_errors()
    if isinstance(exc, timeouts):
        return UpstreamTimeoutError("The model server stopped answering; try again.")
    if isinstance(exc, (*transport, OSError)):
        return UpstreamConnectionError("The connection to the model server failed or was lost; try again.")
    return None


def _kind(body: Any) -> str | None:
    """What an upstream's error object says it is: rate_limit, overloaded, context_length.

    Servers differ in where they say it (OpenAI's ``code``, Anthropic-style ``type``,
    LiteLLM's numeric ``code``, vLLM's message), so every field is looked at.
    """
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"]
    if not isinstance(body, dict):
        return None
    said = " ".join(str(body.get(field) or "") for field in ("code", "type", "status", "message")).lower()
    if "context_length" in said or "context length" in said or "maximum context" in said or "too many tokens" in said:
        return "context_length"
    if "rate_limit" in said or "rate limit" in said or "429" in said or "throttl" in said:
        return "rate_limit"
    if "overloaded" in said or "529" in said:
        return "overloaded"
    return None


@functools.cache
def _transport_errors() -> tuple[tuple[type[Exception], ...], tuple[type[Exception], ...]]:
    """The HTTP client's timeout and transport exceptions.

    Older SDKs let them out of a stream's iteration unwrapped. The SDK's HTTP client is
    ``httpx2`` from openai 3 on and ``httpx`` before; whichever is installed counts.
    """
    timeouts: list[type[Exception]] = []
    transport: list[type[Exception]] = []
    for name in ("httpx2", "httpx"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        timeouts.append(module.TimeoutException)
        transport.append(module.TransportError)
    return tuple(timeouts), tuple(transport)
