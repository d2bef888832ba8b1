"""The blueprint: the chat page, the JSON API, the event stream, and their JSON errors.

Every answer under ``api/`` is JSON, errors included: ``{"error": {"code", "message"}}``.
Flask gives routing errors (404, 405) to app-wide handlers only, which belong to the host
site, so a catch-all route of our own answers unknown API paths and wrong methods.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, render_template, request, url_for
from flask_limiter import RateLimitExceeded
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound, RequestEntityTooLarge, default_exceptions

from .broker.base import SessionInfo, parse_event_id
from .errors import (
    APIError,
    ConflictError,
    InvalidRequestError,
    PayloadTooLargeError,
    RateLimitedError,
    SessionNotFoundError,
    UnauthenticatedError,
    UnsupportedMediaError,
)
from . import requestlog
from .extension import ChatAppState, current_owner, state
from .openapi import openapi_document
from .ratelimit import rate_limited_error
from .sendguard import client_socket
from .streaming import EventStream, event_stream_response

__all__ = ["bp"]

log = logging.getLogger("chatapp.api")



def _asset_dir(name: str) -> str:
    """``templates``/``static``: inside the package when installed from a wheel, else
    the top-level folder of the source checkout."""
    package = Path(__file__).resolve().parent
    inside = package / name
    return str(inside if inside.is_dir() else package.parent / name)


bp = Blueprint(
    "chatapp",
    __name__,
    template_folder=_asset_dir("templates"),
    static_folder=_asset_dir("static"),
    static_url_path="/static",
)
bp.before_request(requestlog.start_request)
bp.after_request(requestlog.finish_request)

# token_urlsafe(16) gives 22 characters; anything else is not one of ours.
_SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{22}$")
_SURROGATE = re.compile("[\ud800-\udfff]")
_ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


# -- helpers ----------------------------------------------------------------------------


def _owner(app_state: ChatAppState) -> str:
    owner = current_owner()
    if owner is None:
        raise UnauthenticatedError("Sign in to use the chat.")
    requestlog.note_owner(owner)
    return owner


def _owned_session(app_state: ChatAppState, session_id: str) -> tuple[str, SessionInfo]:
    owner = _owner(app_state)
    if not _SESSION_ID.match(session_id):
        raise SessionNotFoundError()
    session = app_state.broker.get_session(session_id)
    # Another owner's session is answered exactly like a missing one.
    if session is None or session.owner != owner:
        raise SessionNotFoundError()
    return owner, session


def _json_body(app_state: ChatAppState) -> dict[str, Any]:
    if request.mimetype != "application/json":
        raise UnsupportedMediaError("Send the body as application/json.")
    # A message may be escaped JSON (up to 12 bytes a character), plus a little framing.
    limit = app_state.settings.max_message_chars * 12 + 4096
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLargeError(f"The request body is larger than {limit} bytes.")
    raw = _read_body(limit + 1)
    if len(raw) > limit:
        raise PayloadTooLargeError(f"The request body is larger than {limit} bytes.")
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


def _read_body(size: int) -> bytes:
    try:
        return request.stream.read(size)
    except HTTPException:
        raise
    except Exception as exc:
        # Broken framing (a chunk size that is not hex, a connection cut mid-body) is
        # raised by the WSGI server's own reader, each in its own exception type: all
        # of it is the client's bytes, so all of it is a 400.
        log.info("unreadable request body: %r", exc)
        raise InvalidRequestError("The request body could not be read.", code="invalid_body") from None


def _session_urls(session_id: str) -> dict[str, str]:
    return {
        "stream_url": url_for("chatapp.stream", session_id=session_id),
        "messages_url": url_for("chatapp.post_message", session_id=session_id),
    }


# -- page and health --------------------------------------------------------------------


@bp.get("/")
def page() -> str:
    return render_template("chatapp/index.html", api_base=url_for("chatapp.create_session"))


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
    """Prometheus text format; ``CHATAPP_METRICS=off`` hides it."""
    app_state = state()
    if not app_state.settings.metrics:
        raise NotFound()
    body, content_type = app_state.metrics.render()
    return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})


# -- sessions ---------------------------------------------------------------------------


@bp.post("/api/sessions")
def create_session() -> tuple[Response, int, dict[str, str]]:
    app_state = state()
    owner = _owner(app_state)
    limit = app_state.settings.max_sessions_per_owner
    # Checked before creating, so a burst of parallel creates may pass the bound by a
    # few; the rate limit keeps bursts small.
    if app_state.broker.count_sessions(owner) >= limit:
        raise ConflictError(
            f"You have {limit} chats already; delete one (or let an idle one expire) to start another.",
            code="too_many_sessions",
        )
    session_id = app_state.broker.create_session(owner)
    urls = _session_urls(session_id)
    location = url_for("chatapp.get_session", session_id=session_id)
    return jsonify(session_id=session_id, **urls), 201, {"Location": location}


@bp.get("/api/sessions/<session_id>")
def get_session(session_id: str) -> Response:
    _, session = _owned_session(state(), session_id)
    return jsonify(
        session_id=session.session_id,
        messages=[m.to_dict() for m in session.messages],
        generating=session.generating,
    )


@bp.delete("/api/sessions/<session_id>")
def delete_session(session_id: str) -> tuple[str, int]:
    app_state = state()
    _owned_session(app_state, session_id)
    app_state.broker.delete_session(session_id)
    return "", 204


# -- turns ------------------------------------------------------------------------------


@bp.post("/api/sessions/<session_id>/messages")
def post_message(session_id: str) -> tuple[Response, int]:
    app_state = state()
    _owned_session(app_state, session_id)
    body = _json_body(app_state)
    message = body.get("message")
    if not isinstance(message, str):
        raise InvalidRequestError('"message" must be a string.')
    if not message.strip():
        raise InvalidRequestError('"message" must not be empty.')
    if _SURROGATE.search(message):
        # JSON can escape half of a UTF-16 pair ("\\ud800"), which is no character at all.
        raise InvalidRequestError('"message" contains an unpaired surrogate escape.')
    limit = app_state.settings.max_message_chars
    if len(message) > limit:
        raise PayloadTooLargeError(f'"message" is longer than {limit} characters.', code="message_too_long")
    turn = app_state.runner.start(session_id, message, max_messages=app_state.settings.max_session_messages)
    return jsonify(message_id=turn.message_id, stream_url=url_for("chatapp.stream", session_id=session_id)), 202


@bp.post("/api/sessions/<session_id>/cancel")
def cancel(session_id: str) -> tuple[Response, int]:
    app_state = state()
    _owned_session(app_state, session_id)
    cancelled = app_state.broker.request_cancel(session_id)
    return jsonify(cancelled=cancelled), 202


@bp.get("/api/sessions/<session_id>/stream")
def stream(session_id: str) -> Response:
    app_state = state()
    owner, session = _owned_session(app_state, session_id)
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
    if not backlog and not session.generating and not follow:
        # Nothing newer and nothing coming: 204 tells EventSource to stop reconnecting.
        return Response(status=204)
    settings = app_state.settings
    return event_stream_response(
        EventStream(
            app_state.broker,
            session_id,
            after,
            backlog=backlog,
            follow=follow,
            heartbeat=settings.heartbeat_seconds,
            retry_ms=settings.retry_ms,
            registry=app_state.streams,
            owner=owner,
            max_streams=settings.max_streams_per_owner,
            guard=app_state.send_guard,
            sock=client_socket(request.environ),
            metrics=app_state.metrics,
        )
    )


@bp.get("/api/openapi.json")
def openapi() -> Response:
    prefix = url_for("chatapp.create_session").rsplit("/api/", 1)[0]
    return jsonify(openapi_document(prefix, max_message_chars=state().settings.max_message_chars))


@bp.after_request
def add_cors_headers(response: Response) -> Response:
    return state().cors.apply(response)


# -- errors -----------------------------------------------------------------------------


def _is_api_request() -> bool:
    prefix = url_for("chatapp.create_session").rsplit("/", 1)[0]
    return request.path == prefix or request.path.startswith(prefix + "/")


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    response = jsonify(error={"code": code, "message": message})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


@bp.route("/api", defaults={"rest": ""}, methods=_ALL_METHODS)
@bp.route("/api/<path:rest>", methods=_ALL_METHODS)
def api_fallback(rest: str) -> Response:
    """Unknown API paths (404) and known ones with the wrong method (405), as JSON."""
    adapter = current_app.url_map.bind_to_environ(request.environ)
    allowed = []
    for method in _ALL_METHODS:
        try:
            endpoint, _ = adapter.match(request.path, method=method)
        except HTTPException:
            continue
        if endpoint != request.endpoint:
            allowed.append(method)
    if allowed:
        return _error(405, "method_not_allowed", f"{request.method} is not allowed here.", {"Allow": ", ".join(allowed)})
    return _error(404, "not_found", "There is no such API endpoint.")


@bp.errorhandler(APIError)
def handle_api_error(exc: APIError) -> Response:
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RateLimitedError) else None
    return _error(exc.status, exc.code, exc.message, headers)


@bp.errorhandler(RateLimitExceeded)
def handle_rate_limited(exc: RateLimitExceeded) -> Response:
    return handle_api_error(rate_limited_error(state().limiter, exc))


@bp.errorhandler(HTTPException)
def handle_http_error(exc: HTTPException) -> Any:
    if not _is_api_request():
        # The page and static files are the host's site: its own handler, if any.
        handler = current_app._find_error_handler(exc, [])
        return handler(exc) if handler is not None else exc
    if isinstance(exc, RateLimitExceeded):
        # The handler per status code (below) wins over the one per class: hand it on.
        return handle_rate_limited(exc)
    code = re.sub(r"[^a-z0-9]+", "_", (exc.name or "error").lower()).strip("_")
    headers = {"Allow": ", ".join(exc.valid_methods)} if isinstance(exc, MethodNotAllowed) and exc.valid_methods else None
    if isinstance(exc, NotFound):
        code = "not_found"
    elif isinstance(exc, RequestEntityTooLarge):
        code = "payload_too_large"
    return _error(exc.code or 500, code, exc.description or exc.name, headers)


# Flask prefers an app's handler for a status code (a host's ``errorhandler(404)``) over a
# blueprint's handler for an exception class, which would turn our JSON errors into the
# host's HTML pages. Handlers per code on the blueprint come first.
for _status in default_exceptions:
    bp.register_error_handler(_status, handle_http_error)


@bp.errorhandler(Exception)
def handle_unexpected(exc: Exception) -> Response:
    if not _is_api_request() or current_app.testing or current_app.debug:
        raise exc
    log.exception("unhandled error on %s %s", request.method, request.path)
    return _error(500, "internal_error", "Something went wrong on our side.")

