"""Reading one ``chat.completion.chunk``: text, reasoning, finish reason and usage.

Servers bend the format a little, and this is where the bends are absorbed:

- the thinking of reasoning models arrives in ``delta.reasoning_content`` (DeepSeek,
  llama.cpp, LM Studio) or ``delta.reasoning`` (vLLM, OpenRouter, Ollama's ``/v1``);
- a refusal is the model's answer too, streamed in ``delta.refusal``;
- the finish reason may be ``""``, ``eos``, ``eos_token`` (stop) or ``max_tokens``
  (length): :func:`finish_reason` maps each to the vocabulary of ``end``;
- the usage chunk may come after the finish chunk, with ``choices: []``, and may carry
  ``completion_tokens_details.reasoning_tokens``, which is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Chunk", "MalformedChunkError", "finish_reason", "read_chunk"]

_USAGE_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens")
_REASONING_FIELDS = ("reasoning_content", "reasoning")
_FINISH_REASONS = {
    "": "stop",
    "stop": "stop",
    "eos": "stop",
    "eos_token": "stop",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "length": "length",
    "max_tokens": "length",
    "content_filter": "content_filter",
}


class MalformedChunkError(ValueError):
    """A chunk parsed as JSON but is not a ``chat.completion.chunk``."""


@dataclass(frozen=True, slots=True)
class Chunk:
    text: str = ""
    reasoning: str = ""
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None


def finish_reason(upstream: str) -> str:
    """The ``end`` event's finish reason for what the upstream said (tool calls and
    other endings a chat cannot act on read as ``stop``)."""
    return _FINISH_REASONS.get(upstream.strip().lower(), "stop")


def read_chunk(chunk: Any) -> Chunk:
    """The text, reasoning, finish reason and usage of one chunk (of the first choice only)."""
    try:
        text, reasoning, reason = "", "", None
        choices = chunk.choices
        if choices is not None and not isinstance(choices, list):
            raise MalformedChunkError(f"choices of type {type(choices).__name__}")
        for choice in choices or ():
            index = getattr(choice, "index", None)
            if index is not None and not isinstance(index, int):
                raise MalformedChunkError(f"a choice of type {type(choice).__name__}")
            if index not in (0, None):
                continue
            delta = choice.delta
            if delta is not None:
                for piece in (delta.content, getattr(delta, "refusal", None)):
                    if piece is None:
                        continue
                    if not isinstance(piece, str):
                        raise MalformedChunkError(f"text of type {type(piece).__name__}")
                    text += piece
                for name in _REASONING_FIELDS:
                    thought = getattr(delta, name, None)
                    # Some servers send both names with the same text: take the first.
                    if isinstance(thought, str) and thought:
                        reasoning += thought
                        break
            if choice.finish_reason is not None:
                if not isinstance(choice.finish_reason, str):
                    raise MalformedChunkError(f"finish_reason of type {type(choice.finish_reason).__name__}")
                reason = choice.finish_reason
        return Chunk(text, reasoning, reason, _usage(getattr(chunk, "usage", None)))
    except (AttributeError, TypeError) as exc:
        raise MalformedChunkError(f"not a chat.completion.chunk: {exc}") from exc


def _usage(usage: Any) -> dict[str, Any] | None:
    if usage is None:
        return None
    counts: dict[str, Any] = {}
    for name in _USAGE_FIELDS:
        value = getattr(usage, name, None)
        if _is_count(value):
            counts[name] = value
    details = getattr(usage, "completion_tokens_details", None)
    reasoning_tokens = getattr(details, "reasoning_tokens", None) if details is not None else None
    if _is_count(reasoning_tokens):
        counts["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
    return counts or None


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
