"""Providers: where reply text comes from. See :mod:`.base`."""

from __future__ import annotations

from .base import ChatRequest, Completion, Provider, Reasoning, StreamItem
from .demo import DemoProvider

__all__ = ["ChatRequest", "Completion", "DemoProvider", "Provider", "Reasoning", "StreamItem"]
