"""Brokers: where sessions, history and event logs live. See :mod:`.base`."""

from __future__ import annotations

from .base import Broker, Event, Message, SessionInfo, TurnHandle
from .memory import MemoryBroker

__all__ = ["Broker", "Event", "MemoryBroker", "Message", "SessionInfo", "TurnHandle"]
