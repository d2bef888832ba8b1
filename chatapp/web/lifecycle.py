"""The apps of this process, and how they stop: drain readers, finish or hand over turns.

When the server stops a worker (SIGTERM: a deploy, a scale-down), :func:`drain` runs:

1. Readers of turns not produced here (and idle ``follow=1`` readers) are ended at once,
   cleanly, so ``EventSource`` reconnects with its last id to a server that stays.
2. Turns produced here may finish until the deadline (``CHATAPP_GRACEFUL_TIMEOUT`` less a
   margin); their readers stay to the end.
3. Then every turn still running is handed over (on Redis: its lease released, so
   another worker's sweep claims it within a second and continues it), or, where no
   other process could take it (the memory broker), ends with ``server_restarting``.
   Its readers leave and reconnect as in 1.
"""

from __future__ import annotations

import logging
import time
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .state import ChatAppState

__all__ = ["drain", "register"]

log = logging.getLogger("chatapp")

_apps: weakref.WeakSet[ChatAppState] = weakref.WeakSet()


def register(state: ChatAppState) -> None:
    """Count an app's state among this process's (``init_app`` does)."""
    _apps.add(state)


def drain(deadline: float) -> None:
    """Stop serving streams and turns by ``deadline`` (a ``time.monotonic()`` value).

    Blocks (cooperatively under gevent) until every turn of this process ended or was
    handed over.
    """
    apps = list(_apps)
    for state in apps:
        # Turns handed over (ours or a sibling worker's) go to workers that stay.
        state.broker.quiesce()
        state.streams.drain()
    while any(state.runner.active for state in apps) and time.monotonic() < deadline:
        time.sleep(0.1)
    running = sum(state.runner.active for state in apps)
    if running:
        log.warning("stopping with %d turns still running: handing them over", running)
    for state in apps:
        state.runner.stop_all()
    # Readers of turns that just ended or were handed over may leave now too.
    for state in apps:
        state.streams.drain()
    # A turn ended with server_restarting still has to write its end.
    while any(state.runner.active for state in apps) and time.monotonic() < deadline + 1.0:
        time.sleep(0.05)
