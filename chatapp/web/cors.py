"""Cross-origin access to the API: only the origins in ``CHATAPP_CORS_ORIGINS``.

flask-cors decides the headers (origin matching, preflight); this module
chooses its options and applies them to chatapp's own responses only, from the
blueprint's ``after_request``, so a host app's routes never get CORS headers from us.

- A listed origin gets ``Access-Control-Allow-Origin: <that origin>`` and
  ``Access-Control-Allow-Credentials: true``: the browser sends the owner cookie (or the
  host's own credentials) with ``fetch(..., {credentials: "include"})`` and with
  ``new EventSource(url, {withCredentials: true})``.
- ``*`` in the list means any other origin may call the API **without** credentials:
  ``Access-Control-Allow-Origin: *`` and no ``Allow-Credentials``, so browsers send no
  cookie. It only suits a host whose ``owner`` callable reads a token from a header.
  ``*`` is never sent together with credentials.
- Any other origin gets no CORS headers at all, and the browser keeps the answer from it.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Response, request
from flask_cors.core import ACL_ORIGIN, DEFAULT_OPTIONS, serialize_options, set_cors_headers

__all__ = ["CorsPolicy"]

_METHODS = ["GET", "HEAD", "POST", "DELETE", "OPTIONS"]
# What the API reads: JSON bodies, the resume id, and whatever credential a host's owner
# callable may take from a header.
_ALLOW_HEADERS = ["Content-Type", "Last-Event-ID", "Authorization"]
# Not on the CORS safelist, yet a client needs them: where a new session lives, and how
# long to wait after a 429.
_EXPOSE_HEADERS = ["Location", "Retry-After"]
_PREFLIGHT_MAX_AGE = 600


def _options(origins: list[Any] | str, *, credentials: bool) -> Any:
    return serialize_options(
        {
            **DEFAULT_OPTIONS,
            "origins": origins,
            "methods": _METHODS,
            "allow_headers": _ALLOW_HEADERS,
            "expose_headers": _EXPOSE_HEADERS,
            "supports_credentials": credentials,
            "send_wildcard": not credentials,
            "max_age": _PREFLIGHT_MAX_AGE,
            # apply() sets Vary: Origin on every answer, allowed or not.
            "vary_header": False,
            # Without an Origin header a request is not cross-origin: say nothing.
            "always_send": False,
            "allow_private_network": False,
        }
    )


class CorsPolicy:
    """The CORS headers of one app's chatapp responses."""

    def __init__(self, origins: tuple[str, ...]) -> None:
        listed = [o for o in origins if o != "*"]
        # Exact, case-insensitive matches: flask-cors would read "[::1]" as a regex.
        patterns = [re.compile(re.escape(o) + r"\Z", re.IGNORECASE) for o in listed]
        self._credentialed = _options(patterns, credentials=True) if patterns else None
        self._anyone = _options("*", credentials=False) if "*" in origins else None
        self.enabled = bool(origins)

    def apply(self, response: Response) -> Response:
        if not self.enabled:
            return response
        # The answer depends on Origin whether or not it is allowed; caches must know.
        response.vary.add("Origin")
        if not request.headers.get("Origin"):
            return response
        for options in (self._credentialed, self._anyone):
            if options is not None and ACL_ORIGIN not in response.headers:
                set_cors_headers(response, options)
        return response
