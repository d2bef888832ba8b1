"""The Redis broker: sessions, history and event logs shared by every worker and host.

Keys of one session share the hash tag ``{<session id>}``, so every Lua script touches
one slot and the design holds on Redis Cluster::

    chatapp:{sid}:meta      hash    owner, turn (running turn's reply id or ""),
                                    after (last event id before the current turn),
                                    prev (the same for the previous turn)
    chatapp:{sid}:messages  list    history, one JSON message each
    chatapp:{sid}:events    stream  the previous and the current turn's events
    chatapp:{sid}:alive     string  set by the running producer, expires in seconds
    chatapp:{sid}:cancel    string  the reply id whose turn should stop
    chatapp:streams:<owner> zset    an owner's open streams on every host, by lease end
    chatapp:owner:<owner>   zset    an owner's session ids (by creation time); ids
                                    whose session expired leave it when counted

All of a session's keys expire after ``CHATAPP_SESSION_TTL_SECONDS`` without activity.

**Events.** A producer writes a batch of events as one stream entry (:mod:`.entries`),
so Redis sees one command per batch, not per token, while every event keeps its own id.

**Wake-ups.** Each worker process holds one pattern subscription to
``chatapp:*:notify``. Producers publish after each write; the worker's listener wakes
its local readers, which then read the stream from pooled connections. So a worker holds
a few Redis connections whatever the number of open streams, and nothing polls.

**Liveness.** The producer refreshes the ``alive`` key while it runs. A reader that has
waited a liveness period with no events, while the session says a turn runs and the key
is gone, appends ``error``/``generation_interrupted`` and ``end`` through a script that
does so at most once, so two readers on two hosts cannot both append.

Modules, one job each: :mod:`.keys` (names), :mod:`.entries` (the entry format),
:mod:`.writer` (a turn's batched writes and liveness), :mod:`.notifications` (the
subscription), :mod:`.reader` (a stream reader), :mod:`.scripts` (the atomic steps),
:mod:`.broker` (the :class:`~chatapp.broker.base.Broker` on top of them), :mod:`.client`
(redis-py, optional).
"""

from __future__ import annotations

from .broker import RedisBroker

__all__ = ["RedisBroker"]
