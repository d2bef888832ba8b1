"""Mounting chatapp in an existing Flask site: the host keeps its routes, templates, error
pages, static files and session; chatapp keeps its JSON errors under its prefix.

The first tests use a host app built here (Flask's test client is fine for those plain
requests); the rest run ``examples/existing_site`` under real gunicorn servers.
"""

from __future__ import annotations

import contextlib
import gc
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from flask import Flask, render_template, session

from chatapp import ChatApp, ConfigError
from tests.support.servers import ROOT, ChatClient, ChatServer, ServerFactory, free_port

EXAMPLE = ROOT / "examples" / "existing_site"


def host_app(tmp_path: Path, *, owner=None, secret_key: str | None = "host-secret", **config) -> Flask:
    """A host site with its own templates, static folder, error pages and session use."""
    (tmp_path / "templates" / "chatapp").mkdir(parents=True, exist_ok=True)
    (tmp_path / "static").mkdir(exist_ok=True)
    (tmp_path / "templates" / "index.html").write_text("host index {{ session.get('cart') }}")
    (tmp_path / "templates" / "404.html").write_text("<h1>host 404</h1>")
    (tmp_path / "templates" / "500.html").write_text("<h1>host 500</h1>")
    (tmp_path / "static" / "site.css").write_text("body { color: teal }")
    app = Flask("host", root_path=str(tmp_path))
    app.config.update(PROPAGATE_EXCEPTIONS=False, CHATAPP_DEMO_DELAY_MS=0, CHATAPP_DEMO_REPLY_WORDS=3, **config)
    if secret_key:
        app.secret_key = secret_key

    @app.get("/")
    def index() -> str:
        return render_template("index.html")

    @app.post("/cart/<item>")
    def add(item: str) -> str:
        session["cart"] = item
        return "added"

    @app.get("/broken")
    def broken() -> str:
        raise RuntimeError("host bug")

    @app.errorhandler(404)
    def not_found(exc: Exception) -> tuple[str, int]:
        return render_template("404.html"), 404

    @app.errorhandler(413)
    def too_large(exc: Exception) -> tuple[str, int]:
        return "<h1>host 413</h1>", 413

    @app.errorhandler(500)
    def server_error(exc: Exception) -> tuple[str, int]:
        return render_template("500.html"), 500

    ChatApp(app, url_prefix="/assistant", owner=owner)
    return app


def assert_json_error(response, status: int, code: str) -> None:
    assert response.status_code == status, response.data
    assert response.mimetype == "application/json"
    assert response.get_json()["error"]["code"] == code


def test_host_routes_error_pages_and_static_are_unchanged(tmp_path: Path) -> None:
    client = host_app(tmp_path).test_client()
    assert client.get("/").data == b"host index None"
    assert client.get("/static/site.css").data == b"body { color: teal }"
    assert client.get("/nope").data == b"<h1>host 404</h1>"
    broken = client.get("/broken")
    assert (broken.status_code, broken.data) == (500, b"<h1>host 500</h1>")
    # Pages under the prefix that chatapp does not serve are the host's too.
    assert client.get("/assistant/nothing-here").data == b"<h1>host 404</h1>"
    missing = client.get("/assistant/static/missing.js")
    assert (missing.status_code, missing.data) == (404, b"<h1>host 404</h1>")


