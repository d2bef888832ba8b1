"""A chat on another site's page, with third-party cookies blocked, in Chromium.

The page comes from one loopback origin (``http://localhost:<port>``) and talks to chatapp
on another (``http://127.0.0.1:<port>``), mounted by a host whose users sign in with
bearer tokens. The browser sends chatapp no cookie (the test checks that it would not even
if one existed), so the JSON API goes with the host's ``Authorization`` header and the
``EventSource`` with the token of each ``stream_url``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Request, Response

from tests.support.apps.scripted import PREFIX, words
from tests.support.browser import TIMEOUT_MS
from tests.support.servers import ChatServer, ServerFactory, free_port
from tests.support.tcpproxy import TCPProxy


class _HostPage(BaseHTTPRequestHandler):
    """The other site: a page that loads chatapp's client from chatapp's origin."""

    def do_GET(self) -> None:
        api = parse_qs(urlsplit(self.path).query).get("api", [""])[0]
        scripts = "".join(f'<script src="{api}{PREFIX}/static/{name}"></script>' for name in ("chatapp.js", "tabshare.js", "ssestream.js"))
        body = f"<!doctype html><title>another site</title>{scripts}".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _HostPage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://localhost:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def bearer_host(start_server: ServerFactory, site: str, **env: str) -> ChatServer:
    return start_server(
        {"CHATAPP_CORS_ORIGINS": site, "CHATAPP_RETRY_MS": "300", **env},
        app="tests.support.apps.bearer:app",
        health_path=PREFIX + "/healthz",
    )


@pytest.fixture(scope="module")
def chatapp(start_server: ServerFactory, site: str) -> ChatServer:
    return bearer_host(start_server, site)


class Watched:
    """A tab of the other site and every request it made to chatapp, with its headers."""

    def __init__(self, context: BrowserContext, site: str, api: str) -> None:
        self.api = api
        self.sent: list[Request] = []
        self.responses: list[tuple[str, int]] = []
        self.page: Page = context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.page.on("request", self._request)
        self.page.on("response", self._response)
        self.page.goto(f"{site}/?api={api}")

    def _request(self, request: Request) -> None:
        if request.url.startswith(self.api):
            self.sent.append(request)

    @property
    def requests(self) -> list[tuple[str, dict[str, str]]]:
        """Each request's URL and the headers it went with (preflights included)."""
        return [(request.url, request.all_headers()) for request in self.sent]

    def _response(self, response: Response) -> None:
        if response.url.startswith(self.api):
            self.responses.append((response.url, response.status))

    def streams(self) -> list[str]:
        return [url for url, _ in self.requests if urlsplit(url).path.endswith("/stream")]


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context()
    yield context
    context.close()


#: Runs in the other site's page: chat as alice, recording every callback.
CHAT = """
([api, text]) => new Promise((resolve) => {
    window.calls = [];
    window.client = new ChatAppClient(api + "/assistant/api/sessions", {
        headers: {Authorization: "Bearer alice-token"},
        // Cookies are asked for: the browser, not the client, keeps them from chatapp.
        credentials: "include",
    });
    const handlers = {};
    for (const name of ["start", "token", "error", "end", "open", "reconnecting", "closed"]) {
        handlers[name] = (data, event) => {
            calls.push([name, data === undefined ? null : data, event ? event.lastEventId : null]);
            if (name === "end" || name === "closed") resolve(calls);
        };
    }
    client.send(text, handlers).catch((error) => { calls.push(["rejected", error.code]); resolve(calls); });
})
"""


def text_of(calls: list[list[Any]]) -> str:
    return "".join(call[1]["text"] for call in calls if call[0] == "token")


def test_a_page_on_another_site_chats_through_a_stream_token(chatapp: ChatServer, site: str, context: BrowserContext) -> None:
    api = chatapp.base_url
    # A cookie of chatapp's site: sent when chatapp is the page itself...
    context.add_cookies([{"name": "canary", "value": "1", "domain": "127.0.0.1", "path": "/", "sameSite": "None", "secure": True}])
    first_party = context.new_page()
    response = first_party.goto(api + PREFIX + "/healthz")
    assert response is not None and "canary=1" in response.request.all_headers().get("cookie", "")
    first_party.close()

    tab = Watched(context, site, api)
    calls = tab.page.evaluate(CHAT, [api, "hello from another site"])
    assert [c[0] for c in calls if c[0] != "token"] == ["open", "start", "end"]
    assert text_of(calls) == "You said: hello from another site"
    # ...and never from the other site: third-party cookies are blocked here.
    assert tab.requests and all("cookie" not in headers for _, headers in tab.requests)
    # The JSON API went with the host's header; the EventSource, which cannot send one,
    # with the token of the stream_url the post answered.
    posts = [headers for url, headers in tab.requests if url.endswith("/messages")]
    assert posts and all(headers.get("authorization") == "Bearer alice-token" for headers in posts)
    [stream] = tab.streams()
    assert "token" in parse_qs(urlsplit(stream).query)
    assert dict(tab.requests)[stream].get("authorization") is None

    # A tampered token is the 404 of an unknown session; without one, nobody is asking.
    refused = tab.page.evaluate(
        """async (url) => {
            // The second last character of the signature: the last one may be padding bits.
            const tampered = url.slice(0, -2) + (url.slice(-2, -1) === "A" ? "B" : "A") + url.slice(-1);
            const statuses = [];
            for (const bad of [tampered, url.split("?")[0]]) {
                const response = await fetch(bad, {credentials: "include"});
                statuses.push([response.status, (await response.json()).error.code]);
            }
            const source = new EventSource(tampered);
            const state = await new Promise((resolve) => { source.onerror = () => resolve(source.readyState); });
            return {statuses, closed: state === EventSource.CLOSED};
        }""",
        stream,
    )
    assert refused == {"statuses": [[404, "session_not_found"], [401, "unauthenticated"]], "closed": True}


def test_an_expired_token_is_renewed_by_the_client(start_server: ServerFactory, site: str, context: BrowserContext) -> None:
    short = bearer_host(start_server, site, CHATAPP_STREAM_TOKEN_SECONDS="1")
    proxy = TCPProxy(short.port)
    try:
        tab = Watched(context, site, proxy.base_url)
        tab.page.evaluate(f"(args) => {{ ({CHAT.strip()})(args); }}", [proxy.base_url, "resumable"])
        tab.page.wait_for_function("() => calls.filter(c => c[0] === 'token').length >= 5")
        # Wait past the token's life, then cut the connection: EventSource comes back
        # with the URL it has, whose token has expired.
        tab.page.wait_for_timeout(2100)
        assert proxy.drop() >= 1
        tab.page.wait_for_function("() => calls.some(c => c[0] === 'end' || c[0] === 'closed')", timeout=30_000)
        calls = tab.page.evaluate("calls")
    finally:
        proxy.close()
    assert text_of(calls) == "".join(words("r", 120))
    assert calls[-1][0] == "end"
    streams = [(url, status) for url, status in tab.responses if urlsplit(url).path.endswith("/stream")]
    # The expired token was refused like an unknown session; the client asked the
    # history for a fresh stream_url and went on after the last event it had.
    assert 404 in [status for _, status in streams]
    tokens = [parse_qs(urlsplit(url).query)["token"][0] for url, _ in streams]
    assert streams[-1][1] == 200 and tokens[-1] != tokens[0]
    assert "last_event_id" in parse_qs(urlsplit(streams[-1][0]).query)
