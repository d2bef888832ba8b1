"""The OpenAI provider: the class, its request and its stream loop.

See :mod:`chatapp.providers.openai` for what it absorbs of each server's dialect.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import openai

from ..._concurrency import call_later, watch
from ...config import Settings
from ...errors import UpstreamConnectionError, UpstreamIncompleteError, UpstreamTimeoutError
from ..base import ChatRequest, Completion, Provider, Reasoning, StreamItem
from ..thinking import ThinkSplitter
from . import connection as wire
from .chunks import finish_reason, read_chunk
from .errors import translate

__all__ = ["OpenAIProvider"]

log = logging.getLogger("chatapp.providers.openai")

#: Sent when no key is configured for a server that needs none (Ollama, LM Studio,
#: llama.cpp): the SDK insists on some key.
_NO_KEY = "unused"


class OpenAIProvider(Provider):
    """Streams replies from an OpenAI-compatible ``/chat/completions`` endpoint."""

    name = "openai"
    #: By prefill (see :meth:`continue_reply`), where ``CHATAPP_CONTINUE=prefill`` says so.
    can_continue = True

    def __init__(
        self,
        *,
        model: str,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout_seconds: float = 60.0,
        max_history_messages: int = 40,
        think_tags: bool = True,
        finish_grace_seconds: float = 2.0,
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
        #: Whether ``<think>...</think>`` at the start of the content is reasoning.
        self.think_tags = think_tags
        #: How long a stream may stay open after its finish reason before it is ended.
        self.finish_grace_seconds = finish_grace_seconds
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
            event_hooks={"request": [wire.on_request], "response": [wire.on_response]},
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
            think_tags=settings.think_tags == "auto",
            finish_grace_seconds=settings.finish_grace_seconds,
        )

    def messages(self, request: ChatRequest) -> list[dict[str, str]]:
        """What is sent upstream: the system prompt, then the latest history messages.

        The window starts at a user message and consecutive messages of one role are
        merged (a turn that failed before any text leaves two user messages in a row):
        the chat templates of many local models refuse anything but strict alternation.
        Reasoning is never sent back, and a reply that was only reasoning is left out.
        """
        window = list(request.messages[-self.max_history_messages :])
        while len(window) > 1 and window[0].role != "user":
            window.pop(0)
        out: list[dict[str, str]] = []
        for message in window:
            if message.role == "assistant" and not message.content:
                continue
            if out and out[-1]["role"] == message.role:
                out[-1]["content"] += "\n\n" + message.content
            else:
                out.append({"role": message.role, "content": message.content})
        if request.system_prompt:
            out.insert(0, {"role": "system", "content": request.system_prompt})
        return out

    def stream(self, request: ChatRequest, cancelled: threading.Event) -> Iterator[StreamItem]:
        return self._stream(request, cancelled, self.messages(request), {}, think_tags=self.think_tags)

    def continue_reply(self, request: ChatRequest, partial: str, cancelled: threading.Event) -> Iterator[StreamItem]:
        """Continue ``partial`` by prefill: the history, then the partial reply as a trailing
        assistant message that the model goes on writing.

        llama.cpp's server, Ollama and LM Studio continue a trailing assistant message as
        it is; vLLM does with ``continue_final_message`` (and no new generation prompt);
        DeepSeek with ``"prefix": true`` on that message (on its beta endpoint). Each
        ignores the others' fields. OpenAI's own API answers afresh instead, which is why
        ``CHATAPP_CONTINUE`` defaults to ``restart``.
        """
        messages: list[dict[str, Any]] = [*self.messages(request), {"role": "assistant", "content": partial, "prefix": True}]
        extra = {"continue_final_message": True, "add_generation_prompt": False}
        # The answer has begun, so a <think> tag now would be text.
        return self._stream(request, cancelled, messages, extra, think_tags=False)

    def _stream(
        self, request: ChatRequest, cancelled: threading.Event, messages: list[dict[str, Any]], extra: dict[str, Any], *, think_tags: bool
    ) -> Iterator[StreamItem]:
        connection = wire.Connection()
        stop_watching = watch(cancelled, connection.shut)
        stop_grace = None
        chunks: Any = None
        finish: str | None = None
        usage: dict[str, Any] | None = None
        splitter = ThinkSplitter() if think_tags else None
        try:
            try:
                chunks = self._open(request, connection, messages, extra)
                for chunk in chunks:
                    part = read_chunk(chunk)
                    if part.reasoning:
                        yield Reasoning(part.reasoning)
                    if part.text:
                        if splitter is not None:
                            yield from splitter.feed(part.text)
                        else:
                            yield part.text
                    usage = part.usage or usage
                    if part.finish_reason is not None:
                        if finish is None:
                            # Some servers send the finish reason and then hold the
                            # connection open with no [DONE]: end it after a grace period
                            # (the usage chunk, when there is one, comes within it).
                            stop_grace = call_later(self.finish_grace_seconds, connection.shut)
                        finish = part.finish_reason
            except Exception as exc:
                if cancelled.is_set():
                    # Our own shutdown ended the read: a cancel, not a fault.
                    return
                error = translate(exc)
                if error is None:
                    raise
                if finish is None or not isinstance(error, (UpstreamConnectionError, UpstreamTimeoutError)):
                    raise error from exc
                # The reply was complete; only the usage chunk or [DONE] went missing.
                log.info("upstream connection ended after the reply was complete: %r", exc)
        finally:
            stop_watching()
            if stop_grace is not None:
                stop_grace()
            if chunks is not None:
                try:
                    chunks.close()
                except Exception:
                    log.debug("closing the upstream response failed", exc_info=True)
        if cancelled.is_set():
            return
        if splitter is not None:
            yield from splitter.finish()
        if finish is None:
            if not connection.saw_done:
                raise UpstreamIncompleteError("The model server ended the reply before it was complete; try again.")
            finish = ""
        yield Completion(finish_reason(finish), usage)

    def _open(self, request: ChatRequest, connection: wire.Connection, messages: list[dict[str, Any]], extra: dict[str, Any]) -> Any:
        """Send the request; the SDK returns once the response headers are in."""
        kwargs: dict[str, Any] = {"model": request.model, "messages": messages, "stream": True}
        if extra:
            kwargs["extra_body"] = extra
        if self._usage_option:
            kwargs["stream_options"] = {"include_usage": True}
        token = wire.current.set(connection)
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
            wire.current.reset(token)

    def close(self) -> None:
        self._client.close()
