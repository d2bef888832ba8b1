"""Tuning of the gunicorn worker that serves chatapp, called from :mod:`chatapp.server.gunicorn_conf`.

Once per worker after the app is loaded (``post_worker_init``):

- ``gc.freeze()``: everything built at start-up (modules, the app, its routes) moves
  to the permanent generation, so the collections that thousands of open streams
  trigger no longer walk it again and again.
- Under the gevent worker, one ``send`` per response write. gunicorn writes each item
  of the response iterable with ``sock.sendall``, and gevent's ``sendall`` first asks
  the kernel for the socket's send buffer size (a ``getsockopt`` syscall, there to
  slice huge payloads) on every call: for a stream of small events that doubles the
  syscalls. A write here tries one ``send`` and falls back to ``sendall`` only for
  what the kernel did not take, so the bytes on the wire are exactly the same.

Nothing here is imported by the library itself, and nothing is patched outside a
gunicorn gevent worker process.
"""

from __future__ import annotations

import gc
from typing import Any

__all__ = ["tune_worker", "write"]

_GC_YOUNG_THRESHOLD = 50_000


def tune_worker(worker: Any) -> None:
    """Apply the tuning to a gunicorn worker (``post_worker_init`` hook)."""
    from gunicorn import util
    from gunicorn.workers.ggevent import GeventWorker

    # gunicorn's Response calls util.write(sock, data, chunked) for the headers and every
    # body item; the signature is kept. gunicorn offers no hook for its writes, so this is
    # the one place chatapp replaces a function of gunicorn's, and only its own.
    original = getattr(util, "write", None)
    if isinstance(worker, GeventWorker) and original is not None and getattr(original, "__module__", "") == "gunicorn.util":
        util.write = write
    gc.collect()
    gc.freeze()
    # Thousands of open streams keep thousands of long-lived objects (greenlets, their
    # frames, sockets); a collection every 700 allocations walks the young ones again
    # and again, and the full collections that follow pause every stream at once. A
    # larger first threshold makes young collections rarer (dead objects are freed by
    # reference counting anyway, only cycles wait for a collection).
    gc.set_threshold(_GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def write(sock: Any, data: bytes | str, chunked: bool = False) -> None:
    """gunicorn's ``util.write`` with one ``send`` in the usual case."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    if chunked:
        data = b"%X\r\n%b\r\n" % (len(data), data)
    sent = sock.send(data)
    if sent < len(data):
        sock.sendall(memoryview(data)[sent:])
