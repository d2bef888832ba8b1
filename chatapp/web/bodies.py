"""Request bodies with a deadline: one that stops arriving is a 408, and its connection closes.

A client can declare a body (``Content-Length: 1000``, or a chunked one) and then send
nothing more. The WSGI server reads the body for us and waits as long as the client
likes, holding the request's greenlet or thread: enough of them starve every other
request, ``/healthz`` included. So every body sent to chatapp's routes is read before
the view runs (:func:`read_declared_body`, a ``before_request``), at most
``CHATAPP_BODY_TIMEOUT_SECONDS`` from its start. The deadline is kept by the send
guard's watcher (:class:`~.sendguard.SendGuard` with ``how=SHUT_RD``): when it passes, it
shuts the read side of the client's socket, the server's blocked read ends, and the
request is answered 408 ``body_timeout``. With its read side shut, the connection then
closes rather than waiting for the rest of a body that is not coming; a body that
trickles in is cut at the deadline too. The body read is kept, so views take it from
:func:`read_body` without reading again.

Needs the client's socket in the WSGI environ (gunicorn's workers, ``flask run``); under
a server that exposes none, bodies are read without a deadline (uWSGI has its own,
``--socket-timeout``).
"""

from __future__ import annotations

import logging

from flask import request
from werkzeug.exceptions import HTTPException

from ..errors import InvalidRequestError, PayloadTooLargeError, RequestTimeoutError
from .sendguard import SendGuard, client_socket

__all__ = ["has_body", "read_body", "read_declared_body"]

log = logging.getLogger("chatapp.api")

_BODY_KEY = "chatapp.body"
_READ_SIZE = 64 * 1024


def has_body() -> bool:
    """Whether the request declares a body: a non-zero length, or chunked framing."""
    if request.content_length:
        return True
    return "chunked" in request.headers.get("Transfer-Encoding", "").lower()


def read_declared_body(limit: int, guard: SendGuard) -> None:
    """Read the request's body now, within ``guard``'s deadline (``before_request``)."""
    if has_body():
        read_body(limit, guard)


def read_body(limit: int, guard: SendGuard) -> bytes:
    """The request body, read once, at most ``limit`` bytes, within ``guard``'s deadline.

    :class:`PayloadTooLargeError` past ``limit`` (reading no further, even when chunked),
    :class:`RequestTimeoutError` when it stops arriving, :class:`InvalidRequestError` for
    broken framing.
    """
    environ = request.environ
    body: bytes | None = environ.get(_BODY_KEY)
    if body is None:
        if request.content_length is not None and request.content_length > limit:
            raise PayloadTooLargeError(f"The request body is larger than {limit} bytes.")
        sock = client_socket(environ)
        key = id(environ)
        if sock is not None:
            guard.writing(key, sock)
        try:
            body = _read(limit + 1)
        except HTTPException:
            if sock is not None and not guard.written(key):
                raise _timed_out(guard) from None
            raise
        except Exception as exc:
            if sock is not None and not guard.written(key):
                raise _timed_out(guard) from None
            # Broken framing (a chunk size that is not hex, a connection cut mid-body) is
            # raised by the WSGI server's own reader, each in its own exception type: all
            # of it is the client's bytes, so all of it is a 400.
            log.info("unreadable request body: %r", exc)
            raise InvalidRequestError("The request body could not be read.", code="invalid_body") from None
        if sock is not None and not guard.written(key):
            # The deadline passed just as the last bytes came: the socket is shut anyway.
            raise _timed_out(guard)
        environ[_BODY_KEY] = body
    if len(body) > limit:
        raise PayloadTooLargeError(f"The request body is larger than {limit} bytes.")
    return body


def _read(size: int) -> bytes:
    stream = request.stream
    parts: list[bytes] = []
    left = size
    while left > 0:
        part = stream.read(min(left, _READ_SIZE))
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _timed_out(guard: SendGuard) -> RequestTimeoutError:
    return RequestTimeoutError(f"The request body did not arrive within {guard.timeout:g} seconds; send it again.")