def test_chatapp_serves_under_the_prefix_with_json_errors(tmp_path: Path) -> None:
    client = host_app(tmp_path, MAX_CONTENT_LENGTH=2000).test_client()
    page = client.get("/assistant/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert b'data-api-base="/assistant/api/sessions"' in page.data
    assert b"/assistant/static/chatapp.js" in page.data
    assert client.get("/assistant/static/chatapp.js").status_code == 200
    assert client.get("/assistant/healthz").get_json()["status"] == "ok"
    created = client.post("/assistant/api/sessions", json={})
    assert created.status_code == 201
    body = created.get_json()
    assert body["stream_url"].startswith("/assistant/api/sessions/")
    # The host's code-specific error pages (404, 413, 500) do not reach the API.
    assert_json_error(client.get("/assistant/api/nope"), 404, "not_found")
    assert_json_error(client.get("/assistant/api/sessions/" + "A" * 22), 404, "session_not_found")
    big = client.post(body["messages_url"], json={"message": "x" * 5000})
    assert_json_error(big, 413, "payload_too_large")
    # Nothing of chatapp answers outside its prefix.
    assert client.post("/api/sessions", json={}).data == b"<h1>host 404</h1>"
    assert client.get("/healthz").data == b"<h1>host 404</h1>"


def test_unexpected_api_error_is_json_not_the_host_500_page(tmp_path: Path) -> None:
    def owner() -> str:
        raise RuntimeError("the host's login broke")

    client = host_app(tmp_path, owner=owner).test_client()
    assert_json_error(client.post("/assistant/api/sessions", json={}), 500, "internal_error")
    assert client.get("/broken").data == b"<h1>host 500</h1>"


def test_host_templates_win_over_chatapp_defaults(tmp_path: Path) -> None:
    # A host may restyle the chat page by shipping its own chatapp/index.html.
    app = host_app(tmp_path)
    (tmp_path / "templates" / "chatapp" / "index.html").write_text("host's own chat page")
    assert app.test_client().get("/assistant/").data == b"host's own chat page"


def test_host_owner_leaves_the_session_and_secret_key_alone(tmp_path: Path) -> None:
    app = host_app(tmp_path, owner=lambda: "alice", secret_key=None)
    # The host has no key and needs none for chatapp: none was invented for it.
    assert app.secret_key is None
    client = app.test_client()
    created = client.post("/assistant/api/sessions", json={})
    assert created.status_code == 201
    assert "Set-Cookie" not in created.headers
    posted = client.post(created.get_json()["messages_url"], json={"message": "hi"})
    assert posted.status_code == 202 and "Set-Cookie" not in posted.headers


def test_default_owner_shares_the_host_session_without_clobbering_it(tmp_path: Path) -> None:
    client = host_app(tmp_path).test_client()
    client.post("/cart/book")
    session_id = client.post("/assistant/api/sessions", json={}).get_json()["session_id"]
    assert client.get("/").data == b"host index book"
    assert client.get(f"/assistant/api/sessions/{session_id}").status_code == 200
    with client.session_transaction() as stored:
        assert stored["cart"] == "book" and stored["chatapp_owner"].startswith("anon:")


# -- the example site under real servers --------------------------------------------------


@pytest.fixture(scope="module", params=["gevent", "gthread"])
def site(request: pytest.FixtureRequest, start_server: ServerFactory) -> ChatServer:
    return start_server(
        {"CHATAPP_DEMO_DELAY_MS": "20", "CHATAPP_DEMO_REPLY_WORDS": "8", "SITE_SECRET_KEY": "example-secret"},
        kind=request.param,
        app="wsgi:app",
        cwd=EXAMPLE,
        health_path="/assistant/healthz",
    )


@contextlib.contextmanager
def signed_in(site: ChatServer, name: str, password: str) -> Iterator[ChatClient]:
    """A chatapp API client signed in to the site through its own login form."""
    with site.client(prefix="/assistant") as client:
        response = client.post(site.base_url + "/login", data={"username": name, "password": password})
        assert response.status_code == 302, response.text
        yield client


def test_example_site_pages_are_its_own(site: ChatServer) -> None:
    home = httpx.get(site.base_url + "/")
    assert home.status_code == 200 and "Welcome to Example Site" in home.text
    assert "Example Site's own stylesheet" in httpx.get(site.base_url + "/static/site.css").text
    missing = httpx.get(site.base_url + "/no/such/page")
    assert missing.status_code == 404 and "Example Site: page not found" in missing.text
    assert httpx.get(site.base_url + "/account").status_code == 302  # the site's login_required
    wrong = httpx.post(site.base_url + "/login", data={"username": "alice", "password": "nope"})
    assert wrong.status_code == 401 and "Wrong name or password" in wrong.text


def test_example_site_serves_chatapp_under_the_prefix(site: ChatServer) -> None:
    page = httpx.get(site.base_url + "/assistant/")
    assert page.status_code == 200 and 'data-api-base="/assistant/api/sessions"' in page.text
    script = httpx.get(site.base_url + "/assistant/static/chatapp.js")
    assert script.status_code == 200 and "ChatAppClient" in script.text
    api_404 = httpx.get(site.base_url + "/assistant/api/nope")
    assert api_404.status_code == 404 and api_404.json()["error"]["code"] == "not_found"


def test_example_site_anonymous_api_call_is_401(site: ChatServer) -> None:
    with site.client(prefix="/assistant") as anonymous:
        response = anonymous.post("/api/sessions", json={})
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthenticated"


def test_example_site_users_each_see_only_their_own_chats(site: ChatServer) -> None:
    with signed_in(site, "alice", "wonderland") as alice, signed_in(site, "bob", "builder") as bob:
        alices = alice.new_session()
        bobs = bob.new_session()
        posted = alice.send_message(alices, "hello from alice")
        assert posted["stream_url"].startswith(f"/assistant/api/sessions/{alices}/stream?token=")
        with alice.open_stream(alices) as stream:
            assert stream.headers["content-type"] == "text/event-stream; charset=utf-8"
            events = stream.until_end()
        assert [events[0].event, events[-1].event] == ["start", "end"]
        assert events[-1].json()["finish_reason"] == "stop"
        assert [m["role"] for m in alice.history(alices)["messages"]] == ["user", "assistant"]
        for method, path in [("get", ""), ("get", "/stream"), ("post", "/cancel"), ("delete", "")]:
            response = getattr(bob, method)(f"/api/sessions/{alices}{path}")
            assert response.status_code == 404, (method, path)
            assert response.json()["error"]["code"] == "session_not_found"
            assert alice.request(method.upper(), f"/api/sessions/{bobs}{path}").status_code == 404
        # The request log names owners by a keyed hash only.
        assert '"owner":' in site.log() and "alice" not in site.log() and "bob" not in site.log()
        # Signing out makes the same cookie jar anonymous again.
        alice.post(site.base_url + "/logout")
        assert alice.get(f"/api/sessions/{alices}").status_code == 401
        assert bob.get(f"/api/sessions/{bobs}").status_code == 200


# Under CI (which runs scripts/test, from the repository's .venv) nothing is skipped.
@pytest.mark.skipif(
    Path(sys.prefix).resolve() != (ROOT / ".venv").resolve() and os.environ.get("CI") != "true",
    reason="the run script uses the repository's .venv",
)
def test_example_site_starts_with_its_one_command(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [str(EXAMPLE / "run"), "--bind", f"127.0.0.1:{port}"],
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        lines = iter(process.stderr.readline, "")
        assert any(line.startswith(f"chatapp: open http://127.0.0.1:{port}/") for line in lines)
        assert "Welcome to Example Site" in httpx.get(f"http://127.0.0.1:{port}/", timeout=10).text
        assert httpx.get(f"http://127.0.0.1:{port}/assistant/healthz", timeout=10).status_code == 200
    finally:
        process.terminate()
        process.wait(20)


def test_init_app_leaves_the_hosts_config_and_secret_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATAPP_RETRY_MS", "1234")
    monkeypatch.setenv("CHATAPP_SECRET_KEY", "chat key")
    app = host_app(tmp_path)
    # Read from the environment, yet nothing was copied into the host's config, and the
    # host's own key was kept.
    assert app.extensions["chatapp"].settings.retry_ms == 1234
    assert sorted(name for name in app.config if name.startswith("CHATAPP_")) == ["CHATAPP_DEMO_DELAY_MS", "CHATAPP_DEMO_REPLY_WORDS"]
    assert app.secret_key == "host-secret"


def test_the_default_owner_without_any_key_is_refused_with_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHATAPP_SECRET_KEY", raising=False)
    with pytest.raises(ConfigError, match=r"app.secret_key.*CHATAPP_SECRET_KEY.*owner="):
        host_app(tmp_path, secret_key=None)
    # Asked for: CHATAPP_SECRET_KEY signs the owner cookie of a host that has no key.
    app = host_app(tmp_path, secret_key=None, CHATAPP_SECRET_KEY="chat key")
    assert app.secret_key == "chat key"
    assert app.test_client().post("/assistant/api/sessions", json={}).status_code == 201


def test_the_broker_chatapp_built_is_closed_with_its_app(tmp_path: Path) -> None:
    app = host_app(tmp_path)
    closed: list[bool] = []
    broker = app.extensions["chatapp"].broker
    broker.close = lambda: closed.append(True)
    del app, broker
    gc.collect()
    assert closed == [True]
