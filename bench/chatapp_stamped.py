"""chatapp for the latency workload: the demo provider, with each token's creation time.

The product's wire contract stays as it is; this bench-only app registers a provider
(through ``ChatApp(provider=...)``) that starts each piece of text with ``@<unix time>``
taken when the piece is made, so the load generator can measure the time from a token's
creation to its receipt across the whole path (turn runner, broker, stream, socket).

``gunicorn -c gunicorn.conf.py bench.chatapp_stamped:app``
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator

from flask import Flask

from chatapp import ChatApp
from chatapp.config import load_settings
from chatapp.providers.base import ChatRequest, Completion
from chatapp.providers.demo import DemoProvider


class StampedDemoProvider(DemoProvider):
    """The demo provider, pacing and all, with a creation stamp on each piece."""

    def stream(self, request: ChatRequest, cancelled: threading.Event) -> Iterator[str | Completion]:
        for item in super().stream(request, cancelled):
            yield f"@{time.time():.6f}{item}" if isinstance(item, str) else item


def create_app() -> Flask:
    app = Flask("chatapp", static_folder=None)
    settings = load_settings({})
    app.secret_key = settings.secret_key or secrets.token_hex(32)
    ChatApp(app, provider=StampedDemoProvider(delay_ms=settings.demo_delay_ms, reply_words=settings.demo_reply_words))
    return app


app = create_app()
