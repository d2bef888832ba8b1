"""The tests' SSE client: chatapp's reference parser over a real socket.

The parser (:mod:`chatapp.tools.client`, also behind ``chatapp ask``) follows the standard's
"Interpreting an event stream" algorithm and shares no code with the encoder, so an
encoder bug shows up as a mismatch instead of cancelling out.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx

from chatapp.tools.client import SSEParser, StreamItem

#: An event or a comment as received (the product's reference client type).
Received = StreamItem


def reply_text(events: list[Received]) -> str:
    """The reply's text: its ``token`` events joined."""
    return "".join(e.json()["text"] for e in events if e.event == "token")


def parse_all(raw: bytes) -> list[Received]:
    """Every item of a complete stream body."""
    return SSEParser().feed(raw)


class EventStream:
    """One open stream response, read incrementally from the socket."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.parser = SSEParser()
        self.raw = bytearray()
        self._chunks = response.iter_raw()
        self._pending: list[Received] = []

    @property
    def status_code(self) -> int:
        return self.response.status_code

    @property
    def headers(self) -> httpx.Headers:
        return self.response.headers

    def items(self) -> Iterator[Received]:
        """Events and comments as they arrive, until the server closes the stream."""
        while True:
            while self._pending:
                yield self._pending.pop(0)
            try:
                chunk = next(self._chunks)
            except StopIteration:
                return
            self.raw += chunk
            self._pending.extend(self.parser.feed(chunk, at=time.monotonic()))

    def events(self) -> Iterator[Received]:
        """Only the events, skipping comments."""
        return (item for item in self.items() if item.kind == "event")

    def until_end(self) -> list[Received]:
        """Events up to and including the next ``end``."""
        out = []
        for item in self.events():
            out.append(item)
            if item.event == "end":
                break
        return out

    def read_rest(self) -> list[Received]:
        """Every remaining item until the server closes the connection."""
        return list(self.items())
