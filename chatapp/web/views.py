"""The blueprint: the chat page, the JSON API, the event stream, and their JSON errors.

Every answer under ``api/`` is JSON, errors included: ``{"error": {"code", "message"}}``.
Flask gives routing errors (404, 405) to app-wide handlers only, which belong to the host
site, so a catch-all route of our own answers unknown API paths and wrong methods, and
an app-wide hook answers the rest under ``api/`` (methods no route knows, such as TRACE).

Before a view runs: ``OPTIONS`` is answered with the true ``Allow`` (and CORS's preflight
headers), a state-changing request from another origin is refused (:mod:`.origin`), and
a declared body is read within its deadline (:mod:`.bodies`). After it: security headers
(:mod:`.headers`) and a send timeout on every answer (:mod:`.sendguard`).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from typing import Any

from flask import Blueprint, Response, jsonify, render_template, request, url_for
from werkzeug.exceptions import NotFound

from ..errors import (
    ConflictError,
    InvalidRequestError,
    SessionNotFoundError,
    UnauthenticatedError,
    UnsupportedMediaError,
)
from ..events import parse_event_id
from . import handlers, requestlog
from .bodies import read_body, read_declared_body
from .budgets import body_limit, check_message_size
from .headers import page_policy, secure
from .onestep import start_streaming, wants_stream
from .openapi import openapi_document
from .origin import check_origin
from .owner import current_owner
from .sendguard import GuardedBody, client_socket
from .state import ChatAppState, state
from .streaming import EventStream, event_stream_response

__all__ = ["bp"]

log = logging.getLogger("chatapp.api")

# The page's template and static files live beside this module, inside the package, so
# a wheel carries them; a host's own ``templates/chatapp/index.html`` wins over ours.
bp = Blueprint("chatapp", __name__, template_folder="templates", static_folder="static", static_url_path="/static")
bp.before_request(requestlog.start_request)
bp.after_request(requestlog.finish_request)
handlers.register(bp)

#: Plain answers smaller than this fit any socket buffer at once: no guard needed.
_GUARD_FROM_BYTES = 16 * 1024

# token_urlsafe(16) gives 22 characters; anything else is not one of ours.
_SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{22}$")
_SURROGATE = re.compile("[\ud800-\udfff]")


# -- helpers ----------------------------------------------------------------------------


def _owner() -> str:
    owner = current_owner()
    if owner is None:
        raise UnauthenticatedError("Sign in to use the chat.")
    requestlog.note_owner(owner)
    return owner


def _owned_session(app_state: ChatAppState, session_id: str) -> str:
    """The caller, who owns ``session_id``; 404 for a missing session or another owner's."""
    owner = _owner()
    if not _SESSION_ID.match(session_id):
        raise SessionNotFoundError()
    # Another owner's session is answered exactly like a missing one.
    if app_state.broker.owner_of(session_id) != owner:
        raise SessionNotFoundError()
    return owner


