"""The standalone app factory."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from flask import Flask, has_request_context, request
from flask.sessions import SecureCookieSessionInterface
from werkzeug.middleware.proxy_fix import ProxyFix

from ..config import load_settings
from .extension import ChatApp

__all__ = ["create_app"]


class OwnerCookieInterface(SecureCookieSessionInterface):
    """Flask's signed cookie, also marked ``Secure`` whenever the request came over HTTPS.

    ``SESSION_COOKIE_SECURE`` is one value for every request; a standalone server is
    often reached both ways (plain HTTP on localhost, HTTPS through a proxy), so the
    flag follows the request instead. Behind a proxy, the request only counts as HTTPS
    when ``CHATAPP_TRUSTED_PROXIES`` lets ``X-Forwarded-Proto`` say so.
    """

    def get_cookie_secure(self, app: Flask) -> bool:
        return super().get_cookie_secure(app) or (has_request_context() and request.is_secure)


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """A Flask app serving only chatapp, configured from the environment and ``test_config``."""
    # The blueprint serves the page's static files; the app needs no folder of its own.
    app = Flask("chatapp", static_folder=None)
    if test_config:
        app.config.from_mapping(test_config)
    if not app.secret_key:
        # chatapp's own app: it signs the owner cookie with CHATAPP_SECRET_KEY, or with a
        # random key, which is fine for one process (gunicorn refuses several without one).
        app.secret_key = load_settings(app.config).secret_key or secrets.token_hex(32)
    ChatApp(app)
    settings = app.extensions["chatapp"].settings
    # The owner cookie: never readable from scripts, not sent on cross-site subrequests
    # (so other sites cannot act as the visitor) unless CHATAPP_COOKIE_SAMESITE=none,
    # which browsers only accept on a Secure cookie.
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE=settings.cookie_samesite.capitalize())
    # Set-Cookie only when the owner is new: Flask would otherwise re-send the cookie on
    # every answer of a permanent session, streams included, to push its expiry out.
    app.config["SESSION_REFRESH_EACH_REQUEST"] = False
    if settings.cookie_samesite == "none":
        app.config["SESSION_COOKIE_SECURE"] = True
    app.session_interface = OwnerCookieInterface()
    if settings.trusted_proxies:
        # Believe X-Forwarded-For/-Proto/-Host/-Port from exactly that many proxies;
        # without them, any client could claim to have come over HTTPS.
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n, x_port=n)  # type: ignore[method-assign]
    return app
