"""Turn broker events into a streaming response: headers, retry, heartbeats, close.

The view resolves everything that needs the request (owner, session, last id) and hands
plain values to :class:`EventStream`, which never touches the request context. WSGI
servers call ``close()`` on the response iterable when the client leaves (gunicorn's
workers, gevent's pywsgi, werkzeug), even when iteration never started; that is where
the reader's slot is released, so a reader can never leak.
"""

from __future__ import annotations

import math
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import TYPE_CHECKING

from flask import Response

from .broker.base import Broker, Event
from .errors import RateLimitedError, ServiceUnavailableError, SessionNotFoundError
from .sendguard import SendGuard
from .sse import PING, ServerSentEvent

if TYPE_CHECKING:
    from .metrics import Metrics

__all__ = ["EventStream", "StreamRegistry", "event_stream_response", "STREAM_HEADERS"]

#: The largest write a stream makes, give or take one event.
BATCH_BYTES = 64 * 1024

STREAM_HEADERS = {
    "Cache-Control": "no-cache",
    # nginx (and proxies that copy it) buffer responses unless told not to.
    "X-Accel-Buffering": "no",
}


class StreamRegistry:
    """Counts open streams: this process's, in total and per owner, and, when the broker
    is shared by several processes, each owner's across all of them."""

    def __init__(self, shared: Broker | None = None, *, lease_seconds: float = 60.0) -> None:
        self._lock = threading.Lock()
        self._by_owner: dict[str, int] = {}
        self.total = 0
        self._shared = shared
        #: A shared slot lapses unless renewed within this, so a killed worker's come back.
        self.lease_seconds = lease_seconds

    def acquire(self, owner: str, limit: int | None = None, *, retry_after: int = 1) -> str:
        """Take a slot for ``owner``; :class:`RateLimitedError` when ``limit`` are taken.

        Returns the slot's token, for :meth:`renew` and :meth:`release`.
        """
        with self._lock:
            held = self._by_owner.get(owner, 0)
            # Checked and taken under one lock, so concurrent opens cannot overshoot.
            if limit is not None and held >= limit:
                raise _too_many_streams(held, retry_after)
            self._by_owner[owner] = held + 1
            self.total += 1
        token = ""
        if self._shared is not None:
            token = self._shared.hold_stream(owner, limit, self.lease_seconds)
            if token is None:
                self._forget(owner)
                raise _too_many_streams(limit or 0, retry_after)
        return token

    def renew(self, owner: str, token: str) -> None:
        if self._shared is not None and token:
            self._shared.renew_stream(owner, token, self.lease_seconds)

    def release(self, owner: str, token: str = "") -> None:
        self._forget(owner)
        if self._shared is not None and token:
            self._shared.release_stream(owner, token)

    def _forget(self, owner: str) -> None:
        with self._lock:
            left = self._by_owner.get(owner, 0) - 1
            if left > 0:
                self._by_owner[owner] = left
            else:
                self._by_owner.pop(owner, None)
            self.total -= 1

    def count(self, owner: str) -> int:
        return self._by_owner.get(owner, 0)


def _too_many_streams(held: int, retry_after: int) -> RateLimitedError:
    return RateLimitedError(
        f"You already have {held} open streams; close one first.",
        code="too_many_streams",
        retry_after=retry_after,
    )


