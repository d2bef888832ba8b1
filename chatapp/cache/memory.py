"""The response cache in this process's memory: a TTL per entry, least recently used out.

Bounded in entries and in bytes (``CHATAPP_CACHE_MAX_BYTES``), so replies of any length
cannot grow the process without end.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict

from .base import CachedReply, ResponseCache

__all__ = ["MemoryResponseCache"]


class MemoryResponseCache(ResponseCache):
    """An in-process cache: a TTL per entry, at most ``max_entries`` and ``max_bytes`` (of
    stored JSON, counted as UTF-8), least recently used out."""

    name = "memory"

    def __init__(self, *, max_entries: int = 1024, max_bytes: int | None = None) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
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
                self.bytes -= _size(stored)
                return None
            self._entries.move_to_end(key)
        # Stored as JSON text: every hit gets its own copy, and the memory backend keeps
        # exactly what a networked one could.
        return json.loads(stored)

    def put(self, key: str, reply: CachedReply, ttl_seconds: float) -> None:
        if ttl_seconds <= 0:
            return
        stored = json.dumps(reply, ensure_ascii=False, separators=(",", ":"))
        size = _size(stored)
        if self.max_bytes is not None and size > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.bytes -= _size(old[1])
            self._entries[key] = (time.monotonic() + ttl_seconds, stored)
            self.bytes += size
            while len(self._entries) > self.max_entries or (self.max_bytes is not None and self.bytes > self.max_bytes):
                _, (_, dropped) = self._entries.popitem(last=False)
                self.bytes -= _size(dropped)


def _size(stored: str) -> int:
    # What the text costs in memory, at most 4 bytes a character.
    return len(stored) if stored.isascii() else 4 * len(stored)
