"""The one-step stream: a message post that answers with the stream of the turn it started.

``POST .../messages`` and ``POST /api/chat`` with ``Accept: text/event-stream`` answer 200
with the turn's events, the very events and ids ``GET .../stream`` gives, so a ``fetch()``
read through a ``ReadableStream``, an SDK or ``curl -N`` gets a reply in one request. A
dropped one-step stream resumes with ``GET .../stream`` and ``Last-Event-ID``.
"""

from __future__ import annotations

from flask import Response, request

from .sendguard import client_socket
from .state import ChatAppState
from .streaming import event_stream_response

__all__ = ["start_streaming", "wants_stream"]

_JSON, _EVENT_STREAM = "application/json", "text/event-stream"


def wants_stream() -> bool:
    """Whether the request asks for the stream rather than the JSON answer.

    Only an ``Accept`` that prefers ``text/event-stream`` does; ``*/*`` (what most HTTP
    libraries send) and a tie keep the JSON answer older clients expect.
    """
    return request.accept_mimetypes.best_match([_JSON, _EVENT_STREAM]) == _EVENT_STREAM


def start_streaming(app_state: ChatAppState, session_id: str, owner: str, message: str, *, name_session: bool = False) -> Response:
    """Start the turn of ``message`` and answer with its stream, from its ``start``."""
    # The stream's slot is taken first: an owner with too many open streams gets 429
    # before any turn starts, not a turn nobody reads.
    stream = app_state.streams.open(session_id, owner, sock=client_socket(request.environ))
    try:
        app_state.runner.start(session_id, message, name_session=name_session)
    except BaseException:
        stream.close()
        raise
    # With no id, the stream reads the session's latest turn from its first event: the
    # one just begun, whose opening is already recorded whether or not `start` is yet.
    return event_stream_response(stream)
