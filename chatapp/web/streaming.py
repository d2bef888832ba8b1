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
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice

from flask import Response

from ..broker.base import Broker, Reader
from ..errors import RateLimitedError, ServiceUnavailableError, SessionNotFoundError
from ..events import END, Event
from ..metrics import Metrics
from ..sse import PING, ServerSentEvent, retry_field
from .sendguard import SendGuard

__all__ = ["STREAM_HEADERS", "EventStream", "StreamOptions", "StreamRegistry", "Streams", "event_stream_response"]

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
        if self._shared is None:
            return ""
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



def _too_many_streams(held: int, retry_after: int) -> RateLimitedError:
    return RateLimitedError(
        f"You already have {held} open streams; close one first.",
        code="too_many_streams",
        retry_after=retry_after,
    )


@dataclass(frozen=True)
class StreamOptions:
    """How every stream of an app behaves, fixed at start-up from its settings."""

    #: A ``: ping`` after this many quiet seconds.
    heartbeat: float
    #: The reconnect delay sent to EventSource in the first frame.
    retry_ms: int
    #: Open streams one owner may hold; ``None`` for no bound.
    max_streams: int | None = None


class Streams:
    """Opens the event streams of one app: its broker, slots, send guard and metrics."""

    def __init__(
        self,
        broker: Broker,
        options: StreamOptions,
        *,
        registry: StreamRegistry | None = None,
        guard: SendGuard | None = None,
        metrics: Metrics | None = None,
        producing: Callable[[str], bool] | None = None,
    ) -> None:
        self.broker = broker
        self.options = options
        #: Whether this process produces a session's running turn (the turn runner's).
        self.producing = producing or (lambda session_id: False)
        #: Set when the server is stopping: readers leave, except those of turns still
        #: produced here, so their clients reconnect to a server that stays.
        self.draining = False
        self._open: set[EventStream] = set()
        # A stream renews its shared slot between heartbeats, so the lease outlasts one.
        self.registry = registry or StreamRegistry(broker, lease_seconds=max(60.0, 3 * options.heartbeat))
        self.guard = guard
        self.metrics = metrics

    @property
    def total(self) -> int:
        """Streams open in this process."""
        return self.registry.total

    def open(
        self,
        session_id: str,
        owner: str,
        *,
        after: str | None = None,
        backlog: list[Event] | None = None,
        follow: bool = False,
        sock: socket.socket | None = None,
    ) -> EventStream:
        """One reader's stream, from ``after`` (``backlog`` is what is already there).

        :class:`RateLimitedError` when the owner holds too many streams.
        """
        stream = EventStream(self, session_id, owner, after, backlog or [], follow, sock)
        self._open.add(stream)
        return stream

    def drain(self) -> None:
        """The server is stopping: wake every reader so those that may leave do now."""
        self.draining = True
        for stream in list(self._open):
            stream.wake()

    def closed(self, stream: EventStream) -> None:
        self._open.discard(stream)


class EventStream:
    """The response iterable of one reader: a WSGI iterable with an idempotent close.

    It feeds the open-stream gauge and the heartbeat counter of the metrics, and runs the
    callbacks given to :meth:`call_on_close` (the request log's line) when it closes.
    """

    def __init__(
        self,
        streams: Streams,
        session_id: str,
        owner: str,
        after: str | None,
        backlog: list[Event],
        follow: bool,
        sock: socket.socket | None,
    ) -> None:
        options = streams.options
        registry = self._registry = streams.registry
        self._owner = owner
        # Raises before anything else is held, so a refused stream leaks nothing. A slot
        # frees when a reader leaves, so the browser's reconnect delay is a fair wait.
        self._slot = registry.acquire(owner, options.max_streams, retry_after=math.ceil(options.retry_ms / 1000))
        self._guard = streams.guard if sock is not None else None
        self._sock = sock
        self._closed = False
        self._metrics = streams.metrics
        self._streams = streams
        self._reader: Reader | None = None
        self._on_close: list[Callable[[], None]] = []
        if self._metrics is not None:
            self._metrics.stream_opened()
        self._frames = self._generate(streams.broker, options, session_id, after, backlog, follow)

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
        if self._guard is not None and self._sock is not None:
            self._guard.writing(id(self), self._sock)
        return chunk

    def wake(self) -> None:
        """Make the reader's wait end now (a stopping server)."""
        if self._reader is not None:
            self._reader.wake()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._streams.closed(self)
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

    def _generate(
        self,
        broker: Broker,
        options: StreamOptions,
        session_id: str,
        after: str | None,
        backlog: list[Event],
        follow: bool,
    ) -> Generator[bytes, None, None]:
        heartbeat = options.heartbeat
        pinged = self._metrics.heartbeat if self._metrics is not None else None
        renew_every = self._registry.lease_seconds / 3
        if follow:
            # A stream across turns may wait long for an event: ``retry`` goes first, in a
            # frame of its own, so the browser's ``open`` fires at once.
            pending = ServerSentEvent(retry=options.retry_ms).encode()
        else:
            # A turn's stream puts ``retry`` inside the first event's block: a frame with
            # no data is an empty event to httpx-sse and hand-written readers.
            pending = retry_field(options.retry_ms)
        opening = True
        events = backlog
        reader = self._reader = broker.reader(session_id)
        renew_at = time.monotonic() + renew_every
        streams = self._streams
        try:
            while True:
                if streams.draining and not streams.producing(session_id):
                    # The server is stopping and this turn, if any, is produced elsewhere
                    # (or was handed over): send what is here, then end the response, so
                    # EventSource reconnects with its last id to a server that stays.
                    if events or pending:
                        yield from _batches(pending, events)
                    return
                if events:
                    end = None if follow else _index_of_end(events)
                    if end is not None:
                        yield from _batches(pending, islice(events, end + 1))
                        return
                    after = events[-1].id
                    # What is already waiting goes out in as few writes as the batch size allows.
                    yield from _batches(pending, events)
                    pending = b""
                elif follow and pending:
                    yield pending
                    pending = b""
                elif opening:
                    # A turn's stream opened before its next event (a one-step post, or a
                    # reader that is up to date): wait for the event rather than write a
                    # frame without data; a ping follows if the wait is a heartbeat long.
                    pass
                else:
                    if pinged is not None:
                        pinged()
                    yield PING
                opening = False
                if self._slot and time.monotonic() >= renew_at:
                    self._registry.renew(self._owner, self._slot)
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
        if event.event == END:
            return index
    return None


def event_stream_response(stream: EventStream) -> Response:
    response = Response(stream, status=200, content_type="text/event-stream; charset=utf-8", headers=STREAM_HEADERS)
    # Not a Content-Length response, and nothing may buffer or compress it.
    response.direct_passthrough = True
    return response
