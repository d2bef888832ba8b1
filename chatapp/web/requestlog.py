"""Request ids and one JSON log line per request to chatapp's routes.

A request keeps a sane incoming ``X-Request-ID`` (so ids from a proxy or a caller carry
through) or gets a new one; the response returns it in ``X-Request-ID``. When the
response is done, the ``chatapp.request`` logger gets one line of JSON::

    {"time": "...", "request_id": "...", "method": "GET", "path": "/api/sessions/.../stream",
     "status": 200, "duration_ms": 5012.4, "owner": "3f9a0c5e1b7d2a64", "stream": true}

``owner`` is a keyed hash of the owner (HMAC with the app's secret key), never the raw
id, so logs can be correlated per user without naming anyone. A stream's line is written
when the stream closes, with its whole duration.

Only the hooks of chatapp's blueprint call this module; the host's requests are its own.
Under ``chatapp serve`` / the gunicorn config the logger writes to stderr; an embedding
host decides where ``chatapp.request`` goes with its own logging setup.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
import sys
import time
from datetime import UTC, datetime
from typing import Any

from flask import Response, current_app, request

from .streaming import EventStream

__all__ = ["finish_request", "log_to_stderr", "note_owner", "owner_hash", "start_request"]

log = logging.getLogger("chatapp.request")

# Letters, digits and a little punctuation, bounded: enough for UUIDs, ULIDs and the
# ids of common proxies; anything else (spaces, quotes, control characters) is replaced
# so a caller cannot forge log structure or headers.
_SANE_ID = re.compile(r"^[A-Za-z0-9._:@+=/-]{1,128}$")
_ID_KEY = "chatapp.request_id"
_STARTED_KEY = "chatapp.request_started"
_OWNER_KEY = "chatapp.owner_hash"
# Keys hashes when the app has no secret key (a host with its own owner may have none).
_PROCESS_KEY = secrets.token_bytes(32)


def request_id() -> str:
    """The current request's id: the caller's sane ``X-Request-ID``, else a new one."""
    environ = request.environ
    value = environ.get(_ID_KEY)
    if value is None:
        incoming = request.headers.get("X-Request-ID", "").strip()
        value = incoming if _SANE_ID.match(incoming) else secrets.token_hex(16)
        environ[_ID_KEY] = value
    return value


def start_request() -> None:
    """``before_request``: fix the id and the start time."""
    request.environ.setdefault(_STARTED_KEY, time.perf_counter())
    request_id()


def owner_hash(owner: str) -> str:
    """A stable, keyed digest of ``owner`` for logs: the same owner, the same hash."""
    key = current_app.secret_key
    key_bytes = key.encode("utf-8") if isinstance(key, str) else (key or _PROCESS_KEY)
    return hmac.new(key_bytes, owner.encode("utf-8"), hashlib.sha256).hexdigest()[:16]


def note_owner(owner: str) -> None:
    """Remember who made this request (hashed) for its log line."""
    request.environ[_OWNER_KEY] = owner_hash(owner)


def finish_request(response: Response) -> Response:
    """``after_request``: add ``X-Request-ID``; log now, or when a stream closes."""
    rid = request_id()
    response.headers["X-Request-ID"] = rid
    started = request.environ.get(_STARTED_KEY, time.perf_counter())
    record: dict[str, Any] = {
        "request_id": rid,
        "method": request.method,
        "path": request.path,
        "status": response.status_code,
        "owner": request.environ.get(_OWNER_KEY),
    }
    if isinstance(response.response, EventStream):
        record["stream"] = True
        response.response.call_on_close(lambda: _emit(record, started))
    else:
        record["stream"] = False
        _emit(record, started)
    return response


def _emit(record: dict[str, Any], started: float) -> None:
    if not log.isEnabledFor(logging.INFO):
        return
    line = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        **record,
        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
    }
    log.info(json.dumps(line, separators=(",", ":")))


def log_to_stderr() -> None:
    """Send the request log to stderr, a JSON line each (for servers chatapp starts)."""
    if log.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
