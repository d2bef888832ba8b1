"""The blueprint's error handlers: every answer under ``api/`` is JSON, errors included.

``{"error": {"code", "message"}}`` with the right status. Flask gives routing errors (404,
405) to app-wide handlers only, which belong to the host site, so a catch-all route of
ours (:func:`unmatched_api_request`) answers unknown API paths and wrong methods. Outside
``api/`` (the page, static files) the host's own handlers, if any, answer as usual.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, url_for
from flask_limiter import RateLimitExceeded
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound, RequestEntityTooLarge, default_exceptions
from werkzeug.routing import RequestRedirect

from ..errors import APIError, RateLimitedError, ServiceUnavailableError
from .ratelimit import rate_limited_error
from .state import state

__all__ = ["ALL_METHODS", "is_api_request", "options_response", "register", "routing_error", "unmatched_api_request"]

log = logging.getLogger("chatapp.api")

ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def register(bp: Blueprint) -> None:
    """Install the handlers on ``bp``."""
    bp.register_error_handler(APIError, handle_api_error)
    bp.register_error_handler(RateLimitExceeded, handle_rate_limited)
    bp.register_error_handler(HTTPException, handle_http_error)
    # Flask prefers an app's handler for a status code (a host's ``errorhandler(404)``)
    # over a blueprint's handler for an exception class, which would turn our JSON
    # errors into the host's HTML pages. Handlers per code on the blueprint come first.
    for status in default_exceptions:
        bp.register_error_handler(status, handle_http_error)
    bp.register_error_handler(Exception, handle_unexpected)


def is_api_request() -> bool:
    """Whether the request is for a path under chatapp's ``api/``."""
    prefix = url_for("chatapp.create_session").rsplit("/", 1)[0]
    return request.path == prefix or request.path.startswith(prefix + "/")


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    response = jsonify(error={"code": code, "message": message})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _allowed_methods() -> list[str]:
    """The methods a route of ours (not the catch-all) takes on this path."""
    adapter = current_app.url_map.bind_to_environ(request.environ)
    allowed = []
    for method in ALL_METHODS:
        try:
            endpoint, _ = adapter.match(request.path, method=method)
        except HTTPException:
            continue
        if endpoint != "chatapp.api_fallback":
            allowed.append(method)
    return allowed


def unmatched_api_request() -> Response:
    """404 for an unknown API path, 405 (with ``Allow``) for a known one's wrong method."""
    allowed = _allowed_methods()
    if allowed:
        return _error(405, "method_not_allowed", f"{request.method} is not allowed here.", {"Allow": ", ".join(allowed)})
    return _error(404, "not_found", "There is no such API endpoint.")


def options_response() -> Response:
    """``OPTIONS`` under ``api/``: 204 with the methods the path really takes (CORS adds
    its preflight headers for listed origins), 404 for an unknown path."""
    allowed = _allowed_methods()
    if not allowed:
        return _error(404, "not_found", "There is no such API endpoint.")
    response = Response(status=204)
    # No body, so no type: werkzeug's default would claim an HTML page.
    response.headers.remove("Content-Type")
    response.headers["Allow"] = ", ".join(allowed)
    return response


def routing_error(exc: HTTPException) -> Response | None:
    """A routing error under ``api/`` (a method no route takes, a path no route can
    match), in JSON rather than the host's or werkzeug's HTML; ``None`` for a redirect."""
    if isinstance(exc, RequestRedirect):
        return None
    if isinstance(exc, MethodNotAllowed):
        allowed = [m for m in exc.valid_methods or () if m in ALL_METHODS] or ["OPTIONS"]
        return _error(405, "method_not_allowed", f"{request.method} is not allowed here.", {"Allow": ", ".join(allowed)})
    response: Response = handle_http_error(exc)
    return response


def handle_api_error(exc: APIError) -> Response:
    retry_after = exc.retry_after if isinstance(exc, (RateLimitedError, ServiceUnavailableError)) else None
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return _error(exc.status, exc.code, exc.message, headers)


def handle_rate_limited(exc: RateLimitExceeded) -> Response:
    return handle_api_error(rate_limited_error(state().limiter, exc))


def handle_http_error(exc: HTTPException) -> Any:
    if not is_api_request():
        # The page and static files are the host's site: its own handler, if any.
        handler = _host_handler(exc)
        return handler(exc) if handler is not None else exc
    if isinstance(exc, RateLimitExceeded):
        # The handler per status code wins over the one per class: hand it on.
        return handle_rate_limited(exc)
    code = re.sub(r"[^a-z0-9]+", "_", (exc.name or "error").lower()).strip("_")
    headers = {"Allow": ", ".join(exc.valid_methods)} if isinstance(exc, MethodNotAllowed) and exc.valid_methods else None
    if isinstance(exc, NotFound):
        code = "not_found"
    elif isinstance(exc, RequestEntityTooLarge):
        code = "payload_too_large"
    return _error(exc.code or 500, code, exc.description or exc.name, headers)


def _host_handler(exc: HTTPException) -> Any:
    """The host app's own handler for ``exc`` (by status code, then by class), if any."""
    handlers = current_app.error_handler_spec.get(None, {})
    for key in (exc.code, None):
        by_class = handlers.get(key, {})
        for cls in type(exc).__mro__:
            if cls in by_class:
                return by_class[cls]
    return None


def handle_unexpected(exc: Exception) -> Response:
    if not is_api_request() or current_app.testing or current_app.debug:
        raise exc
    log.exception("unhandled error on %s %s", request.method, request.path)
    return _error(500, "internal_error", "Something went wrong on our side.")
