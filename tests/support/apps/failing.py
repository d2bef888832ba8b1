"""WSGI apps for tests that need a server with a provider of their own."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from flask import Flask

from chatapp import ChatApp
from chatapp.errors import UpstreamTimeoutError
from chatapp.providers.base import ChatRequest, Completion, Provider


class TimingOutProvider(Provider):
    """One word, then the upstream goes silent too long."""

    name = "timing-out"
    default_model = "flaky-1"

    def stream(self, request: ChatRequest, cancelled: threading.Event) -> Iterator[str | Completion]:
        yield "Hello"
        raise UpstreamTimeoutError("The model stopped answering.")


def _failing_app() -> Flask:
    app = Flask("failing")
    app.secret_key = "tests-only-key"
    ChatApp(app, provider=TimingOutProvider())
    return app


#: ``tests.support.apps.failing:failing_app``: every reply ends with ``error`` upstream_timeout.
failing_app = _failing_app()
