"""Run one turn: provider -> events -> broker, in the background; cancel.

A turn is started by ``POST .../messages`` and runs in a greenlet under gevent or a
daemon thread elsewhere. It writes ``start``, ``token``..., optionally ``error``, and
always ``end`` into the broker; stream readers only ever read the broker, so a reader
that leaves does not stop the turn and any number of readers see the same events.

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
from typing import Any

from . import events
from ._concurrency import spawn
from .broker.base import MESSAGE_OVERHEAD, Broker, TurnHandle, stored_size, utf8_size
from .cache import CachedReply, ResponseCache, cache_key
from .errors import APIError, ProviderError
from .events import Draft
from .metrics import Metrics
from .providers.base import ChatRequest, Completion, Provider, Reasoning

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

    def start(self, session_id: str, text: str) -> TurnHandle:
        """Store the user's message and generate the reply in the background."""
        turn = self.broker.begin_turn(
            session_id,
            text,
            max_messages=self.max_messages,
            max_bytes=self.max_session_bytes,
            max_owner_bytes=self.max_owner_bytes,
        )
        spawn(self.run, turn, name="chatapp-turn")
        return turn

    def _reply_allowance(self, turn: TurnHandle) -> int | None:
        """UTF-8 bytes the reply may take before its session would pass its budget."""
        if self.max_session_bytes is None:
            return None
        return self.max_session_bytes - sum(stored_size(m) for m in turn.history) - MESSAGE_OVERHEAD

    def run(self, turn: TurnHandle) -> None:
        """Generate one reply into the broker. Never raises: every exit ends the turn."""
        pieces: list[str] = []
        thought: list[str] = []
        closing: list[Draft] = []
        finish_reason, usage = "stop", None
        watch = self.metrics.turn_started()
        try:
            key = self._cache_key(turn)
            cached = self._cache_get(key)
            self.broker.publish(turn, [events.start(turn.message_id, self.model, cached=cached is not None)])
            if cached is not None:
                pieces, thought = cached["pieces"], cached.get("reasoning") or []
                finish_reason, usage = cached["finish_reason"], cached["usage"]
                # A replay has nothing to wait for: every event goes out in one publish.
                replay = [events.reasoning(piece) for piece in thought] + [events.token(piece) for piece in pieces]
                self.broker.publish(turn, replay)
                watch.tokens(len(pieces))
            else:
                request = ChatRequest(self.model, self.system_prompt, turn.history)
                allowance = self._reply_allowance(turn)
                cut = False
                stream = self.provider.stream(request, turn.cancelled)
                for item in stream:
                    if turn.cancelled.is_set():
                        break
                    if isinstance(item, Completion):
                        finish_reason, usage = item.finish_reason, item.usage
                        continue
                    text = item.text if isinstance(item, Reasoning) else item
                    if not text:
                        continue
                    if allowance is not None:
                        allowance -= utf8_size(text)
                        if allowance < 0:
                            # The session's byte budget: the reply ends here, as at a
                            # model's own length limit.
                            cut = True
                            break
                    if isinstance(item, Reasoning):
                        thought.append(text)
                        self.broker.publish(turn, [events.reasoning(text)])
                    else:
                        pieces.append(text)
                        self.broker.publish(turn, [events.token(text)])
                        watch.tokens(1)
                close = getattr(stream, "close", None)
                if close is not None:
                    close()
                if turn.cancelled.is_set():
                    finish_reason, usage = "cancelled", None
                elif cut:
                    finish_reason, usage = "length", None
                elif finish_reason == "stop" and pieces and key is not None:
                    reply: CachedReply = {"pieces": pieces, "finish_reason": finish_reason, "usage": usage}
                    if thought:
                        reply["reasoning"] = thought
                    self._cache_put(key, reply)
        except ProviderError as exc:
            # An upstream's fault, not ours: one line with its causes, no traceback.
            log.warning("turn %s failed: %s: %s%s", turn.message_id, exc.code, exc, _causes(exc))
            finish_reason, usage = "error", None
            watch.upstream_error(exc.code)
            closing.append(events.failure(exc))
        except Exception:
            log.exception("turn %s failed unexpectedly", turn.message_id)
            finish_reason, usage = "error", None
            closing.append(events.error("internal_error", "The reply failed; please try again.", retryable=True))
        finally:
            closing.append(events.end(turn.message_id, finish_reason, usage))
            try:
                self.broker.finish_turn(turn, "".join(pieces), closing, reasoning="".join(thought))
            except APIError as exc:
                # The broker is down or full: it logs that itself; one line here.
                log.warning("turn %s could not be finished: %s", turn.message_id, exc.code)
            except Exception:
                log.exception("turn %s could not be finished", turn.message_id)
            watch.finished(finish_reason)

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
