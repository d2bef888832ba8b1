"""Who is asking: the owner of a request, from the host's callable or an anonymous cookie."""

from __future__ import annotations

import secrets
from collections.abc import Callable

from flask import current_app, request, session

__all__ = ["OwnerCallable", "anonymous_owner", "current_owner"]

#: Returns the current user's id, or ``None`` when nobody is signed in.
OwnerCallable = Callable[[], "str | None"]

_OWNER_KEY = "chatapp_owner"
_OWNER_ENVIRON_KEY = "chatapp.owner"


def anonymous_owner() -> str:
    """The default owner: a random id kept in Flask's signed session cookie."""
    owner = session.get(_OWNER_KEY)
    if not isinstance(owner, str) or not owner:
        owner = "anon:" + secrets.token_urlsafe(16)
        session[_OWNER_KEY] = owner
        session.permanent = True
    return owner


def current_owner() -> str | None:
    """The owner of this request, or ``None``; asked of the owner callable once per request."""
    # Kept in the WSGI environ rather than ``g``: an app context (and its ``g``) can
    # outlive one request, as in tests that push one around several.
    environ = request.environ
    if _OWNER_ENVIRON_KEY not in environ:
        owner = current_app.extensions["chatapp"].owner()
        environ[_OWNER_ENVIRON_KEY] = str(owner) if owner is not None and owner != "" else None
    found: str | None = environ[_OWNER_ENVIRON_KEY]
    return found
