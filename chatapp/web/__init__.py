"""The Flask layer: the extension, the blueprint's views, streams, and their protections.

:class:`~chatapp.web.extension.ChatApp` mounts chatapp on a Flask app;
:func:`~chatapp.web.app.create_app` makes the standalone app.
"""

from __future__ import annotations

from .app import create_app
from .extension import ChatApp

__all__ = ["ChatApp", "create_app"]
