"""The response cache in this process's memory: a TTL per entry, least recently used out."""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict

from .base import CachedReply, ResponseCache

__all__ = ["MemoryResponseCache"]


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
