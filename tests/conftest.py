"""Fixtures: a Flask app and test client for JSON endpoints, real servers for streams."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from chatapp import create_app
from tests.support.browser import Tabs, chromium_path
from tests.support.redis_cluster import TestCluster
from tests.support.redis_server import RedisServer
from tests.support.servers import ChatServer, ServerFactory
from tests.support.upstream import Upstream

if TYPE_CHECKING:
    from playwright.sync_api import Browser



@pytest.fixture
def app() -> Flask:
    return create_app({"TESTING": True, "CHATAPP_DEMO_DELAY_MS": 0, "CHATAPP_DEMO_REPLY_WORDS": 5})


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()



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


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestCluster]:
    """A Redis Cluster of the tests' own (3 masters, 3 replicas) for the whole run."""
    cluster = TestCluster(tmp_path_factory.mktemp("cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Headless Chromium (Debian's), shared by the whole run."""
    if chromium_path() is None:
        message = "chromium is not installed; scripts/test installs it (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    # Imported here, where it is used: only the page tests need Playwright.
    from playwright.sync_api import sync_playwright

    from tests.support.browser import launch

    with sync_playwright() as playwright:
        browser = launch(playwright)
        yield browser
        browser.close()


@pytest.fixture
def new_tab(browser: Browser) -> Iterator[Tabs]:
    """``new_tab(url, **context_options)`` opens a page in a fresh browser context."""
    tabs = Tabs(browser)
    yield tabs
    # An uncaught exception in a page is a bug, whatever the test checked.
    assert tabs.close() == []


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    """A real OpenAI-compatible streaming server on loopback, scripted per message."""
    server = Upstream()
    yield server
    server.stop()