class EventStream:
    """The response iterable of one reader: a WSGI iterable with an idempotent close.

    It feeds the open-stream gauge and the heartbeat counter of ``metrics``, and runs the
    callbacks given to :meth:`call_on_close` (the request log's line) when it closes.
    """

    def __init__(
        self,
        broker: Broker,
        session_id: str,
        after: str | None,
        *,
        backlog: list[Event],
        follow: bool,
        heartbeat: float,
        retry_ms: int,
        registry: StreamRegistry,
        owner: str,
        max_streams: int | None = None,
        guard: SendGuard | None = None,
        sock: socket.socket | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._registry = registry
        self._owner = owner
        # Raises before anything else is held, so a refused stream leaks nothing. A slot
        # frees when a reader leaves, so the browser's reconnect delay is a fair wait.
        self._slot = registry.acquire(owner, max_streams, retry_after=math.ceil(retry_ms / 1000))
        self._guard = guard if sock is not None else None
        self._sock = sock
        self._closed = False
        self._metrics = metrics
        self._on_close: list[Callable[[], None]] = []
        if metrics is not None:
            metrics.stream_opened()
        renew = (lambda: registry.renew(owner, self._slot)) if self._slot else None
        pinged = metrics.heartbeat if metrics is not None else None
        self._frames = self._generate(
            broker, session_id, after, backlog, follow, heartbeat, retry_ms, renew, registry.lease_seconds / 3, pinged
        )

    def call_on_close(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the stream closes (also when it was never iterated)."""
        self._on_close.append(callback)

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> bytes:
        # The server asks for the next chunk only once it has written the previous one,
        # so the time between returning a chunk and this call is the write.
        if self._guard is not None:
            self._guard.written(id(self))
        chunk = next(self._frames)
        if self._guard is not None:
            self._guard.writing(id(self), self._sock)
        return chunk

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._guard is not None:
            self._guard.written(id(self))
        try:
            self._frames.close()
            self._registry.release(self._owner, self._slot)
        finally:
            if self._metrics is not None:
                self._metrics.stream_closed()
            for callback in self._on_close:
                callback()

    @staticmethod
    def _generate(
        broker: Broker,
        session_id: str,
        after: str | None,
        backlog: list[Event],
        follow: bool,
        heartbeat: float,
        retry_ms: int,
        renew: Callable[[], None] | None = None,
        renew_every: float = 20.0,
        pinged: Callable[[], None] | None = None,
    ) -> Iterator[bytes]:
        # The first write carries ``retry`` (and whatever is already waiting), so the
        # browser's ``open`` fires at once even when the turn has not started yet.
        pending = ServerSentEvent(retry=retry_ms).encode()
        events = backlog
        reader = broker.reader(session_id)
        renew_at = time.monotonic() + renew_every
        try:
            while True:
                if events:
                    end = None if follow else _index_of_end(events)
                    if end is not None:
                        yield from _batches(pending, islice(events, end + 1))
                        return
                    after = events[-1].id
                    # What is already waiting goes out in as few writes as the batch size allows.
                    yield from _batches(pending, events)
                    pending = b""
                elif pending:
                    yield pending
                    pending = b""
                else:
                    if pinged is not None:
                        pinged()
                    yield PING
                if renew is not None and time.monotonic() >= renew_at:
                    renew()
                    renew_at = time.monotonic() + renew_every
                try:
                    events = reader.read(after, heartbeat)
                except (SessionNotFoundError, ServiceUnavailableError):
                    # Deleted, or the broker is down: end the response; EventSource comes
                    # back after `retry` with its last id and resumes once it can.
                    return
        finally:
            reader.close()


def _batches(pending: bytes, events: Iterable[Event]) -> Iterator[bytes]:
    """The frames of ``events`` after ``pending``, joined into writes of about BATCH_BYTES.

    Joining saves a write per event for a reader catching up; capping the size keeps a
    reader who is owed a long reply but does not read from pinning a copy of all of it.
    """
    batch = [pending] if pending else []
    size = len(pending)
    for event in events:
        batch.append(event.frame)
        size += len(event.frame)
        if size >= BATCH_BYTES:
            yield b"".join(batch)
            batch, size = [], 0
    if batch:
        yield b"".join(batch)


def _index_of_end(events: list[Event]) -> int | None:
    for index, event in enumerate(events):
        if event.event == "end":
            return index
    return None


def event_stream_response(stream: EventStream) -> Response:
    response = Response(stream, status=200, content_type="text/event-stream; charset=utf-8", headers=STREAM_HEADERS)
    # Not a Content-Length response, and nothing may buffer or compress it.
    response.direct_passthrough = True
    return response
