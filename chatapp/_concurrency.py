"""The one place that decides between greenlets and threads.

gunicorn's gevent worker patches :mod:`threading` before it imports the app, but
gunicorn's master (and a test runner) may import chatapp first. So nothing here is
decided at import time: each call looks at whether gevent has patched ``threading``
*now*, and answers with a greenlet or a thread, gevent's primitives or the stdlib's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

__all__ = ["call_later", "gevent_active", "new_event", "plain_lock", "spawn", "watch"]

#: How often a watcher thread looks at its event (threads only; a greenlet just waits).
_WATCH_SECONDS = 0.1


def gevent_active() -> bool:
    """Whether gevent has patched ``threading`` in this process."""
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a core dependency
        return False
    return bool(monkey.is_module_patched("threading"))


def spawn(target: Callable[..., Any], *args: Any, name: str = "chatapp") -> None:
    """Run ``target(*args)`` in the background: a greenlet under gevent, else a daemon thread."""
    if gevent_active():
        import gevent

        gevent.spawn(target, *args)
    else:
        threading.Thread(target=target, args=args, daemon=True, name=name).start()


def new_event() -> threading.Event:
    """An Event of the current world: gevent's own under a patched ``threading``.

    Looked up per call: the unpatched Event captured at import would wait on a
    lock-based Condition, many times the cost of gevent's Event for short waits.
    """
    return threading.Event()


def plain_lock() -> threading.Lock:
    """The operating system's lock, even where gevent has patched ``threading``.

    For sections of a few dict and list operations that never block or yield to
    gevent's hub: under gevent no greenlet can find it held, and under threads it is
    the lock they need, while gevent's cooperative lock would cost as much as the rest
    of a publish. Nothing that can block may run under it.
    """
    if gevent_active():
        from gevent import monkey

        lock: threading.Lock = monkey.get_original("_thread", "allocate_lock")()
        return lock
    return threading.Lock()


def watch(event: threading.Event, action: Callable[[], None]) -> Callable[[], None]:
    """Run ``action`` once ``event`` is set; returns the function that stops watching."""
    if gevent_active():
        import gevent

        def wait() -> None:
            event.wait()
            action()

        watcher = gevent.spawn(wait)
        return lambda: watcher.kill(block=False)

    # A thread cannot be woken by two events at once, nor killed: it looks at ``event``
    # in short waits until told to stop.
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            if event.wait(_WATCH_SECONDS):
                if not done.is_set():
                    action()
                return

    threading.Thread(target=poll, daemon=True, name="chatapp-watch").start()
    return done.set


def call_later(seconds: float, action: Callable[[], None]) -> Callable[[], None]:
    """Run ``action`` after ``seconds`` unless the returned function is called first."""
    if gevent_active():
        import gevent

        timer = gevent.spawn_later(seconds, action)
        return lambda: timer.kill(block=False)
    thread_timer = threading.Timer(seconds, action)
    thread_timer.daemon = True
    thread_timer.start()
    return thread_timer.cancel
