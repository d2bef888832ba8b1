"""Fakes of the interfaces chatapp owns (never of a vendor's SDK or server)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from chatapp.providers.base import ChatRequest, Provider


class ScriptedProvider(Provider):
    """Yields a fixed script; raises where the script holds an exception."""

    name = "scripted"
    default_model = "scripted-1"

    def __init__(self, script: list) -> None:
        self.script = script
        self.requests: list[ChatRequest] = []

    def stream(self, request: ChatRequest, cancelled: threading.Event) -> Iterator:
        self.requests.append(request)
        for item in self.script:
            if isinstance(item, BaseException):
                raise item
            if item == "<cancel>":
                cancelled.set()
                continue
            yield item
