"""The openai provider: any OpenAI-compatible server, through the official ``openai`` SDK.

OpenAI, LM Studio, Ollama, vLLM and llama.cpp's server all stream chat completions the
same way (``stream=True``, ``chat.completion.chunk`` events, ``data: [DONE]``). This
module is the one place where SDK and HTTP-client exceptions become chatapp errors:

=============================================  ==========================  =========
what happened                                  code                        retryable
=============================================  ==========================  =========
401, 403                                       ``upstream_auth``           no
429                                            ``upstream_rate_limited``   yes
5xx                                            ``upstream_unavailable``    yes
408, or silence longer than the timeout        ``upstream_timeout``        yes
another 4xx (an unknown model, a long prompt)  ``upstream_rejected``       no
refused, reset, cut before the reply ended     ``upstream_connection``     yes
a chunk that is not the protocol               ``upstream_bad_response``   no
an error object inside the stream              ``upstream_error``          yes
``finish_reason: content_filter``              ``content_filtered``        no
=============================================  ==========================  =========

Messages are written here for users; the SDK's own text (which may quote the upstream)
reaches only the log, as the chained cause.

What the SDK does not do by itself:

- **Silence.** The HTTP client's timeout is ``CHATAPP_UPSTREAM_TIMEOUT_SECONDS`` for
  connecting, writing and every read. A read waits for the next bytes of the response,
  so the one number bounds the wait for the first token and every gap between tokens.
- **Cancel.** A watcher waits on the turn's ``cancelled`` event and shuts the turn's
  socket down. That wakes the blocked read at once (a greenlet under gevent, a thread
  elsewhere; ``close()`` alone does not wake a thread blocked in ``recv``) and the
  upstream sees the connection close, so it stops generating. To know the socket from
  the moment it is connected, before any response exists, each turn has a connection of
  its own (no keep-alive) that reports itself through the HTTP client's ``trace``
  extension. A turn lasts seconds; one handshake per turn is cheap next to it.
- **Incomplete replies.** A stream that ends without a finish reason was cut short.
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import logging
import socket
import threading
from collections.abc import Iterator
from typing import Any

import openai

from .._concurrency import watch
from ..config import Settings
from ..errors import (
    ContentFilteredError,
    ProviderError,
    UpstreamAuthError,
    UpstreamBadResponseError,
    UpstreamConnectionError,
    UpstreamRateLimitedError,
    UpstreamRejectedError,
    UpstreamReportedError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from .base import ChatRequest, Completion, Provider

__all__ = ["OpenAIProvider"]

log = logging.getLogger("chatapp.providers.openai")

#: Sent when no key is configured for a server that needs none (Ollama, LM Studio,
#: llama.cpp): the SDK insists on some key.
_NO_KEY = "unused"

_USAGE_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens")

# The trace events after which the request's connection (plain, then TLS) is known.
_CONNECTED = frozenset({
    "connection.connect_tcp.complete",
    "connection.connect_unix_socket.complete",
    "connection.start_tls.complete",
})


class OpenAIProvider(Provider):
    """Streams replies from an OpenAI-compatible ``/chat/completions`` endpoint."""

    name = "openai"

    def __init__(
        self,
        *,
        model: str,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout_seconds: float = 60.0,
        max_history_messages: int = 40,
    ) -> None:
        # The settings name the variables (config.load_settings); these guard direct use.
        if not model:
            raise ValueError("OpenAIProvider needs a model name")
        if not api_key and not base_url:
            raise ValueError("OpenAIProvider needs an api_key, or a base_url of a server that needs none")
        if max_history_messages < 1:
            raise ValueError("max_history_messages must be at least 1")
        self.default_model = model
        self.max_history_messages = max_history_messages
        self.timeout_seconds = timeout_seconds
        # Some servers reject the stream_options field; once one has, stop sending it.
        self._usage_option = True
        # The SDK's own Limits class (httpx2's from openai 3 on, httpx's before); no
        # keep-alive, so each turn's connection is its own to shut on cancel.
        limits = type(openai.DEFAULT_CONNECTION_LIMITS)(
            max_connections=openai.DEFAULT_CONNECTION_LIMITS.max_connections,
            max_keepalive_connections=0,
        )
        http_client = openai.DefaultHttpxClient(
            timeout=openai.Timeout(timeout_seconds),
            limits=limits,
            event_hooks={"request": [_report_connection]},
        )
        self._client = openai.OpenAI(
            api_key=api_key or _NO_KEY,
            base_url=base_url,
            # A retry would re-send a turn the user is watching; the user decides.
            max_retries=0,
            timeout=openai.Timeout(timeout_seconds),
            http_client=http_client,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAIProvider:
        return cls(
            model=settings.model,
            api_key=settings.openai_api_key,
            base_url=settings.openai_base_url,
            timeout_seconds=settings.upstream_timeout_seconds,
            max_history_messages=settings.max_history_messages,
        )

    def messages(self, request: ChatRequest) -> list[dict[str, str]]:
        """What is sent upstream: the system prompt, then the latest history messages.

        The window starts at a user message and consecutive messages of one role are
        merged (a turn that failed before any text leaves two user messages in a row):
        the chat templates of many local models refuse anything but strict alternation.
        """
        window = list(request.messages[-self.max_history_messages :])
        while len(window) > 1 and window[0].role != "user":
            window.pop(0)
        out: list[dict[str, str]] = []
        for message in window:
            if out and out[-1]["role"] == message.role:
                out[-1]["content"] += "\n\n" + message.content
            else:
                out.append({"role": message.role, "content": message.content})
        if request.system_prompt:
            out.insert(0, {"role": "system", "content": request.system_prompt})
        return out

    def stream(self, request: ChatRequest, cancelled: threading.Event) -> Iterator[str | Completion]:
        connection = _Connection()
        stop_watching = watch(cancelled, connection.shut)
        chunks: Any = None
        finish_reason: str | None = None
        usage: dict[str, int] | None = None
        try:
            try:
                chunks = self._open(request, connection)
                for chunk in chunks:
                    text, reason, chunk_usage = _read_chunk(chunk)
                    finish_reason = reason or finish_reason
                    usage = chunk_usage or usage
                    if text:
                        yield text
            except Exception as exc:
                if cancelled.is_set():
                    # Our own shutdown ended the read: a cancel, not a fault.
                    return
                error = _translate(exc)
                if error is None:
                    raise
                if finish_reason is None or not isinstance(error, (UpstreamConnectionError, UpstreamTimeoutError)):
                    raise error from exc
                # The reply was complete; only the usage chunk or [DONE] went missing.
                log.info("upstream connection ended after the reply was complete: %r", exc)
        finally:
            stop_watching()
            if chunks is not None:
                try:
                    chunks.close()
                except Exception:
                    log.debug("closing the upstream response failed", exc_info=True)
        if cancelled.is_set():
            return
        if finish_reason is None:
            raise UpstreamConnectionError("The connection to the model server ended before the reply was complete.")
        if finish_reason == "content_filter":
            raise ContentFilteredError("The model server's content filter stopped this reply.")
        yield Completion("length" if finish_reason == "length" else "stop", usage)

    def _open(self, request: ChatRequest, connection: _Connection) -> Any:
        """Send the request; the SDK returns once the response headers are in."""
        kwargs: dict[str, Any] = {"model": request.model, "messages": self.messages(request), "stream": True}
        if self._usage_option:
            kwargs["stream_options"] = {"include_usage": True}
        token = _current.set(connection)
        try:
            try:
                return self._client.chat.completions.create(**kwargs)
            except openai.BadRequestError as exc:
                if "stream_options" not in kwargs or "stream_options" not in str(exc):
                    raise
                log.warning("the upstream refuses stream_options; replies will carry no usage from now on")
                self._usage_option = False
                del kwargs["stream_options"]
                return self._client.chat.completions.create(**kwargs)
        finally:
            _current.reset(token)

    def close(self) -> None:
        self._client.close()


# -- chunks -----------------------------------------------------------------------------


class _MalformedChunkError(ValueError):
    """A chunk parsed as JSON but is not a ``chat.completion.chunk``."""


def _read_chunk(chunk: Any) -> tuple[str, str | None, dict[str, int] | None]:
    """The text, finish reason and usage of one chunk (of the first choice only)."""
    try:
        text, reason = "", None
        choices = chunk.choices
        if choices is not None and not isinstance(choices, list):
            raise _MalformedChunkError(f"choices of type {type(choices).__name__}")
        for choice in choices or ():
            index = getattr(choice, "index", None)
            if index is not None and not isinstance(index, int):
                raise _MalformedChunkError(f"a choice of type {type(choice).__name__}")
            if index not in (0, None):
                continue
            delta = choice.delta
            if delta is not None:
                # A refusal is the model's answer too, streamed in a field of its own.
                for piece in (delta.content, getattr(delta, "refusal", None)):
                    if piece is None:
                        continue
                    if not isinstance(piece, str):
                        raise _MalformedChunkError(f"text of type {type(piece).__name__}")
                    text += piece
            if choice.finish_reason is not None:
                if not isinstance(choice.finish_reason, str):
                    raise _MalformedChunkError(f"finish_reason of type {type(choice.finish_reason).__name__}")
                reason = choice.finish_reason
        return text, reason, _usage(getattr(chunk, "usage", None))
    except (AttributeError, TypeError) as exc:
        raise _MalformedChunkError(f"not a chat.completion.chunk: {exc}") from exc


def _usage(usage: Any) -> dict[str, int] | None:
    if usage is None:
        return None
    counts: dict[str, int] = {}
    for name in _USAGE_FIELDS:
        value = getattr(usage, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            counts[name] = value
    return counts or None


# -- errors -----------------------------------------------------------------------------


def _translate(exc: Exception) -> ProviderError | None:
    """The chatapp error for an SDK or HTTP-client exception; ``None`` for anything else."""
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status in (401, 403):
            return UpstreamAuthError(f"The model server refused chatapp's credentials (HTTP {status}).")
        if status == 429:
            return UpstreamRateLimitedError("The model server is busy or over its rate limit (HTTP 429); try again shortly.")
        if status == 408:
            return UpstreamTimeoutError("The model server timed out (HTTP 408); try again.")
        if status >= 500:
            return UpstreamUnavailableError(f"The model server failed (HTTP {status}); try again.")
        return UpstreamRejectedError(f"The model server rejected the request (HTTP {status}).")
    if isinstance(exc, openai.APITimeoutError):
        return UpstreamTimeoutError("The model server stopped answering; try again.")
    if isinstance(exc, openai.APIConnectionError):
        return UpstreamConnectionError("The connection to the model server failed or was lost; try again.")
    if isinstance(exc, (openai.APIResponseValidationError, ValueError)):
        # ValueError: a chunk that is not JSON (json.JSONDecodeError) or not a chunk.
        return UpstreamBadResponseError("The model server sent a reply chatapp could not read.")
    if isinstance(exc, openai.APIError):
        return UpstreamReportedError("The model server reported an error during the reply; try again.")
    timeouts, transport = _transport_errors()
    if isinstance(exc, timeouts):
        return UpstreamTimeoutError("The model server stopped answering; try again.")
    if isinstance(exc, (*transport, OSError)):
        return UpstreamConnectionError("The connection to the model server failed or was lost; try again.")
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


# -- cancel -----------------------------------------------------------------------------

_current: contextvars.ContextVar[_Connection | None] = contextvars.ContextVar("chatapp_upstream_connection", default=None)


def _report_connection(request: Any) -> None:
    """An HTTP-client request hook: have the request's connection report its socket.

    It runs in the greenlet or thread that sends the request, where the turn put its
    :class:`_Connection` in a context variable (context variables are per greenlet).
    """
    connection = _current.get()
    if connection is not None:
        request.extensions["trace"] = connection.trace


class _Connection:
    """The socket of one upstream request, so that a cancel can shut it in any phase."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stream: Any = None
        self._shut = False

    def trace(self, event: str, info: dict[str, Any]) -> None:
        if event not in _CONNECTED:
            return
        with self._lock:
            self._stream = info.get("return_value")
            shut = self._shut
        if shut:
            # Cancelled while connecting: close what was just opened.
            self._shutdown()

    def shut(self) -> None:
        with self._lock:
            self._shut = True
        self._shutdown()

    def _shutdown(self) -> None:
        stream = self._stream
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is None:
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            # Already closed (its file descriptor is then -1, so nothing else is hit).
            pass
