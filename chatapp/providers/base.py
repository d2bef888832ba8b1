"""The provider interface: where reply text comes from.

A provider is a plain synchronous iterator factory. Under gunicorn's gevent worker its
blocking calls cooperate through monkey-patched sockets and timers; under threads they
simply block their own thread. Vendor exceptions never leave a provider: each one is
translated into a :class:`~chatapp.errors.ProviderError` at its own boundary.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..broker.base import Message

__all__ = ["ChatRequest", "Completion", "Provider", "Reasoning", "StreamItem"]


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """Everything a provider needs for one reply; the last message is the user's."""

    model: str
    system_prompt: str
    messages: tuple[Message, ...]


@dataclass(frozen=True, slots=True)
class Reasoning:
    """A piece of the model's thinking, yielded in order before and between answer text."""

    text: str


@dataclass(frozen=True, slots=True)
class Completion:
    """How a reply ended, yielded once after its last piece of text."""

    finish_reason: str = "stop"
    usage: dict[str, Any] | None = None


#: What a provider yields: answer text (``str``), :class:`Reasoning`, and last a :class:`Completion`.
StreamItem = str | Reasoning | Completion


class Provider(ABC):
    name: str = "provider"
    #: The model used when ``CHATAPP_MODEL`` is blank.
    default_model: str = ""
    #: Whether :meth:`continue_reply` can continue a partial reply; a turn taken over
    #: from a dead worker is otherwise generated again from its start.
    can_continue: bool = False

    @abstractmethod
    def stream(self, request: ChatRequest, cancelled: threading.Event) -> Iterator[StreamItem]:
        """Yield the reply's text pieces in order (and :class:`Reasoning` pieces, when the
        model shows its thinking), then optionally one :class:`Completion`.

        ``cancelled`` is set when the user asks to stop; a provider that waits should
        wait on it so a cancel takes effect at once rather than after the next piece.
        """

    def continue_reply(self, request: ChatRequest, partial: str, cancelled: threading.Event) -> Iterator[StreamItem]:
        """Yield what follows ``partial``, the reply's text so far, as :meth:`stream` would.

        Only called when :attr:`can_continue` is true.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot continue a partial reply")
