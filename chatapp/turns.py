"""Run one turn: provider -> events -> broker, in the background; cancel.

A turn is started by ``POST .../messages`` and runs in a greenlet under gevent or a
daemon thread elsewhere. It writes ``start``, ``token``..., optionally ``error``, and
always ``end`` into the broker; stream readers only ever read the broker, so a reader
that leaves does not stop the turn and any number of readers see the same events.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from json.encoder import encode_basestring as _encode_string  # the C version when built
from typing import Any

from .broker.base import Broker, TurnHandle
from .errors import ProviderError
from .providers.base import ChatRequest, Completion, Provider

__all__ = ["TurnRunner", "spawn"]

log = logging.getLogger("chatapp.turns")


def spawn(target: Callable[..., Any], *args: Any) -> None:
    """Run ``target`` in the background: a greenlet when gevent patched threading."""
    from gevent import monkey

    if monkey.is_module_patched("threading"):
        import gevent

        gevent.spawn(target, *args)
    else:
        threading.Thread(target=target, args=args, daemon=True, name="chatapp-turn").start()


def _json(value: dict[str, Any]) -> str:
    # ensure_ascii=False keeps non-ASCII text as UTF-8 on the wire, a third of the size
    # of \\u escapes for most scripts; JSON still escapes every line break.
    if len(value) == 1 and type(value.get("text")) is str:
        # A token's data, once per token: the same text as the encoder below gives,
        # without building an encoder each time (a tenth of the cost).
        return '{"text":' + _encode_string(value["text"]) + "}"
    return _ENCODER.encode(value)


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


class TurnRunner:
    """Starts turns and carries each to its ``end``."""

    def __init__(self, broker: Broker, provider: Provider, *, model: str, system_prompt: str) -> None:
        self.broker = broker
        self.provider = provider
        self.model = model or provider.default_model
        self.system_prompt = system_prompt

    def start(self, session_id: str, text: str) -> TurnHandle:
        """Store the user's message and generate the reply in the background."""
        turn = self.broker.begin_turn(session_id, text)
        spawn(self.run, turn)
        return turn

    def run(self, turn: TurnHandle) -> None:
        """Generate one reply into the broker. Never raises: every exit ends the turn."""
        pieces: list[str] = []
        closing: list[tuple[str, str]] = []
        finish_reason, usage = "stop", None
        try:
            self.broker.publish(turn, [("start", _json({"message_id": turn.message_id, "model": self.model, "cached": False}))])
            request = ChatRequest(self.model, self.system_prompt, turn.history)
            for item in self.provider.stream(request, turn.cancelled):
                if turn.cancelled.is_set():
                    break
                if isinstance(item, Completion):
                    finish_reason, usage = item.finish_reason, item.usage
                    continue
                if item:
                    pieces.append(item)
                    self.broker.publish(turn, [("token", _json({"text": item}))])
            if turn.cancelled.is_set():
                finish_reason, usage = "cancelled", None
        except ProviderError as exc:
            log.warning("turn %s failed: %s", turn.message_id, exc, exc_info=exc.__cause__ is not None)
            finish_reason, usage = "error", None
            closing.append(("error", _json({"code": exc.code, "message": exc.message, "retryable": exc.retryable})))
        except Exception:
            log.exception("turn %s failed unexpectedly", turn.message_id)
            finish_reason, usage = "error", None
            closing.append(("error", _json({"code": "internal_error", "message": "The reply failed; please try again.", "retryable": True})))
        finally:
            closing.append(("end", _json({"message_id": turn.message_id, "finish_reason": finish_reason, "usage": usage})))
            try:
                self.broker.finish_turn(turn, "".join(pieces), closing)
            except Exception:
                log.exception("turn %s could not be finished", turn.message_id)
