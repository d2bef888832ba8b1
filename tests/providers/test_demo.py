"""The demo provider: deterministic, sized and paced by configuration, cancellable."""

from __future__ import annotations

import threading

from chatapp.broker.base import Message
from chatapp.providers.base import ChatRequest, Completion
from chatapp.providers.demo import DemoProvider


def request(text: str) -> ChatRequest:
    return ChatRequest("demo", "", (Message("m1", "user", text),))


def test_same_message_same_reply_and_length_from_config() -> None:
    provider = DemoProvider(delay_ms=0, reply_words=25)
    first = list(provider.stream(request("hello"), threading.Event()))
    second = list(provider.stream(request("hello"), threading.Event()))
    assert first == second
    text, completion = first[:-1], first[-1]
    assert len(text) == 25
    assert "".join(text).split() == [piece.strip() for piece in text]
    assert isinstance(completion, Completion) and completion.finish_reason == "stop"
    assert completion.usage["completion_tokens"] == 25
    assert list(provider.stream(request("other"), threading.Event())) != first


def test_one_word_reply() -> None:
    pieces = list(DemoProvider(delay_ms=0, reply_words=1).stream(request("x"), threading.Event()))
    assert len(pieces) == 2 and isinstance(pieces[0], str)


def test_cancel_interrupts_the_wait() -> None:
    cancelled = threading.Event()
    provider = DemoProvider(delay_ms=60_000, reply_words=10)
    got: list = []
    worker = threading.Thread(target=lambda: got.extend(provider.stream(request("slow"), cancelled)))
    worker.start()
    cancelled.set()
    worker.join(5)
    assert not worker.is_alive(), "the provider kept waiting after cancel"
    assert got == []


def test_cancel_between_short_pauses_stops_before_the_next_word() -> None:
    cancelled = threading.Event()
    stream = DemoProvider(delay_ms=5, reply_words=50).stream(request("quick"), cancelled)
    first = next(stream)
    cancelled.set()
    assert isinstance(first, str) and list(stream) == []
