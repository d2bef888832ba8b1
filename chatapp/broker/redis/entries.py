"""The stream entry format: several events of one turn in one Redis Stream entry.

An entry has fields ``n`` (its event count), then ``e0``/``d0``, ``e1``/``d1``... (each
event's name and JSON data). Its id is the id of its last event, and its events take
consecutive sequence numbers, so every event keeps its own ``<ms>-<seq>`` id while Redis
sees one command per batch, not per token. ``XREAD`` after any event id returns the entry
holding later events of the same batch too; :func:`decode_entry` drops what came before.
"""

from __future__ import annotations

from collections.abc import Sequence

from ...events import Draft, Event, parse_event_id

__all__ = ["BATCH_MAX", "decode_entry", "entry_fields"]

#: The most events one stream entry holds; more are split over several entries.
BATCH_MAX = 128
# The field names of an entry's events, made once rather than per event.
_NAME_FIELDS = [f"e{i}" for i in range(BATCH_MAX)]
_DATA_FIELDS = [f"d{i}" for i in range(BATCH_MAX)]
_NAME_KEYS = [name.encode() for name in _NAME_FIELDS]
_DATA_KEYS = [name.encode() for name in _DATA_FIELDS]


def entry_fields(events: Sequence[Draft]) -> list[str]:
    """The fields of one entry holding ``events`` (at most :data:`BATCH_MAX`), for XADD."""
    fields = ["n", str(len(events))]
    for index, (name, data) in enumerate(events):
        fields += [_NAME_FIELDS[index], name, _DATA_FIELDS[index], data]
    return fields


def decode_entry(entry_id: str, fields: dict[bytes, bytes], after: tuple[int, int]) -> list[Event]:
    """The events of one stream entry that come after ``after``."""
    count = int(fields[b"n"])
    ms, last_seq = parse_event_id(entry_id)
    first_seq = last_seq - count + 1
    events = []
    for index in range(max(0, after[1] - first_seq + 1) if after[0] == ms else 0, count):
        if (ms, first_seq + index) <= after:
            continue
        if index < BATCH_MAX:
            name, data = fields[_NAME_KEYS[index]], fields[_DATA_KEYS[index]]
        else:  # an entry larger than this version writes
            name, data = fields[f"e{index}".encode()], fields[f"d{index}".encode()]
        events.append(Event(f"{ms}-{first_seq + index}", name.decode(), data.decode()))
    return events
