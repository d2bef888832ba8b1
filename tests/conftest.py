"""Fixtures: a Flask app and test client for JSON endpoints, real servers for streams."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from chatapp import create_app

from .redis_server import RedisServer
from .servers import ChatServer

#: Fast, short demo replies: most tests only need a few tokens quickly.
FAST = {"CHATAPP_DEMO_DELAY_MS": "1", "CHATAPP_DEMO_REPLY_WORDS": "12"}


@pytest.fixture
def app() -> Flask:
    return create_app({"TESTING": True, "CHATAPP_DEMO_DELAY_MS": 0, "CHATAPP_DEMO_REPLY_WORDS": 5})


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


ServerFactory = Callable[..., ChatServer]


@pytest.fixture(scope="module")
def start_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    """Start real servers for a test module; all are stopped when it ends."""
    servers: list[ChatServer] = []
    log_dir = tmp_path_factory.mktemp("servers")

    def start(env: Mapping[str, str] | None = None, *, kind: str = "gevent", **options: Any) -> ChatServer:
        server = ChatServer(env, kind=kind, log_dir=log_dir, **options)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of the tests' own for the whole run; tests flush it freely."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()
