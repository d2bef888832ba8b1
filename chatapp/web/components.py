"""The broker, provider and cache that the settings name, built once per app."""

from __future__ import annotations

from ..broker.base import Broker
from ..cache import ResponseCache
from ..config import Settings
from ..providers.base import Provider

__all__ = ["make_broker", "make_cache", "make_provider"]


def make_broker(settings: Settings) -> Broker:
    if settings.redis_url:
        from ..broker.redis import RedisBroker

        return RedisBroker(settings.redis_url, session_ttl_seconds=settings.session_ttl_seconds)
    from ..broker.memory import MemoryBroker

    return MemoryBroker(session_ttl_seconds=settings.session_ttl_seconds, max_bytes=settings.max_process_bytes)


def make_provider(settings: Settings) -> Provider:
    if settings.provider == "openai":
        from ..providers.openai import OpenAIProvider

        return OpenAIProvider.from_settings(settings)
    from ..providers.demo import DemoProvider

    return DemoProvider(delay_ms=settings.demo_delay_ms, reply_words=settings.demo_reply_words)


def make_cache(settings: Settings, broker: Broker) -> ResponseCache | None:
    """The response cache, ``None`` when disabled; on Redis when the broker is."""
    if settings.cache_ttl_seconds == 0:
        return None
    from ..broker.redis import RedisBroker

    if isinstance(broker, RedisBroker):
        from ..cache.redis import RedisResponseCache

        # Shared by every worker and host, on the broker's connection pool.
        return RedisResponseCache(broker.client)
    from ..cache.memory import MemoryResponseCache

    return MemoryResponseCache(max_bytes=settings.cache_max_bytes)
