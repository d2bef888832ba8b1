"""Turn broker events into a streaming response: headers, retry, heartbeats, close.

The view resolves everything that needs the request (owner, session, last id) and hands
plain values to :class:`EventStream`, which never touches the request context. WSGI
servers call ``close()`` on the response iterable when the client leaves (gunicorn's
workers, gevent's pywsgi, werkzeug), even when iteration never started; that is where
the reader's slot is released, so a reader can never leak.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from flask import Response

from .broker.base import Broker, Event
from .errors import ServiceUnavailableError, SessionNotFoundError
from .sse import PING, ServerSentEvent

__all__ = ["EventStream", "StreamRegistry", "event_stream_response", "STREAM_HEADERS"]

STREAM_HEADERS = {
    "Cache-Control": "no-cache",
    # nginx (and proxies that copy it) buffer responses unless told not to.
    "X-Accel-Buffering": "no",
}


class StreamRegistry:
    """Counts the open streams of this process, in total and per owner."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_owner: dict[str, int] = {}
        self.total = 0

    def acquire(self, owner: str) -> None:
        with self._lock:
            self._by_owner[owner] = self._by_owner.get(owner, 0) + 1
            self.total += 1

    def release(self, owner: str) -> None:
        with self._lock:
            left = self._by_owner.get(owner, 0) - 1
            if left > 0:
                self._by_owner[owner] = left
            else:
                self._by_owner.pop(owner, None)
            self.total -= 1

    def count(self, owner: str) -> int:
        return self._by_owner.get(owner, 0)


class EventStream:
    """The response iterable of one reader: a WSGI iterable with an idempotent close."""

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
    ) -> None:
        self._registry = registry
        self._owner = owner
        registry.acquire(owner)
        self._closed = False
        self._frames = self._generate(broker, session_id, after, backlog, follow, heartbeat, retry_ms)

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> bytes:
        return next(self._frames)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._frames.close()
        self._registry.release(self._owner)

    @staticmethod
    def _generate(
        broker: Broker,
        session_id: str,
        after: str | None,
        backlog: list[Event],
        follow: bool,
        heartbeat: float,
        retry_ms: int,
    ) -> Iterator[bytes]:
        # The first write carries ``retry`` (and whatever is already waiting), so the
        # browser's ``open`` fires at once even when the turn has not started yet.
        pending = ServerSentEvent(retry=retry_ms).encode()
        events = backlog
        reader = broker.reader(session_id)
        try:
            while True:
                if events:
                    end = None if follow else _index_of_end(events)
                    if end is not None:
                        yield pending + b"".join([e.frame for e in events[: end + 1]])
                        return
                    after = events[-1].id
                    # Everything already waiting goes out in one write.
                    yield pending + b"".join([e.frame for e in events])
                    pending = b""
                elif pending:
                    yield pending
                    pending = b""
                else:
                    yield PING
                try:
                    events = reader.read(after, heartbeat)
                except (SessionNotFoundError, ServiceUnavailableError):
                    # Deleted, or the broker is down: end the response; EventSource comes
                    # back after `retry` with its last id and resumes once it can.
                    return
        finally:
            reader.close()


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
