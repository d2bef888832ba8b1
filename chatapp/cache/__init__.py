"""The response cache: an identical request replays the stored reply. See :mod:`.base`."""

from __future__ import annotations

from .base import CachedReply, ResponseCache, cache_key
from .memory import MemoryResponseCache

__all__ = ["CachedReply", "MemoryResponseCache", "ResponseCache", "cache_key"]
