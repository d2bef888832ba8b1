"""The broker interface: sessions, their history, and each turn's event log.

Producers (the turn runner) write events; stream readers only read. Every backend keeps
the same contract, checked by one test-suite run over all of them:

- event ids are ``"<milliseconds>-<sequence>"`` strings, strictly increasing within a
  session across turns (the format of Redis Stream ids, so both backends look alike);
- a read with no id starts at the latest turn's first event; a read with an id returns
  the events after it that the broker still holds, in order, a bounded number per call
  (read again from the last one for the rest);
- :meth:`Broker.read` blocks until an event arrives or the timeout passes, without
  polling, and returns an empty list on timeout;
- one turn at a time per session: :meth:`Broker.begin_turn` is atomic, and so are its
  checks of the history bounds (messages and bytes);
- sizes are counted in UTF-8 bytes (:func:`stored_size`), never in characters, and text
  is stored as UTF-8, never as ``\\u`` escapes;
- a session untouched for the session TTL while no turn runs is gone, as if deleted.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .. import events
from .._concurrency import new_event
from ..events import START, Draft, Event, parse_event_id

__all__ = [
    "HISTORY_FULL",
    "HISTORY_TOO_LARGE",
    "QUOTA_EXCEEDED",
    "Broker",
    "Draft",
    "Event",
    "HistoryPage",
    "Message",
    "Orphan",
    "OrphanHandler",
    "Reader",
    "SessionInfo",
    "TurnHandle",
    "parse_event_id",
    "stale_resume",
    "stored_size",
    "utf8_size",
]

#: The message of a ``history_full`` refusal, formatted with the bound.
HISTORY_FULL = "This chat has reached its limit of {} messages; start a new chat to go on."
#: The message of a ``history_too_large`` refusal, formatted with the bound in bytes.
HISTORY_TOO_LARGE = "This chat holds as much text as one chat may ({} bytes); start a new chat to go on."
#: The message of a ``quota_exceeded`` refusal, formatted with the bound in bytes.
QUOTA_EXCEEDED = "Your chats hold as much text as one user may keep ({} bytes); delete a chat to make room."

#: What a stored message costs beyond its text: its id, role and framing, about as much
#: as its JSON adds on Redis.
MESSAGE_OVERHEAD = 64


@dataclass(frozen=True, slots=True)
class Message:
    id: str
    role: str
    content: str
    #: An assistant message's thinking, when the model showed any; never sent upstream.
    reasoning: str | None = None

    def to_dict(self) -> dict[str, str]:
        data = {"id": self.id, "role": self.role, "content": self.content}
        if self.reasoning:
            data["reasoning"] = self.reasoning
        return data


def utf8_size(text: str) -> int:
    """``text``'s length in UTF-8 bytes, without encoding ASCII (most tokens) at all."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def stored_size(message: Message) -> int:
    """What ``message`` counts against the byte budgets: its text in UTF-8, plus framing."""
    return utf8_size(message.content) + utf8_size(message.reasoning or "") + MESSAGE_OVERHEAD


@dataclass(frozen=True, slots=True)
class SessionInfo:
    session_id: str
    owner: str
    messages: tuple[Message, ...]
    generating: bool


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """A page of a session's history: the newest messages before a position, in order."""

    messages: tuple[Message, ...]
    generating: bool
    #: The position of ``messages[0]`` in the history; ``before=start`` asks for the
    #: older ones, and 0 means there are none.
    start: int


@dataclass(slots=True)
class TurnHandle:
    """What a producer holds while it runs one turn."""

    session_id: str
    message_id: str
    history: tuple[Message, ...]
    # Made when a turn starts, not when this module is imported: gevent's Event once
    # the worker has patched threading.
    cancelled: threading.Event = field(default_factory=new_event)
    #: The session's owner (the response cache is scoped by it).
    owner: str = ""
    #: Set with ``cancelled`` when another worker took the turn over (this producer was
    #: thought dead): the turn must stop without ending, since it is no longer ours.
    superseded: bool = False
    #: Set with ``cancelled`` when the server is stopping and the turn cannot be handed
    #: over: it ends with this error code (``server_restarting``) instead of ``cancelled``.
    stopping: str = ""


