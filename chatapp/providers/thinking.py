"""Inline thinking: a reply whose content starts with ``<think>...</think>``.

Some servers (LM Studio, some llama.cpp builds, raw DeepSeek-R1 and Qwen3 templates)
stream a reasoning model's thinking inside the answer text, between these tags. The
splitter turns such content back into reasoning and answer, piece by piece, also when a
tag is split across chunks. Content that does not start with ``<think>`` (after
whitespace) passes through untouched.
"""

from __future__ import annotations

from collections.abc import Iterator

from .base import Reasoning

__all__ = ["ThinkSplitter"]

_OPEN, _CLOSE = "<think>", "</think>"


class ThinkSplitter:
    """Feed content pieces in order; get answer text (``str``) and :class:`Reasoning` out."""

    def __init__(self) -> None:
        # "start": not yet known whether the content opens with the tag; "thinking":
        # inside the tags; "after": just closed, dropping the blank lines that follow;
        # "answer": everything passes through.
        self._state = "start"
        self._held = ""

    def feed(self, text: str) -> Iterator[str | Reasoning]:
        self._held += text
        while self._held:
            if self._state == "start":
                stripped = self._held.lstrip()
                if stripped.startswith(_OPEN):
                    self._held = stripped[len(_OPEN) :]
                    self._state = "thinking"
                elif _OPEN.startswith(stripped):
                    return  # the tag may still be arriving
                else:
                    self._state = "answer"
            elif self._state == "thinking":
                end = self._held.find(_CLOSE)
                if end >= 0:
                    if end:
                        yield Reasoning(self._held[:end])
                    self._held = self._held[end + len(_CLOSE) :]
                    self._state = "after"
                    continue
                keep = _partial_suffix(self._held, _CLOSE)
                if len(self._held) > keep:
                    yield Reasoning(self._held[: len(self._held) - keep])
                    self._held = self._held[len(self._held) - keep :]
                return
            elif self._state == "after":
                self._held = self._held.lstrip()
                if self._held:
                    self._state = "answer"
            else:
                yield self._held
                self._held = ""

    def finish(self) -> Iterator[str | Reasoning]:
        """What is still held when the content ends."""
        held, self._held = self._held, ""
        if not held:
            return
        if self._state == "thinking":
            yield Reasoning(held)
        elif self._state != "after":
            yield held


def _partial_suffix(text: str, tag: str) -> int:
    """The length of the longest end of ``text`` that is a start of ``tag``."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0
