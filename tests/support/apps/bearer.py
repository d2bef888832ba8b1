"""A host that signs its users in with bearer tokens, never cookies: chatapp at ``/assistant``.

``gunicorn tests.support.apps.bearer:app``. Its ``owner`` callable reads
``Authorization: Bearer <token>``, as an API or single-page app with its own tokens would;
``EventSource`` cannot send that header, so the stream opens with the stream token of each
``stream_url``. Replies come from the scripted provider of the page tests.
"""

from __future__ import annotations

from flask import Flask, request

from chatapp import ChatApp
from tests.support.apps.scripted import PREFIX, ScriptedProvider

#: The host's own access tokens and whose they are.
USERS = {"alice-token": "alice", "bob-token": "bob"}


def bearer_owner() -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return USERS.get(token.strip())


def create_app() -> Flask:
    app = Flask(__name__, static_folder=None)
    # No cookie is ever set; the key signs the stream tokens.
    app.secret_key = "bearer-host-key"
    ChatApp(app, url_prefix=PREFIX, owner=bearer_owner, provider=ScriptedProvider())
    return app


app = create_app()