@dataclass(frozen=True, slots=True)
class Orphan:
    """A running turn whose producer died, claimed by this process to carry on.

    ``answer`` and ``reasoning`` are what the log already holds of the reply.
    """

    turn: TurnHandle
    answer: str
    reasoning: str


#: Carries an orphaned turn to its end (the turn runner's); called in the background.
OrphanHandler = Callable[[Orphan], None]


def stale_resume(before: str, turn: list[Event]) -> list[Event]:
    """``turn`` (the latest, from its start) after a ``reset`` whose id is ``before``, the id
    just before the turn, so a reader resuming from the reset gets the turn again."""
    if not turn:
        return []
    message_id = turn[0].payload().get("message_id", "") if turn[0].event == START else ""
    return [Event(before, *events.reset(message_id, "stale_resume")), *turn]


class Reader:
    """One stream reader's handle on a session's events, from open to close.

    Backends that keep per-reader state (a wake-up registration) override
    :meth:`Broker.reader`; this default simply reads the broker each time.
    """

    def __init__(self, broker: Broker, session_id: str) -> None:
        self.broker = broker
        self.session_id = session_id

    def read(self, after: str | None, timeout: float) -> list[Event]:
        return self.broker.read(self.session_id, after, timeout)

    def wake(self) -> None:
        """Make a waiting :meth:`read` return now (with what there is, maybe nothing)."""

    def close(self) -> None:
        """Release what the reader holds; called once, when its response closes."""


