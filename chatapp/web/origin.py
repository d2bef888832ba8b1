"""The Origin check: state-changing requests only from the app's own pages or listed origins.

``SameSite=Lax`` keeps the owner cookie off other *sites'* requests, but a page on the
same site (another port, another subdomain) can still
``fetch(url, {method: "POST", mode: "no-cors", credentials: "include"})`` and act as the
visitor: create sessions, post, cancel, delete. CORS cannot stop that (a no-cors request
is sent; only its answer is hidden). So every ``POST``, ``PUT``, ``PATCH`` and ``DELETE``
to chatapp's routes must come from:

- the app's own origin: the ``Origin`` header names the host the request was sent to
  (its ``Host``), over this request's scheme or https (behind a TLS proxy that is not
  trusted for ``X-Forwarded-Proto``, the app sees http while the page is on https);
- or an origin in ``CHATAPP_CORS_ORIGINS`` (``*`` there lets any origin through: it is
  meant for hosts whose owner comes from a header, which no page can send without CORS);
- or a client that is no browser page at all: no ``Origin``, and no ``Sec-Fetch-Site``
  or one saying ``same-origin`` or ``none`` (a navigation the user typed).

Anything else is 403 ``cross_origin_refused``, before anything is read or counted.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import request

from ..errors import ForbiddenError

__all__ = ["STATE_CHANGING", "check_origin", "origin_refused"]

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_refused(allowed: tuple[str, ...]) -> bool:
    """Whether this request changes state on behalf of a page that may not."""
    if request.method not in STATE_CHANGING:
        return False
    origin = request.headers.get("Origin")
    if origin is None:
        site = request.headers.get("Sec-Fetch-Site", "").strip().lower()
        return site not in ("", "same-origin", "none")
    origin = origin.strip().rstrip("/")
    if "*" in allowed or origin.lower() in (o.lower() for o in allowed):
        return False
    return not _is_own(origin)


def check_origin(allowed: tuple[str, ...]) -> None:
    """403 ``cross_origin_refused`` when :func:`origin_refused`."""
    if origin_refused(allowed):
        raise ForbiddenError(
            "This request came from a page of another origin, which may not act for you here.",
        )


def _is_own(origin: str) -> bool:
    """Whether ``origin`` is where this request was sent: its host, over its scheme or https."""
    try:
        page = urlsplit(origin)
        page_port = page.port
        sent_to = urlsplit("//" + request.host)
        sent_port = sent_to.port
    except ValueError:
        return False
    scheme = page.scheme.lower()
    if scheme not in _DEFAULT_PORTS or scheme not in (request.scheme, "https"):
        return False
    if not page.hostname or page.hostname != sent_to.hostname or page.path or page.query:
        return False
    # A Host without a port was sent to the default port of the scheme the page used.
    return (page_port or _DEFAULT_PORTS[scheme]) == (sent_port or _DEFAULT_PORTS[scheme])
