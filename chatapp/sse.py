"""Server-Sent Events: one value type and the one encoder of the wire format.

The rules are those of the WHATWG HTML standard, "Server-sent events" (section 9.2):

- a stream is UTF-8; an event is a block of ``field: value`` lines ended by a blank line;
- a parser splits lines on CR LF, a lone CR or a lone LF, so a payload is split on exactly
  those three and on nothing else (``str.splitlines`` would also split on U+2028, U+0085,
  form feeds and more, corrupting data the browser would have kept whole);
- one leading space after the colon is removed by the parser, so we always write one and
  a value that itself starts with a space survives;
- ``data`` lines are joined with LF and a single trailing LF is dropped, so a payload that
  ends with a newline needs an extra empty ``data:`` line, which the split gives us;
- ``id`` and ``event`` cannot carry a line break, and an ``id`` containing NUL is ignored
  by browsers, so those are refused here rather than silently changed;
- ``retry`` is honoured only when it is ASCII digits;
- a line starting with ``:`` is a comment, ignored by clients and useful as a heartbeat.

No Flask import here: host applications can use :class:`ServerSentEvent` for streams of
their own (progress, notifications).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["PING", "ServerSentEvent", "encode", "encode_event", "retry_field"]

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_FORBIDDEN_IN_FIELD = re.compile(r"[\r\n\0]")
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One frame of an event stream; any field may be left out."""

    data: str | None = None
    event: str | None = None
    id: str | None = None
    retry: int | None = None
    comment: str | None = None

    def __post_init__(self) -> None:
        for name in ("event", "id"):
            value = getattr(self, name)
            if value is not None and _FORBIDDEN_IN_FIELD.search(value):
                raise ValueError(f"SSE {name!r} must not contain CR, LF or NUL: {value!r}")
        if self.retry is not None and (
            isinstance(self.retry, bool) or not isinstance(self.retry, int) or self.retry < 0
        ):
            raise ValueError(f"SSE 'retry' must be a non-negative integer: {self.retry!r}")

    def encode(self) -> bytes:
        """The frame as UTF-8 bytes, ending with the blank line that dispatches it."""
        return encode(self)


def encode(event: ServerSentEvent) -> bytes:
    """Encode ``event`` to the exact bytes a browser's EventSource parses back."""
    parts: list[str] = []
    if event.comment is not None:
        parts.extend(f": {line}\n" for line in _LINE_BREAK.split(event.comment))
    if event.event is not None:
        parts.append(f"event: {event.event}\n")
    if event.id is not None:
        parts.append(f"id: {event.id}\n")
    if event.retry is not None:
        parts.append(f"retry: {event.retry}\n")
    if event.data is not None:
        parts.extend(f"data: {line}\n" for line in _LINE_BREAK.split(event.data))
    parts.append("\n")
    text = "".join(parts)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (say, from a broken upstream's "\\ud800" escape) cannot be
        # UTF-8; send one U+FFFD in its place, as a decoder would show it.
        return _SURROGATE.sub("\ufffd", text).encode("utf-8")


def encode_event(event: str, id: str, data: str) -> bytes:
    """The frame of a named event with an id: the bytes of
    ``ServerSentEvent(data=data, event=event, id=id).encode()``, built in one step.

    This is the per-token path (every event of every turn passes here once), so the
    usual case, one line of data, skips the dataclass and the line splitting; anything
    else takes the general encoder, which also raises for a bad ``event`` or ``id``.
    """
    frame = f"event: {event}\nid: {id}\ndata: {data}\n\n"
    if frame.count("\n") != 4 or "\r" in frame or "\0" in event or "\0" in id:
        return encode(ServerSentEvent(data=data, event=event, id=id))
    try:
        return frame.encode("utf-8")
    except UnicodeEncodeError:
        return encode(ServerSentEvent(data=data, event=event, id=id))


def retry_field(retry: int) -> bytes:
    """The line ``retry: <ms>`` alone, without the blank line that would end its block.

    Written right before an encoded event, it travels inside that event's block. A frame
    holding only ``retry`` is valid, and a browser dispatches nothing for it, but
    httpx-sse and hand-written readers hand it to the application as an event with empty
    data, whose ``json.loads`` fails.
    """
    return encode(ServerSentEvent(retry=retry))[:-1]


#: The heartbeat frame, built once: idle streams send it often and should not allocate.
PING: bytes = encode(ServerSentEvent(comment="ping"))
