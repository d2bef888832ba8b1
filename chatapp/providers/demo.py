"""The demo provider: offline, deterministic replies streamed word by word.

The same message always gets the same reply, so it doubles as a load generator:
``CHATAPP_DEMO_DELAY_MS`` paces the words and ``CHATAPP_DEMO_REPLY_WORDS`` sets the length.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Iterator

from .base import ChatRequest, Completion, Provider, StreamItem

__all__ = ["DemoProvider"]

_WORDS = (
    "stream", "token", "event", "reply", "browser", "server", "flask", "gevent", "socket",
    "message", "session", "chunk", "latency", "quickly", "steady", "heartbeat", "resume",
    "the", "a", "of", "and", "to", "in", "every", "each", "one", "arrives", "flows", "over",
    "wire", "bytes", "text", "model", "answer", "while", "you", "watch", "it", "grow",
)


#: At full speed (no delay), the longest the demo runs before letting others run.
_FULL_SPEED_SLICE = 0.001
#: Pauses up to this long are slept through; longer ones wait on the cancel flag.
_SHORT_DELAY = 0.1


class DemoProvider(Provider):
    name = "demo"
    default_model = "demo"
    #: Deterministic, so a reply taken over by another worker goes on where it stopped.
    can_continue = True

    def __init__(self, *, delay_ms: float = 40.0, reply_words: int = 60) -> None:
        self.delay = delay_ms / 1000.0
        self.reply_words = reply_words

    def reply_for(self, text: str) -> list[str]:
        """The reply's pieces for ``text``: a word each, spaces kept with the words."""
        seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")
        rng = random.Random(seed)
        words = rng.choices(_WORDS, k=self.reply_words)
        words[0] = words[0].capitalize()
        return [words[0]] + [" " + word for word in words[1:-1]] + [f" {words[-1]}."][: len(words) - 1]

    def stream(self, request: ChatRequest, cancelled: threading.Event) -> Iterator[StreamItem]:
        pieces = self.reply_for(request.messages[-1].content if request.messages else "")
        yield from self._paced(request, pieces, pieces, cancelled)

    def continue_reply(self, request: ChatRequest, partial: str, cancelled: threading.Event) -> Iterator[StreamItem]:
        """The rest of the deterministic reply after its first ``len(partial)`` characters."""
        pieces = self.reply_for(request.messages[-1].content if request.messages else "")
        rest, done = [], 0
        for piece in pieces:
            if done >= len(partial):
                rest.append(piece)
            elif done + len(piece) > len(partial):
                # The reply stopped inside this piece: its remainder comes first.
                rest.append(piece[len(partial) - done :])
            done += len(piece)
        yield from self._paced(request, pieces, rest, cancelled)

    def _paced(self, request: ChatRequest, pieces: list[str], send: list[str], cancelled: threading.Event) -> Iterator[StreamItem]:
        """Yield ``send`` at the demo's pace, then the usage of the whole reply ``pieces``."""
        prompt_tokens = sum(len(m.content.split()) for m in request.messages)
        slice_started = time.monotonic()
        for piece in send:
            if self.delay:
                if self.delay <= _SHORT_DELAY:
                    # A word's pause is slept through, then the flag is checked: a cancel
                    # still stops the reply before its next word, and a plain sleep costs
                    # a third of a wait whose timeout expires (under gevent, an exception
                    # raised and caught inside the wait on every word).
                    time.sleep(self.delay)
                    if cancelled.is_set():
                        return
                elif cancelled.wait(self.delay):
                    return
            elif time.monotonic() - slice_started >= _FULL_SPEED_SLICE:
                # Give other greenlets (and threads) a turn even at full speed; once a
                # slice rather than once a word, so readers find the words made since
                # and write them together, as they would from an upstream whose socket
                # delivers several tokens per read.
                time.sleep(0)
                slice_started = time.monotonic()
            yield piece
        yield Completion(
            "stop",
            {"prompt_tokens": prompt_tokens, "completion_tokens": len(pieces), "total_tokens": prompt_tokens + len(pieces)},
        )
