"""Run one turn: provider -> events -> broker, in the background; cancel.

A turn is started by ``POST .../messages`` and runs in a greenlet under gevent or a
daemon thread elsewhere. It writes ``start``, ``token``..., optionally ``error``, and
always ``end`` into the broker; stream readers only ever read the broker, so a reader
that leaves does not stop the turn and any number of readers see the same events.

On a backend shared by several processes, a turn whose producer died is handed to
:meth:`TurnRunner.adopt` in one live process, which carries it on as ``CHATAPP_CONTINUE``
says: ``prefill`` continues the partial reply where the provider can (a ``resumed``
event marks where), ``restart`` generates it again after a ``reset`` event, ``off`` lets
it end as interrupted.

With a response cache, an identical request (see :func:`~chatapp.cache.cache_key`)
replays the stored reply as ``token`` events with ``"cached": true`` in ``start`` and
never reaches the provider; only replies that ended with ``stop`` are stored. The cache
is scoped per owner unless ``cache_scope="global"``: a replay to anyone else would tell
them that someone asked exactly that.

A reply stops with ``finish_reason: "length"`` where it would take its session past
``max_session_bytes``, so no single message, nor any history page, outgrows that bound.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from . import events
from ._concurrency import spawn
from .broker.base import MESSAGE_OVERHEAD, Broker, Orphan, TurnHandle, stored_size, utf8_size
from .cache import CachedReply, ResponseCache, cache_key
from .errors import APIError, ProviderError, ServerRestartingError
from .events import Draft
from .metrics import Metrics, TurnWatch
from .providers.base import ChatRequest, Completion, Provider, Reasoning, StreamItem

__all__ = ["TurnRunner"]

log = logging.getLogger("chatapp.turns")


class TurnRunner:
    """Starts turns and carries each to its ``end``."""

    def __init__(
        self,
        broker: Broker,
        provider: Provider,
        *,
        model: str,
        system_prompt: str,
        cache: ResponseCache | None = None,
        cache_ttl_seconds: float = 0,
        max_messages: int | None = None,
        max_session_bytes: int | None = None,
        max_owner_bytes: int | None = None,
        cache_scope: str = "owner",
        continuation: str = "restart",
        metrics: Metrics | None = None,
    ) -> None:
        self.broker = broker
        self.metrics = metrics if metrics is not None else Metrics()
        self.provider = provider
        self.model = model or provider.default_model
        self.system_prompt = system_prompt
        self.cache = cache if cache_ttl_seconds > 0 else None
        self.cache_ttl_seconds = cache_ttl_seconds
        #: The most messages a session may hold; a turn that would pass it is refused.
        self.max_messages = max_messages
        #: The most bytes a session's history, and an owner's sessions together, may hold.
        self.max_session_bytes = max_session_bytes
        self.max_owner_bytes = max_owner_bytes
        self.cache_scope = cache_scope
        #: How a turn whose producer died goes on: prefill, restart or off.
        self.continuation = continuation
        broker.adopt_orphans(self.adopt if continuation != "off" else None)
        # The turns this process produces now, by session.
        self._active: dict[str, TurnHandle] = {}

    def producing(self, session_id: str) -> bool:
        """Whether this process produces the running turn of ``session_id``."""
        turn = self._active.get(session_id)
        return turn is not None and not turn.superseded

    @property
    def active(self) -> int:
        """How many turns this process produces now."""
        return sum(1 for turn in list(self._active.values()) if not turn.superseded)

    def stop_all(self) -> None:
        """The server is stopping: hand every running turn over to another process, or,
        where none could take it, end it with ``server_restarting`` (retryable)."""
        for turn in list(self._active.values()):
            if turn.superseded or self.broker.hand_over(turn):
                continue
            turn.stopping = "server_restarting"
            turn.cancelled.set()

    def start(self, session_id: str, text: str, *, name_session: bool = False) -> TurnHandle:
        """Store the user's message and generate the reply in the background.

        ``name_session``: the ``start`` event carries the session id, for a session made
        by the same request as the turn (its client has not seen the id).
        """
        turn = self.broker.begin_turn(
            session_id,
            text,
            max_messages=self.max_messages,
            max_bytes=self.max_session_bytes,
            max_owner_bytes=self.max_owner_bytes,
        )
        spawn(self.run, turn, name_session, name="chatapp-turn")
        return turn

    def _reply_allowance(self, turn: TurnHandle) -> int | None:
        """UTF-8 bytes the reply may take before its session would pass its budget."""
        if self.max_session_bytes is None:
            return None
        return self.max_session_bytes - sum(stored_size(m) for m in turn.history) - MESSAGE_OVERHEAD

    def run(self, turn: TurnHandle, name_session: bool = False) -> None:
        """Generate one reply into the broker. Never raises: every exit ends the turn."""
        reply = _Reply()
        watch = self.metrics.turn_started()
        key = None
        self._active[turn.session_id] = turn
        try:
            key = self._cache_key(turn)
            cached = self._cache_get(key)
            session_id = turn.session_id if name_session else None
            self.broker.publish(turn, [events.start(turn.message_id, self.model, cached=cached is not None, session_id=session_id)])
            if cached is not None:
                reply.pieces, reply.thought = cached["pieces"], cached.get("reasoning") or []
                reply.finish_reason, reply.usage = cached["finish_reason"], cached["usage"]
                # A replay has nothing to wait for: every event goes out in one publish.
                replay = [events.reasoning(piece) for piece in reply.thought] + [events.token(piece) for piece in reply.pieces]
                self.broker.publish(turn, replay)
                watch.tokens(len(reply.pieces))
            else:
                self._generate(turn, self.provider.stream(self._request(turn), turn.cancelled), reply, watch)
        except Exception as exc:
            self._failed(turn, reply, watch, exc)
        self._finish(turn, reply, watch, cache_key=key)

    def adopt(self, orphan: Orphan) -> None:
        """Carry on a turn whose producer died (the broker claimed it for this process)."""
        turn = orphan.turn
        reply = _Reply()
        watch = self.metrics.turn_started()
        self._active[turn.session_id] = turn
        try:
            request = self._request(turn)
            if orphan.answer and self.continuation == "prefill" and self.provider.can_continue:
                self.metrics.takeover("continued")
                log.warning("turn %s: continuing after %d characters", turn.message_id, len(orphan.answer))
                reply.pieces, reply.thought = [orphan.answer], [orphan.reasoning] if orphan.reasoning else []
                self.broker.publish(turn, [events.resumed(turn.message_id, len(orphan.answer))])
                items = self.provider.continue_reply(request, orphan.answer, turn.cancelled)
            else:
                self.metrics.takeover("restarted")
                log.warning("turn %s: generating it again", turn.message_id)
                if orphan.answer or orphan.reasoning:
                    self.broker.publish(turn, [events.reset(turn.message_id, "restarted")])
                items = self.provider.stream(request, turn.cancelled)
            self._generate(turn, items, reply, watch)
        except Exception as exc:
            self._failed(turn, reply, watch, exc)
        self._finish(turn, reply, watch, cache_key=None)

    def _request(self, turn: TurnHandle) -> ChatRequest:
        return ChatRequest(self.model, self.system_prompt, turn.history)

    def _generate(self, turn: TurnHandle, items: Iterator[StreamItem], reply: _Reply, watch: TurnWatch) -> None:
        allowance = self._reply_allowance(turn)
        if allowance is not None:
            allowance -= sum(utf8_size(text) for text in (*reply.pieces, *reply.thought))
        cut = False
        for item in items:
            if turn.cancelled.is_set():
                break
            if isinstance(item, Completion):
                reply.finish_reason, reply.usage = item.finish_reason, item.usage
                continue
            text = item.text if isinstance(item, Reasoning) else item
            if not text:
                continue
            if allowance is not None:
                allowance -= utf8_size(text)
                if allowance < 0:
                    # The session's byte budget: the reply ends here, as at a model's own
                    # length limit.
                    cut = True
                    break
            if isinstance(item, Reasoning):
                reply.thought.append(text)
                self.broker.publish(turn, [events.reasoning(text)])
            else:
                reply.pieces.append(text)
                self.broker.publish(turn, [events.token(text)])
                watch.tokens(1)
        close = getattr(items, "close", None)
        if close is not None:
            close()
        if cut and not turn.cancelled.is_set():
            reply.finish_reason, reply.usage = "length", None
        if turn.stopping:
            raise ServerRestartingError("The server restarted while replying; please try again.")
        if turn.cancelled.is_set():
            reply.finish_reason, reply.usage = "cancelled", None

    def _failed(self, turn: TurnHandle, reply: _Reply, watch: TurnWatch, exc: Exception) -> None:
        reply.finish_reason, reply.usage = "error", None
        if isinstance(exc, ProviderError):
            # An upstream's fault, not ours: one line with its causes, no traceback.
            log.warning("turn %s failed: %s: %s%s", turn.message_id, exc.code, exc, _causes(exc))
            watch.upstream_error(exc.code)
            reply.closing.append(events.failure(exc))
        else:
            log.error("turn %s failed unexpectedly", turn.message_id, exc_info=exc)
            reply.closing.append(events.error("internal_error", "The reply failed; please try again.", retryable=True))

    def _finish(self, turn: TurnHandle, reply: _Reply, watch: TurnWatch, *, cache_key: str | None) -> None:
        """End the turn in the broker: the reply into history, then ``end``."""
        if self._active.get(turn.session_id) is turn:
            del self._active[turn.session_id]
        if turn.superseded:
            # Another worker took this turn over while this one was stalled: it ends it.
            log.warning("turn %s: superseded by another worker; not ending it here", turn.message_id)
            return
        if reply.finish_reason == "stop" and reply.pieces and cache_key is not None and not reply.closing:
            cached: CachedReply = {"pieces": reply.pieces, "finish_reason": "stop", "usage": reply.usage}
            if reply.thought:
                cached["reasoning"] = reply.thought
            self._cache_put(cache_key, cached)
        reply.closing.append(events.end(turn.message_id, reply.finish_reason, reply.usage))
        try:
            self.broker.finish_turn(turn, "".join(reply.pieces), reply.closing, reasoning="".join(reply.thought))
        except APIError as exc:
            # The broker is down or full: it logs that itself; one line here. If the turn
            # stays open, its lease lapses and another worker ends or takes it over.
            log.warning("turn %s could not be finished: %s", turn.message_id, exc.code)
        except Exception:
            log.exception("turn %s could not be finished", turn.message_id)
        watch.finished(reply.finish_reason)

    # -- the response cache -----------------------------------------------------------

    def _cache_key(self, turn: TurnHandle) -> str | None:
        if self.cache is None or not turn.history:
            return None
        scope = turn.owner if self.cache_scope == "owner" else ""
        return cache_key(self.model, self.system_prompt, turn.history[:-1], turn.history[-1].content, scope=scope)

    def _cache_get(self, key: str | None) -> CachedReply | None:
        if key is None or self.cache is None:
            return None
        try:
            reply = self.cache.get(key)
            (self.metrics.cache_miss if reply is None else self.metrics.cache_hit)()
        except Exception:
            # A cache that is down costs an upstream call, never the turn.
            log.warning("response cache %s failed on get; answering without it", self.cache.name, exc_info=True)
            return None
        if reply is None:
            return None
        if not _is_cached_reply(reply):
            log.warning("response cache %s held an unreadable entry; ignoring it", self.cache.name)
            return None
        return reply

    def _cache_put(self, key: str, reply: CachedReply) -> None:
        assert self.cache is not None
        try:
            self.cache.put(key, reply, self.cache_ttl_seconds)
        except Exception:
            log.warning("response cache %s failed on put; reply not stored", self.cache.name, exc_info=True)


@dataclass
class _Reply:
    """What a turn has produced so far, and how it ends."""

    pieces: list[str] = field(default_factory=list)
    thought: list[str] = field(default_factory=list)
    closing: list[Draft] = field(default_factory=list)
    finish_reason: str = "stop"
    usage: dict[str, Any] | None = None


def _causes(exc: BaseException) -> str:
    """`` (because: module.Type: text <- module.Type: text)`` for an error's chain."""
    found: list[str] = []
    cause = exc.__cause__ or exc.__context__
    while cause is not None and len(found) < 5:
        kind = type(cause)
        found.append(f"{kind.__module__.partition('._')[0]}.{kind.__qualname__}: {cause}")
        cause = cause.__cause__ or cause.__context__
    return f" (because: {' <- '.join(found)})" if found else ""


def _is_cached_reply(value: Any) -> bool:
    """Whether a backend's value has the stored shape (an old or foreign entry may not)."""
    return (
        isinstance(value, dict)
        and isinstance(value.get("pieces"), list)
        and all(isinstance(piece, str) for piece in value["pieces"])
        and value.get("finish_reason") == "stop"
        and (value.get("reasoning") is None or (isinstance(value["reasoning"], list) and all(isinstance(p, str) for p in value["reasoning"])))
        and (value.get("usage") is None or isinstance(value.get("usage"), dict))
    )
