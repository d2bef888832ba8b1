"""The OpenAI provider: any OpenAI-compatible server, through the official ``openai`` SDK.

OpenAI, LM Studio, Ollama, vLLM and llama.cpp's server all stream chat completions the
same way (``stream=True``, ``chat.completion.chunk`` events, ``data: [DONE]``), each
bending it a little. Modules, one job each: :mod:`.provider` (the class and its stream
loop), :mod:`.chunks` (one chunk's text, reasoning, finish reason and usage), :mod:`.errors`
(the one place SDK exceptions become chatapp errors), :mod:`.connection` (the request's
socket and its SSE frames).

What the SDK does not do by itself:

- **Silence.** The HTTP client's timeout is ``CHATAPP_UPSTREAM_TIMEOUT_SECONDS`` for
  connecting, writing and every read. A read waits for the next bytes of the response,
  so the one number bounds the wait for the first token and every gap between tokens.
- **Cancel.** A watcher shuts the turn's own upstream socket (:mod:`.connection`), so
  the read wakes at once and the upstream stops generating. Each turn has a connection
  of its own; one handshake per turn is cheap next to a turn.
- **Reasoning.** ``reasoning_content`` or ``reasoning`` deltas, and with
  ``CHATAPP_THINK_TAGS=auto`` a ``<think>...</think>`` block opening the content, become
  :class:`~chatapp.providers.base.Reasoning` pieces. Reasoning is never sent back upstream.
- **Frames the SDK would choke on** (keep-alive comments, frames with only ``id:`` or
  ``retry:``) are dropped before it sees them.
- **Endings.** A stream held open after its finish reason is ended after
  ``CHATAPP_FINISH_GRACE_SECONDS``; one that ends with no finish reason and no
  ``[DONE]`` was cut short (``upstream_incomplete``), while ``[DONE]`` alone means stop.
"""

from __future__ import annotations

from .provider import OpenAIProvider

__all__ = ["OpenAIProvider"]
