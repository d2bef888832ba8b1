"""redis-py, imported only when present: chatapp imports without the ``redis`` extra.

Modules of this package name Redis's exceptions from here. Without redis-py they are
classes that nothing raises, and :func:`require` (called by every constructor that
would talk to Redis) fails with the install hint.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FULL", "UNAVAILABLE", "RedisError", "redis", "require"]

_HINT = "The Redis broker and cache need redis-py: pip install 'chatapp[redis]'"

try:
    import redis
    from redis.exceptions import ConnectionError as _ConnectionError
    from redis.exceptions import OutOfMemoryError as _OutOfMemoryError
    from redis.exceptions import ReadOnlyError as _ReadOnlyError
    from redis.exceptions import RedisError
    from redis.exceptions import TimeoutError as _TimeoutError
except ImportError:  # pragma: no cover - exercised by the core-only import test
    redis: Any = None  # type: ignore[no-redef]

    class RedisError(Exception):  # type: ignore[no-redef]
        """Stands in for redis-py's base error; never raised."""

    _ConnectionError = _ReadOnlyError = _TimeoutError = _OutOfMemoryError = RedisError  # type: ignore[misc,assignment]

#: Failures that mean "Redis cannot be reached right now" (a 503), as opposed to a bug.
UNAVAILABLE: tuple[type[Exception], ...] = (_ConnectionError, _TimeoutError, _ReadOnlyError)
#: Redis refused a write because it reached ``maxmemory`` (a 503 too, with its own code).
FULL: tuple[type[Exception], ...] = (_OutOfMemoryError,)


def require() -> Any:
    """The ``redis`` module; ``ImportError`` with the install hint when it is missing."""
    if redis is None:
        raise ImportError(_HINT)
    return redis


def connect(url: str) -> Any:
    """A client for ``url``: ``redis://``, ``rediss://`` and ``unix://`` give one server
    (a blocking pool of at most 64 connections for the whole process), and
    ``redis+cluster://host:port[,host:port...]`` (or ``rediss+cluster://``) a Redis
    Cluster, found from any of the nodes listed."""
    module = require()
    if "+cluster://" in url:
        from urllib.parse import unquote, urlsplit

        from redis.cluster import ClusterNode, RedisCluster

        parts = urlsplit(url)
        nodes = []
        for address in parts.netloc.rpartition("@")[2].split(","):
            host, _, port = address.strip().rpartition(":")
            nodes.append(ClusterNode(host.strip("[]") or "127.0.0.1", int(port or 6379)))
        return RedisCluster(
            startup_nodes=nodes,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            ssl=parts.scheme.startswith("rediss"),
            socket_timeout=10,
            socket_connect_timeout=2,
            max_connections=64,
        )
    # A blocking pool makes a burst wait for a free connection instead of failing or
    # opening thousands.
    return module.Redis(
        connection_pool=module.BlockingConnectionPool.from_url(
            url, max_connections=64, timeout=5, socket_timeout=10, socket_connect_timeout=2, health_check_interval=30
        )
    )


def is_cluster(client: Any) -> bool:
    """Whether ``client`` talks to a Redis Cluster."""
    if redis is None:
        return False
    from redis.cluster import RedisCluster

    return isinstance(client, RedisCluster)
