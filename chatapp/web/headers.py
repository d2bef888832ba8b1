"""Security headers: on every chatapp answer, and a strict Content-Security-Policy on the page.

The page's scripts and styles are files of this package, never inline, so its policy
allows scripts, styles, images and connections from its own origin only. Nothing else
may load, no inline script may run even if one were injected, and no other origin may
show the page in a frame unless ``CHATAPP_FRAME_ANCESTORS`` names it (for hosts that
embed the page). Every answer also says ``nosniff`` (a JSON error is never read as a
script or a page) and sends no referrer to other origins.
"""

from __future__ import annotations

from flask import Response

__all__ = ["page_policy", "secure"]


def page_policy(frame_ancestors: str) -> str:
    """The page's Content-Security-Policy."""
    return "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "connect-src 'self'",
            "font-src 'self'",
            "manifest-src 'self'",
            "base-uri 'none'",
            "form-action 'self'",
            f"frame-ancestors {frame_ancestors}",
        )
    )


def secure(response: Response, *, policy: str | None = None) -> Response:
    """Add the headers every answer gets, and ``policy`` as its CSP when given."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if policy is not None:
        response.headers["Content-Security-Policy"] = policy
    return response
