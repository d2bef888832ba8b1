"""The response cache on Redis: shared by every worker and host of a deployment.

One string key per reply, ``chatapp:cache:<sha256>``, holding the reply as JSON and
expiring with ``CHATAPP_CACHE_TTL_SECONDS``. It uses the broker's connection pool. A
Redis fault is a miss (``get``) or a dropped reply (``put``): a cache that is down must
not fail the turn.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ..broker.redis.client import RedisError, require
from .base import CachedReply, ResponseCache

__all__ = ["RedisResponseCache"]

log = logging.getLogger("chatapp.cache")


class RedisResponseCache(ResponseCache):
    name = "redis"

    def __init__(self, client: Any) -> None:
        """``client``: a ``redis.Redis`` (chatapp passes the broker's, sharing its pool)."""
        require()
        self.client = client

    @staticmethod
    def _key(key: str) -> str:
        return f"chatapp:cache:{key}"

    def get(self, key: str) -> CachedReply | None:
        try:
            stored = self.client.get(self._key(key))
        except RedisError as exc:
            log.warning("response cache unavailable: %s", type(exc).__name__)
            return None
        if stored is None:
            return None
        reply: CachedReply = json.loads(stored)
        return reply

    def put(self, key: str, reply: CachedReply, ttl_seconds: float) -> None:
        if ttl_seconds <= 0:
            return
        stored = json.dumps(reply, ensure_ascii=False, separators=(",", ":"))
        try:
            self.client.set(self._key(key), stored.encode("utf-8", "surrogatepass"), px=int(ttl_seconds * 1000))
        except RedisError as exc:
            log.warning("response cache unavailable: %s", type(exc).__name__)