def _json_body(app_state: ChatAppState, *, optional: bool = False) -> dict[str, Any]:
    """The request's JSON object; with ``optional``, an empty body is ``{}``."""
    if request.mimetype != "application/json":
        raise UnsupportedMediaError("Send the body as application/json.")
    raw = read_body(body_limit(app_state.settings), app_state.body_guard)
    if optional and not raw.strip():
        return {}
    try:
        body = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise InvalidRequestError("The body is not valid UTF-8.", code="invalid_json") from None
    except ValueError:
        raise InvalidRequestError("The body is not valid JSON.", code="invalid_json") from None
    except RecursionError:
        # Valid JSON nested deeper than the parser's recursion limit: not a message.
        raise InvalidRequestError("The body is nested too deeply.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidRequestError("The body must be a JSON object.", code="invalid_json")
    return body


def _stream_url(app_state: ChatAppState, session_id: str, owner: str) -> str:
    """The session's stream, with a fresh token that opens it without a cookie (tokens.py)."""
    token = app_state.tokens.issue(session_id, owner)
    return url_for("chatapp.stream", session_id=session_id, token=token)


def _session_urls(app_state: ChatAppState, session_id: str, owner: str) -> dict[str, str]:
    return {
        "stream_url": _stream_url(app_state, session_id, owner),
        "messages_url": url_for("chatapp.post_message", session_id=session_id),
    }


def _new_session(app_state: ChatAppState, owner: str) -> str:
    limit = app_state.settings.max_sessions_per_owner
    # Checked before creating, so a burst of parallel creates may pass the bound by a
    # few; the rate limit keeps bursts small.
    if app_state.broker.count_sessions(owner) >= limit:
        raise ConflictError(
            f"You have {limit} chats already; delete one (or let an idle one expire) to start another.",
            code="too_many_sessions",
        )
    return app_state.broker.create_session(owner)


def _message_of(app_state: ChatAppState, body: dict[str, Any]) -> str:
    message = body.get("message")
    if not isinstance(message, str):
        raise InvalidRequestError('"message" must be a string.')
    if not message.strip():
        raise InvalidRequestError('"message" must not be empty.')
    if _SURROGATE.search(message):
        # JSON can escape half of a UTF-16 pair ("\\ud800"), which is no character at all.
        raise InvalidRequestError('"message" contains an unpaired surrogate escape.')
    check_message_size(message, app_state.settings)
    return message


# -- page and health --------------------------------------------------------------------


@bp.before_request
def guard_request() -> Response | None:
    """OPTIONS, the Origin check and the body's deadline, before any view runs."""
    app_state = state()
    if request.method == "OPTIONS" and handlers.is_api_request():
        return handlers.options_response()
    check_origin(app_state.settings.cors_origins)
    read_declared_body(body_limit(app_state.settings), app_state.body_guard)
    return None


@bp.before_app_request
def json_routing_errors() -> Response | None:
    """Routing errors under ``api/`` that no route of ours could catch, as JSON."""
    error = request.routing_exception
    if error is None or not handlers.is_api_request():
        return None
    return handlers.routing_error(error)


@bp.get("/")
def page() -> Response:
    response = Response(render_template("chatapp/index.html", api_base=url_for("chatapp.create_session")), mimetype="text/html")
    response.headers["Content-Security-Policy"] = page_policy(state().settings.frame_ancestors)
    return response


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    app_state = state()
    ok = app_state.broker.ping()
    body = {
        "status": "ok" if ok else "unavailable",
        "broker": {"backend": app_state.broker.name, "ok": ok},
        "streams": app_state.streams.total,
        # Lets clients (chatapp doctor) tell a held heartbeat from a slow one.
        "heartbeat_seconds": app_state.settings.heartbeat_seconds,
    }
    return jsonify(body), 200 if ok else 503


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text format; ``CHATAPP_METRICS=off`` hides it, a token guards it."""
    app_state = state()
    setting = app_state.settings.metrics
    if setting == "off":
        raise NotFound()
    if setting != "on":
        given = request.headers.get("Authorization", "").encode("utf-8", "replace")
        if not hmac.compare_digest(given, f"Bearer {setting}".encode()):
            response = jsonify(error={"code": "unauthenticated", "message": "Send Authorization: Bearer <CHATAPP_METRICS token>."})
            response.status_code = 401
            response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    body, content_type = app_state.metrics.render()
    return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})


# -- sessions ---------------------------------------------------------------------------


@bp.post("/api/sessions")
def create_session() -> tuple[Response, int, dict[str, str]]:
    app_state = state()
    # JSON like every other post: a page of another origin cannot send that without a
    # CORS preflight, which it does not pass. The body is optional ({} or nothing).
    _json_body(app_state, optional=True)
    owner = _owner()
    session_id = _new_session(app_state, owner)
    urls = _session_urls(app_state, session_id, owner)
    location = url_for("chatapp.get_session", session_id=session_id)
    return jsonify(session_id=session_id, **urls), 201, {"Location": location}


@bp.get("/api/sessions/<session_id>")
def get_session(session_id: str) -> Response:
    """The newest page of history; ``cursor`` (when older messages exist) goes in
    ``?before=`` for the page before it. ``?limit=`` asks for fewer messages."""
    app_state = state()
    owner = _owned_session(app_state, session_id)
    settings = app_state.settings
    limit = _whole_query("limit", 1, settings.history_page_messages)
    before = _whole_query("before", 0, None)
    limit = settings.history_page_messages if limit is None else limit
    page = app_state.broker.history_page(session_id, before=before, limit=limit, max_bytes=settings.history_page_bytes)
    if page is None:
        raise SessionNotFoundError()
    return _utf8_json(
        {
            "session_id": session_id,
            "messages": [m.to_dict() for m in page.messages],
            "generating": page.generating,
            "cursor": str(page.start) if page.start > 0 else None,
            # Asking for the history is also how a client renews its stream token.
            "stream_url": _stream_url(app_state, session_id, owner),
        }
    )


def _utf8_json(body: dict[str, Any]) -> Response:
    """JSON in UTF-8 rather than ``\\u`` escapes: a page of history in most scripts is then
    about its stored size (the page bound), not two to six times it."""
    try:
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (an upstream may send one) has no UTF-8: escape it all.
        data = json.dumps(body, separators=(",", ":")).encode("ascii")
    return Response(data, mimetype="application/json")


def _whole_query(name: str, minimum: int, maximum: int | None) -> int | None:
    """A whole-number query parameter within bounds, ``None`` when absent; else 400."""
    raw = request.args.get(name)
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 12:
        raise InvalidRequestError(f"{name} must be a whole number.")
    value = int(raw)
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"from {minimum} to {maximum}" if maximum is not None else f"at least {minimum}"
        raise InvalidRequestError(f"{name} must be {bound}.")
    return value


@bp.delete("/api/sessions/<session_id>")
def delete_session(session_id: str) -> tuple[str, int]:
    app_state = state()
    _owned_session(app_state, session_id)
    app_state.broker.delete_session(session_id)
    return "", 204


# -- turns ------------------------------------------------------------------------------


@bp.post("/api/sessions/<session_id>/messages")
def post_message(session_id: str) -> Response | tuple[Response, int]:
    app_state = state()
    owner = _owned_session(app_state, session_id)
    message = _message_of(app_state, _json_body(app_state))
    if wants_stream():
        return start_streaming(app_state, session_id, owner, message)
    turn = app_state.runner.start(session_id, message)
    return jsonify(message_id=turn.message_id, stream_url=_stream_url(app_state, session_id, owner)), 202


@bp.post("/api/chat")
def chat() -> Response | tuple[Response, int]:
    """A message for a new session, or the given one: one request for one-shot clients."""
    app_state = state()
    owner = _owner()
    body = _json_body(app_state)
    message = _message_of(app_state, body)
    session_id = body.get("session_id")
    created = session_id is None
    if created:
        session_id = _new_session(app_state, owner)
    elif not isinstance(session_id, str):
        raise InvalidRequestError('"session_id" must be a string, or left out for a new session.')
    else:
        _owned_session(app_state, session_id)
    try:
        if wants_stream():
            return start_streaming(app_state, session_id, owner, message, name_session=created)
        turn = app_state.runner.start(session_id, message, name_session=created)
    except BaseException:
        # Refused (too many open streams, say): the caller never learns the new session's
        # id, so it must not stay behind and count against their chats.
        if created:
            app_state.broker.delete_session(session_id)
        raise
    return jsonify(session_id=session_id, message_id=turn.message_id, **_session_urls(app_state, session_id, owner)), 202


@bp.post("/api/sessions/<session_id>/cancel")
def cancel(session_id: str) -> tuple[Response, int]:
    app_state = state()
    _owned_session(app_state, session_id)
    cancelled = app_state.broker.request_cancel(session_id)
    return jsonify(cancelled=cancelled), 202


@bp.get("/api/sessions/<session_id>/stream")
def stream(session_id: str) -> Response:
    app_state = state()
    token = request.args.get("token")
    if token is None:
        owner = _owned_session(app_state, session_id)
    else:
        # The token stands for the owner (EventSource cannot send Authorization, and a
        # cookie may be blocked); a bad one is the 404 of an unknown session.
        found = app_state.broker.owner_of(session_id) if _SESSION_ID.match(session_id) else None
        if found is None or not app_state.tokens.verify(token, session_id, found):
            raise SessionNotFoundError()
        owner = found
        requestlog.note_owner(owner)
    after = request.headers.get("Last-Event-ID")
    if after is None:
        after = request.args.get("last_event_id")
    # Only HTTP's own blanks are trimmed; an empty id means none, as for EventSource.
    after = (after or "").strip(" \t") or None
    if after is not None:
        try:
            parse_event_id(after)
        except ValueError:
            raise InvalidRequestError("Last-Event-ID is not an event id of this stream.", code="invalid_last_event_id") from None
    follow = request.args.get("follow", "").lower() in ("1", "true", "yes")
    backlog = app_state.broker.backlog(session_id, after)
    if not backlog and not follow and not app_state.broker.is_generating(session_id):
        # Nothing newer and nothing coming: 204 tells EventSource to stop reconnecting.
        return Response(status=204)
    stream = app_state.streams.open(
        session_id, owner, after=after, backlog=backlog, follow=follow, sock=client_socket(request.environ)
    )
    return event_stream_response(stream)


@bp.get("/api/openapi.json")
def openapi() -> Response:
    prefix = url_for("chatapp.create_session").rsplit("/api/", 1)[0]
    return jsonify(openapi_document(prefix, max_message_chars=state().settings.max_message_chars))


@bp.after_request
def add_cors_headers(response: Response) -> Response:
    return state().cors.apply(response)


@bp.after_request
def drop_type_of_no_content(response: Response) -> Response:
    # Flask labels every answer text/html, an empty 204 included; a client that
    # dispatches on the content type would take it for an HTML page.
    if response.status_code == 204:
        response.headers.pop("Content-Type", None)
    return response


@bp.after_request
def guard_response(response: Response) -> Response:
    """Security headers on every answer; the send timeout on every body worth guarding."""
    secure(response)
    guard = state().streams.guard
    sock = client_socket(request.environ)
    if guard is None or sock is None or isinstance(response.response, EventStream):
        return response
    length = response.content_length
    if length is not None and length < _GUARD_FROM_BYTES:
        return response
    # Passed-through bodies (files) are bytes already; others are encoded here.
    body: Any = response.response if response.direct_passthrough else response.iter_encoded()
    response.response = GuardedBody(body, guard, sock)
    response.direct_passthrough = True
    return response


@bp.route("/api", defaults={"rest": ""}, methods=handlers.ALL_METHODS)
@bp.route("/api/<path:rest>", methods=handlers.ALL_METHODS)
def api_fallback(rest: str) -> Response:
    """Unknown API paths (404) and known ones with the wrong method (405), as JSON."""
    return handlers.unmatched_api_request()