class Broker(ABC):
    """Holds sessions, history and event logs; shared by every worker that sees it."""

    name: str = "broker"

    @abstractmethod
    def create_session(self, owner: str) -> str:
        """Create an empty session for ``owner`` and return its new unguessable id."""

    @abstractmethod
    def count_sessions(self, owner: str) -> int:
        """How many live (not deleted, not expired) sessions ``owner`` has."""

    @abstractmethod
    def owner_of(self, session_id: str) -> str | None:
        """The session's owner, or ``None`` when it does not exist; counts as use of it.

        Cheap (no history is read), so views check ownership with it on every request.
        """

    @abstractmethod
    def is_generating(self, session_id: str) -> bool:
        """Whether a turn of the session is running (``False`` when it does not exist)."""

    @abstractmethod
    def get_session(self, session_id: str) -> SessionInfo | None:
        """The session, or ``None`` when it does not exist (or expired)."""

    def history_page(self, session_id: str, *, before: int | None, limit: int, max_bytes: int) -> HistoryPage | None:
        """The newest messages before position ``before`` (the end when ``None``): at most
        ``limit`` of them and ``max_bytes`` of :func:`stored_size`, yet at least one.

        ``None`` when the session does not exist. Backends override it to read only the
        page; this default reads the whole history.
        """
        session = self.get_session(session_id)
        if session is None:
            return None
        return page_of(session.messages, session.generating, before=before, limit=limit, max_bytes=max_bytes)

    def owner_bytes(self, owner: str) -> int:
        """The :func:`stored_size` of all of ``owner``'s live sessions' history, together."""
        return 0

    @abstractmethod
    def delete_session(self, session_id: str) -> bool:
        """Forget the session, cancelling its turn and ending its readers."""

    @abstractmethod
    def begin_turn(
        self,
        session_id: str,
        text: str,
        *,
        max_messages: int | None = None,
        max_bytes: int | None = None,
        max_owner_bytes: int | None = None,
    ) -> TurnHandle:
        """Store the user's message and open a new turn.

        Raises :class:`~chatapp.errors.ConflictError` when a turn is already running
        (``generation_in_progress``) or when the history could not take this message
        and its reply within ``max_messages`` (``history_full``);
        :class:`~chatapp.errors.PayloadTooLargeError` when the history with this
        message would pass ``max_bytes`` (``history_too_large``) or the owner's sessions
        together ``max_owner_bytes`` (``quota_exceeded``); a backend holding the data in
        this process may refuse with :class:`~chatapp.errors.ServiceUnavailableError`
        (``server_busy``). Nothing is stored when refused. Raises
        :class:`~chatapp.errors.SessionNotFoundError` when the session is gone.
        """

    @abstractmethod
    def publish(self, turn: TurnHandle, events: Sequence[Draft]) -> None:
        """Append ``(event, json_data)`` pairs to the turn's log, waking its readers."""

    @abstractmethod
    def finish_turn(self, turn: TurnHandle, reply: str, events: Sequence[Draft], *, reasoning: str = "") -> None:
        """Atomically store the reply in history, publish the closing events, end the turn.

        The reply (with its ``reasoning``) is stored when either is non-empty. Atomic so
        that a client reading ``end`` can post its next message at once.
        """

    @abstractmethod
    def request_cancel(self, session_id: str) -> bool:
        """Ask the running turn to stop; ``False`` when none is running."""

    @abstractmethod
    def read(self, session_id: str, after: str | None, timeout: float) -> list[Event]:
        """Events after ``after`` (or from the latest turn's start), waiting up to ``timeout``.

        Raises :class:`~chatapp.errors.SessionNotFoundError` once the session is gone.
        """

    # -- stream slots shared by every process of a deployment -------------------------

    def hold_stream(self, owner: str, limit: int | None, lease_seconds: float) -> str | None:
        """Take one of ``owner``'s stream slots across every process sharing this broker.

        Returns a token, ``None`` when ``limit`` are held, or ``""`` when this backend
        lives in one process (the caller's own count is then the whole count).
        """
        return ""

    def renew_stream(self, owner: str, token: str, lease_seconds: float) -> None:
        """Keep a held slot for another lease."""

    def release_stream(self, owner: str, token: str) -> None:
        """Give a held slot back."""

    # -- turns whose producer died ---------------------------------------------------

    def adopt_orphans(self, handler: OrphanHandler | None) -> None:
        """Hand turns whose producer died to ``handler`` (at most one process gets each)
        instead of ending them with ``generation_interrupted``.

        Only a backend shared by several processes has orphans; the default ignores it.
        """

    def hand_over(self, turn: TurnHandle) -> bool:
        """Give up a turn this process produces, for another process to carry on at once
        (releasing its lease rather than letting it lapse); ``False`` when no other
        process could (one-process backends). The caller stops producing it either way.
        """
        return False

    def quiesce(self) -> None:
        """This process is stopping: take no turn over from now on (others will)."""

    def reader(self, session_id: str) -> Reader:
        """A handle for one stream reader of ``session_id``; close it when done."""
        return Reader(self, session_id)

    def backlog(self, session_id: str, after: str | None) -> list[Event]:
        """What a reader opening the stream gets at once, without waiting.

        Like :meth:`read` with no timeout, except for a stale id: one older than
        everything the broker keeps, or newer than its newest event (from an earlier
        incarnation of the log). That reader gets a ``reset`` (``stale_resume``) and the
        latest turn from its start, never a silent gap; nothing when there is no turn.
        """
        return self.read(session_id, after, 0)

    @abstractmethod
    def ping(self) -> bool:
        """Whether the backend is reachable."""

    def close(self) -> None:
        """Release connections; the default holds none."""


def page_of(messages: Sequence[Message], generating: bool, *, before: int | None, limit: int, max_bytes: int) -> HistoryPage:
    """The page of ``messages`` that :meth:`Broker.history_page` describes."""
    end = len(messages) if before is None else max(0, min(before, len(messages)))
    start, size = end, 0
    while start > 0 and end - start < limit:
        size += stored_size(messages[start - 1])
        if size > max_bytes and start < end:
            break
        start -= 1
    return HistoryPage(tuple(messages[start:end]), generating, start)
