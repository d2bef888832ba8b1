"""The standalone app factory."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

from .extension import ChatApp

__all__ = ["create_app"]


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """A Flask app serving only chatapp, configured from the environment and ``test_config``."""
    # The blueprint serves the page's static files; the app needs no folder of its own.
    app = Flask("chatapp", static_folder=None)
    app.config.update(SESSION_COOKIE_SAMESITE="Lax", SESSION_COOKIE_HTTPONLY=True)
    if test_config:
        app.config.from_mapping(test_config)
    ChatApp(app)
    return app
