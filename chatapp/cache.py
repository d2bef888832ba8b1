"""The response cache: an identical request within the TTL replays the stored reply.

A request is identical when the model, the system prompt, the whole history and the new
message are; :func:`cache_key` hashes exactly those. Only complete replies
(``finish_reason == "stop"``) are stored, by the turn runner. A stored reply is a plain
JSON-able mapping, so any backend can keep it as JSON::

    {"pieces": ["Hel", "lo"], "finish_reason": "stop", "usage": {...} | None}

Backends implement :class:`ResponseCache`; :class:`MemoryResponseCache` lives in this
process. A backend's own faults stay inside it: ``get`` answers ``None`` and ``put``
drops the reply, since a cache that is down must not fail the turn.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, TypedDict

from .broker.base import Message

__all__ = ["CachedReply", "MemoryResponseCache", "ResponseCache", "cache_key"]

#: Bumped when the key's input or the stored value changes shape, so old entries miss.
_KEY_VERSION = 1


class CachedReply(TypedDict):
    pieces: list[str]
    finish_reason: str
    usage: dict[str, Any] | None


def cache_key(model: str, system_prompt: str, history: Sequence[Message], message: str) -> str:
    """The sha256 of a canonical JSON of everything that decides the reply.

    ``history`` is what came before ``message``; message ids are left out, since they
    differ in every session while the conversation may be the same.
    """
    canonical = json.dumps(
        {
            "v": _KEY_VERSION,
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


class MemoryResponseCache(ResponseCache):
    """An in-process cache: a TTL per entry and at most ``max_entries``, least recently used out."""

    name = "memory"

    def __init__(self, *, max_entries: int = 1024) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> CachedReply | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            expires, stored = entry
            if time.monotonic() >= expires:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
        # Stored as JSON text: every hit gets its own copy, and the memory backend keeps
        # exactly what a networked one could.
        return json.loads(stored)

    def put(self, key: str, reply: CachedReply, ttl_seconds: float) -> None:
        if ttl_seconds <= 0:
            return
        stored = json.dumps(reply, ensure_ascii=False, separators=(",", ":"))
        with self._lock:
            self._entries[key] = (time.monotonic() + ttl_seconds, stored)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
