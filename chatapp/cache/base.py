"""The response cache: an identical request within the TTL replays the stored reply.

A request is identical when the model, the system prompt, the whole history and the new
message are; :func:`cache_key` hashes exactly those. Only complete replies
(``finish_reason == "stop"``) are stored, by the turn runner. A stored reply is a plain
JSON-able mapping, so any backend can keep it as JSON::

    {"pieces": ["Hel", "lo"], "finish_reason": "stop", "usage": {...} | None,
     "reasoning": ["Let me", " think"]}     # only when the model showed its thinking

Backends implement :class:`ResponseCache`: :mod:`.memory` in this process,
:mod:`.redis` shared by every worker. A backend's own faults stay inside it: ``get`` answers ``None`` and ``put``
drops the reply, since a cache that is down must not fail the turn.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, NotRequired, TypedDict

from ..broker.base import Message

__all__ = ["CachedReply", "ResponseCache", "cache_key"]

#: Bumped when the key's input or the stored value changes shape, so old entries miss.
_KEY_VERSION = 2


class CachedReply(TypedDict):
    pieces: list[str]
    finish_reason: str
    usage: dict[str, Any] | None
    #: The thinking that came with the reply, in pieces; absent when there was none.
    reasoning: NotRequired[list[str]]


def cache_key(model: str, system_prompt: str, history: Sequence[Message], message: str, *, scope: str = "") -> str:
    """The sha256 of a canonical JSON of everything that decides the reply.

    ``history`` is what came before ``message``; message ids are left out, since they
    differ in every session while the conversation may be the same. ``scope`` (the owner,
    unless the cache is global) keeps one owner's replies from answering another.
    """
    canonical = json.dumps(
        {
            "v": _KEY_VERSION,
            "scope": scope,
            "model": model,
            "system": system_prompt,
            "history": [[m.role, m.content] for m in history],
            "message": message,
        },
        ensure_ascii=False,
        separators=(",", ":"),
        sort_keys=True,
    )
    # surrogatepass: a lone surrogate (the API refuses them, a host's code may not) must
    # still hash rather than fail the turn.
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


class ResponseCache(ABC):
    """Where complete replies are kept for ``CHATAPP_CACHE_TTL_SECONDS``."""

    name: str = "cache"

    @abstractmethod
    def get(self, key: str) -> CachedReply | None:
        """The reply stored under ``key``, or ``None`` when absent or expired."""

    @abstractmethod
    def put(self, key: str, reply: CachedReply, ttl_seconds: float) -> None:
        """Keep ``reply`` under ``key`` for ``ttl_seconds``."""

    def close(self) -> None:
        """Release connections; the default holds none."""
