"""The event vocabulary of a turn: every event's name and payload, built here and only here.

A turn's stream is these events, each with an ``id:`` (``"<ms>-<seq>"``, increasing
within a session across turns) and its data as compact JSON:

=============  =============================================  ===========================
event          data                                           when
=============  =============================================  ===========================
``start``      ``{"message_id", "model", "cached"}``          first of every turn (also
                                                              ``"session_id"`` when the
                                                              turn's request made it)
``reasoning``  ``{"text"}``                                   the model thinking, in order
``token``      ``{"text"}``                                   each piece of the answer
``reset``      ``{"message_id", "reason"}``                   drop this turn's text so far
``resumed``    ``{"message_id", "after_chars"}``              another worker continues it
``error``      ``{"code", "message", "retryable"}``           the turn failed
``end``        ``{"message_id", "finish_reason", "usage"}``   last of every turn
=============  =============================================  ===========================

``reset`` comes when a reply starts over (``reason``: ``restarted``, when another worker
took over a turn whose producer died and generates it again) or when a reader's resume
point is older than the log (``stale_resume``: the turn follows from its start).
``resumed`` marks where another worker continued a reply, after ``after_chars``
characters (code points) of its text. ``finish_reason`` is one of :data:`FINISH_REASONS`. The turn runner, both brokers and the
interrupted-turn path (a Redis script receives these payloads already encoded) build
events with the functions below, so a field added here reaches every path at once.

An event before the broker gives it an id is a :data:`Draft`, ``(name, json_data)``;
once logged it is an :class:`Event`, which also carries its encoded frame.
"""

from __future__ import annotations

import json
import re
from json.encoder import encode_basestring as _encode_string  # the C version when built
from operator import itemgetter
from typing import Any

from .errors import GenerationInterruptedError, ProviderError
from .sse import encode_event

__all__ = [
    "END",
    "ERROR",
    "FINISH_REASONS",
    "REASONING",
    "RESET",
    "RESUMED",
    "START",
    "TOKEN",
    "Draft",
    "Event",
    "end",
    "error",
    "failure",
    "interrupted",
    "parse_event_id",
    "reasoning",
    "reset",
    "resumed",
    "start",
    "text_of",
    "token",
]

START, REASONING, TOKEN, ERROR, END = "start", "reasoning", "token", "error", "end"
RESET, RESUMED = "reset", "resumed"
#: How a turn can end, in ``end``'s ``finish_reason``: ``content_filter`` when the
#: upstream's filter stopped the reply (what came before it is kept).
FINISH_REASONS = ("stop", "length", "content_filter", "cancelled", "error")

#: An event before it has an id: its name and its JSON data.
Draft = tuple[str, str]

# ensure_ascii=False keeps non-ASCII text as UTF-8 on the wire, a third of the size of
# \\u escapes for most scripts; JSON still escapes every line break.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def start(message_id: str, model: str, *, cached: bool, session_id: str | None = None) -> Draft:
    """The first event of a turn; ``session_id`` names a session the turn's own request
    created (``POST /api/chat``), whose client has no other way to learn it."""
    payload: dict[str, Any] = {"message_id": message_id, "model": model, "cached": cached}
    if session_id is not None:
        payload["session_id"] = session_id
    return START, _ENCODER.encode(payload)


def token(text: str) -> Draft:
    # Once per token: the same text as the encoder gives, without building a dict and
    # walking it (a tenth of the cost).
    return TOKEN, '{"text":' + _encode_string(text) + "}"


def reset(message_id: str, reason: str) -> Draft:
    """Drop the turn's text so far: it starts again (``restarted``, ``stale_resume``)."""
    return RESET, _ENCODER.encode({"message_id": message_id, "reason": reason})


def resumed(message_id: str, after_chars: int) -> Draft:
    """Another worker continues the reply after its first ``after_chars`` characters."""
    return RESUMED, _ENCODER.encode({"message_id": message_id, "after_chars": after_chars})


def text_of(event: Event) -> str:
    """The text of a ``token`` or ``reasoning`` event."""
    text: str = event.payload()["text"]
    return text


def reasoning(text: str) -> Draft:
    """A piece of the model's thinking, before and between ``token`` events."""
    return REASONING, '{"text":' + _encode_string(text) + "}"


def error(code: str, message: str, *, retryable: bool) -> Draft:
    return ERROR, _ENCODER.encode({"code": code, "message": message, "retryable": retryable})


def failure(exc: ProviderError) -> Draft:
    """The ``error`` event of a provider's failure; its message is safe to show anyone."""
    return error(exc.code, exc.message, retryable=exc.retryable)


def end(message_id: str, finish_reason: str, usage: dict[str, Any] | None = None) -> Draft:
    # Not checked against FINISH_REASONS here: a turn must always be able to end.
    return END, _ENCODER.encode({"message_id": message_id, "finish_reason": finish_reason, "usage": usage})


def interrupted(message_id: str) -> list[Draft]:
    """How a turn whose producer died ends: ``error`` ``generation_interrupted``, then ``end``."""
    return [failure(GenerationInterruptedError()), end(message_id, "error")]


# ASCII digits only (\d would take any script's digits) and nothing after them (not even
# the newline that $ allows).
_EVENT_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")
_ID_PART_MAX = 2**64 - 1


def parse_event_id(value: str) -> tuple[int, int]:
    """The sortable form of an event id; ``ValueError`` if it is not one of ours."""
    match = _EVENT_ID.fullmatch(value)
    if match is None:
        raise ValueError(f"not an event id: {value[:40]!r}")
    ms, seq = int(match.group(1)), int(match.group(2))
    # Redis Stream ids are two unsigned 64-bit numbers; a larger one is no id of ours
    # (Redis would refuse it with an error rather than read from it).
    if ms > _ID_PART_MAX or seq > _ID_PART_MAX:
        raise ValueError(f"not an event id: {value[:40]!r}")
    return ms, seq


class Event(tuple[str, str, str, bytes]):
    """One logged event. Its wire bytes are encoded once and shared by every reader.

    Underneath it is the tuple ``(id, event, data, frame)``, so a broker that stores
    those four makes an Event for a reader at the cost of a tuple, with no encoding.
    """

    __slots__ = ()

    def __new__(cls, id: str, event: str, data: str, frame: bytes | None = None) -> Event:
        return tuple.__new__(cls, (id, event, data, encode_event(event, id, data) if frame is None else frame))

    id: str = property(itemgetter(0), doc="The event id, ``<ms>-<seq>``.")  # type: ignore[assignment]
    event: str = property(itemgetter(1), doc="The event name: start, reasoning, token, reset, resumed, error, end.")  # type: ignore[assignment]
    data: str = property(itemgetter(2), doc="The JSON data.")  # type: ignore[assignment]
    frame: bytes = property(itemgetter(3), doc="The encoded frame, as sent.")  # type: ignore[assignment]

    def payload(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.data)
        return value

    def __repr__(self) -> str:
        return f"Event({self.id!r}, {self.event!r}, {self.data!r})"
