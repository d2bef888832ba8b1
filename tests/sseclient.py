"""A reference SSE client for the tests: the WHATWG parsing rules over a real socket.

Written from the standard's "Interpreting an event stream" algorithm rather than from
chatapp's encoder, so an encoder bug shows up as a mismatch instead of cancelling out.
"""

from __future__ import annotations

import codecs
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx


@dataclass
class Received:
    """An event (``kind == "event"``) or a comment (``kind == "comment"``) as received."""

    kind: str
    event: str = "message"
    data: str = ""
    id: str = ""
    retry: int | None = None
    at: float = field(default_factory=time.monotonic)

    def json(self) -> dict:
        import json

        return json.loads(self.data)


class SSEParser:
    """Feed bytes, get :class:`Received` items back, exactly as a browser would."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._first = True
        self._data: list[str] = []
        self._event = ""
        self.last_event_id = ""
        self.retry: int | None = None

    def feed(self, chunk: bytes) -> list[Received]:
        text = self._decoder.decode(chunk)
        if self._first and text:
            text = text.removeprefix("\ufeff")
            self._first = False
        self._buffer += text
        out: list[Received] = []
        while True:
            cut = _line_end(self._buffer)
            if cut is None:
                return out
            line, self._buffer = self._buffer[: cut[0]], self._buffer[cut[1] :]
            item = self._line(line)
            if item is not None:
                out.append(item)

    def _line(self, line: str) -> Received | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return Received("comment", data=line[1:].removeprefix(" "))
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self.last_event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)
        return None

    def _dispatch(self) -> Received | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return Received("event", event=event or "message", data="\n".join(data), id=self.last_event_id, retry=self.retry)


def _line_end(buffer: str) -> tuple[int, int] | None:
    """Where the first line ends and the next begins; a CR at the very end waits for more."""
    for index, char in enumerate(buffer):
        if char == "\n":
            return index, index + 1
        if char == "\r":
            if index + 1 == len(buffer):
                return None
            return index, index + (2 if buffer[index + 1] == "\n" else 1)
    return None


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
            self._pending.extend(self.parser.feed(chunk))

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
