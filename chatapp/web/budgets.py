"""What one request may bring: a message's size in characters and in UTF-8 bytes, and the
body that carries it.

The bounds per session, per owner and per process are the broker's, checked when a turn
begins (:meth:`~chatapp.broker.base.Broker.begin_turn`); this module checks what can be
refused before anything is stored or even fully parsed.
"""

from __future__ import annotations

from ..broker.base import utf8_size
from ..config import Settings
from ..errors import PayloadTooLargeError

__all__ = ["body_limit", "check_message_size"]

#: Room in a body for the JSON around the message and any other fields.
_FRAMING = 4096


def body_limit(settings: Settings) -> int:
    """The largest request body accepted: the largest message, escaped, plus framing.

    JSON may escape every character: ``\\u0041`` is 6 bytes for 1 of UTF-8, and a
    character outside the BMP is 12 bytes (two escapes) for its 4.
    """
    return min(settings.max_message_chars * 12, settings.max_message_bytes * 6) + _FRAMING


def check_message_size(message: str, settings: Settings) -> None:
    """413 ``message_too_long`` for a message over the bound in characters or in bytes."""
    if len(message) > settings.max_message_chars:
        raise PayloadTooLargeError(f'"message" is longer than {settings.max_message_chars} characters.', code="message_too_long")
    if utf8_size(message) > settings.max_message_bytes:
        raise PayloadTooLargeError(
            f'"message" is longer than {settings.max_message_bytes} bytes in UTF-8; send it in parts.', code="message_too_long"
        )
