"""The names of chatapp's Redis keys and channels (the layout is drawn in :mod:`chatapp.broker.redis`).

Keys of one session share the hash tag ``{<session id>}``, so each script touches one
slot of a Redis Cluster.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["NOTIFY_PATTERN", "TURNS_KEY", "SessionKeys", "owner_key", "session_keys", "session_of", "streams_key"]

#: One pattern subscription per worker process hears every session's notifications.
NOTIFY_PATTERN = "chatapp:*:notify"
#: The running turns: session ids by the time their lease runs out (a hint for the
#: sweep; the lease itself is the session's ``alive`` key).
TURNS_KEY = "chatapp:turns"


class SessionKeys(NamedTuple):
    meta: str
    messages: str
    events: str
    alive: str
    cancel: str
    notify: str


def session_keys(session_id: str) -> SessionKeys:
    tag = f"chatapp:{{{session_id}}}"
    return SessionKeys(*(f"{tag}:{name}" for name in SessionKeys._fields))


def owner_key(owner: str) -> str:
    return f"chatapp:owner:{owner}"


def streams_key(owner: str) -> str:
    return f"chatapp:streams:{owner}"


def session_of(channel: str) -> str | None:
    """The session id in a notification channel's name."""
    start, end = channel.find("{"), channel.find("}")
    return channel[start + 1 : end] if 0 <= start < end else None
