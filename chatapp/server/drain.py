"""Stopping a worker without cutting a reply: gunicorn's signal, chatapp's drain.

gunicorn stops a worker by setting its ``alive`` to false (SIGTERM: a deploy, a
scale-down), then stops accepting and waits up to ``graceful_timeout`` for its requests.
A watcher started in ``post_worker_init`` sees that and runs
:func:`chatapp.web.lifecycle.drain` with a deadline a little inside the graceful time,
so turns are handed over before gunicorn kills what is left; ``worker_exit`` waits for
it, since turns run outside gunicorn's requests and would otherwise die with the worker.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from .._concurrency import spawn
from ..web.lifecycle import drain

__all__ = ["drained", "watch_for_stop"]

#: How long before gunicorn's graceful timeout the turns are handed over.
_MARGIN_SECONDS = 1.5

_done = threading.Event()
_started = threading.Event()


def watch_for_stop(worker: Any) -> None:
    """Drain chatapp when gunicorn tells ``worker`` to stop (``post_worker_init`` hook)."""
    # Made here, in the worker, where threading may be gevent's by now.
    global _done, _started
    _done, _started = threading.Event(), threading.Event()
    graceful = float(worker.cfg.graceful_timeout)

    def wait_for_stop() -> None:
        while worker.alive:
            time.sleep(0.1)
        _started.set()
        try:
            drain(time.monotonic() + max(0.5, graceful - _MARGIN_SECONDS))
        finally:
            _done.set()

    spawn(wait_for_stop, name="chatapp-drain")


def drained(worker: Any) -> None:
    """``worker_exit`` hook: let a drain in progress finish (within the graceful time)."""
    if _started.is_set():
        _done.wait(float(worker.cfg.graceful_timeout))
