"""Run one turn: provider -> events -> broker, in the background; cancel.

A turn is started by ``POST .../messages`` and runs in a greenlet under gevent or a
daemon thread elsewhere. It writes ``start``, ``token``..., optionally ``error``, and
always ``end`` into the broker; stream readers only ever read the broker, so a reader
that leaves does not stop the turn and any number of readers see the same events.

With a response cache, an identical request (see :func:`~chatapp.cache.cache_key`)
replays the stored reply as ``token`` events with ``"cached": true`` in ``start`` and
never reaches the provider; only replies that ended with ``stop`` are stored.
"""

from __future__ import annotations

import logging
from typing import Any

from . import events
from ._concurrency import spawn
from .broker.base import Broker, TurnHandle
from .cache import CachedReply, ResponseCache, cache_key
from .errors import ProviderError
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

    def start(self, session_id: str, text: str, *, name_session: bool = False) -> TurnHandle:
        """Store the user's message and generate the reply in the background.

        ``name_session``: the ``start`` event carries the session id, for a session made
        by the same request as the turn (its client has not seen the id).
        """
        turn = self.broker.begin_turn(session_id, text, max_messages=self.max_messages)
        spawn(self.run, turn, name_session, name="chatapp-turn")
        return turn

    def run(self, turn: TurnHandle, name_session: bool = False) -> None:
        """Generate one reply into the broker. Never raises: every exit ends the turn."""
        pieces: list[str] = []
        thought: list[str] = []
        closing: list[Draft] = []
        finish_reason, usage = "stop", None
        watch = self.metrics.turn_started()
        try:
            key = self._cache_key(turn)
            cached = self._cache_get(key)
            session_id = turn.session_id if name_session else None
            self.broker.publish(turn, [events.start(turn.message_id, self.model, cached=cached is not None, session_id=session_id)])
            if cached is not None:
                pieces, thought = cached["pieces"], cached.get("reasoning") or []
                finish_reason, usage = cached["finish_reason"], cached["usage"]
                # A replay has nothing to wait for: every event goes out in one publish.
                replay = [events.reasoning(piece) for piece in thought] + [events.token(piece) for piece in pieces]
                self.broker.publish(turn, replay)
                watch.tokens(len(pieces))
            else:
                request = ChatRequest(self.model, self.system_prompt, turn.history)
                for item in self.provider.stream(request, turn.cancelled):
                    if turn.cancelled.is_set():
                        break
                    if isinstance(item, Completion):
                        finish_reason, usage = item.finish_reason, item.usage
                    elif isinstance(item, Reasoning):
                        if item.text:
                            thought.append(item.text)
                            self.broker.publish(turn, [events.reasoning(item.text)])
                    elif item:
                        pieces.append(item)
                        self.broker.publish(turn, [events.token(item)])
                        watch.tokens(1)
                if turn.cancelled.is_set():
                    finish_reason, usage = "cancelled", None
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
            except Exception:
                log.exception("turn %s could not be finished", turn.message_id)
            watch.finished(finish_reason)

    # -- the response cache -----------------------------------------------------------

    def _cache_key(self, turn: TurnHandle) -> str | None:
        if self.cache is None or not turn.history:
            return None
        return cache_key(self.model, self.system_prompt, turn.history[:-1], turn.history[-1].content)

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
