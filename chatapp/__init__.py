"""chatapp: stream LLM chat replies from Flask to browsers over Server-Sent Events."""

from __future__ import annotations

from .app import create_app
from .extension import ChatApp
from .sse import ServerSentEvent

__all__ = ["ChatApp", "ServerSentEvent", "create_app", "__version__"]

__version__ = "0.1.0"
