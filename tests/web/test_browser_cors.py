"""Cross-origin use from a real browser: headless Chromium driven by Playwright.

A page served from another origin (another port of localhost: same site, different
origin) creates a session, posts a message and reads the reply with
``new EventSource(url, {withCredentials: true})``; the owner cookie travels with every
request because the origin is listed in ``CHATAPP_CORS_ORIGINS``. A page from an origin
that is not listed cannot read the API's answers at all.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.support.servers import FAST, ChatServer, ServerFactory, free_port


class _BlankPage(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<!doctype html><title>another site's page</title>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def page_origins() -> Iterator[tuple[str, str]]:
    """Two origins serving a blank page: one to be allowed, one not."""
    servers = [ThreadingHTTPServer(("127.0.0.1", free_port()), _BlankPage) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield tuple(f"http://localhost:{server.server_address[1]}" for server in servers)
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def api(start_server: ServerFactory, page_origins: tuple[str, str]) -> ChatServer:
    return start_server({**FAST, "CHATAPP_CORS_ORIGINS": page_origins[0]})


CHAT_FROM_ANOTHER_ORIGIN = """
async (api) => {
  const created = await fetch(api + "/api/sessions", {method: "POST", credentials: "include"});
  const {session_id, stream_url} = await created.json();
  const posted = await fetch(api + `/api/sessions/${session_id}/messages`, {
    method: "POST",
    credentials: "include",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify({message: "hello from another origin"}),
  });
  const events = await new Promise((resolve, reject) => {
    const seen = [];
    const source = new EventSource(api + stream_url, {withCredentials: true});
    const done = (value) => { source.close(); resolve(value); };
    for (const name of ["start", "token", "end"]) {
      source.addEventListener(name, (event) => {
        seen.push({event: name, data: JSON.parse(event.data)});
        if (name === "end") done(seen);
      });
    }
    source.addEventListener("error", (event) => { if (!event.data) { source.close(); reject(new Error("stream failed")); } });
    setTimeout(() => done(seen), 15000);
  });
  const history = await (await fetch(api + `/api/sessions/${session_id}`, {credentials: "include"})).json();
  return {created: created.status, posted: posted.status, events, history};
}
"""


def test_event_source_with_credentials_works_from_an_allowed_origin(browser, page_origins: tuple[str, str], api: ChatServer) -> None:
    allowed, _ = page_origins
    api_origin = f"http://localhost:{api.port}"
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(allowed + "/")
        result = page.evaluate(CHAT_FROM_ANOTHER_ORIGIN, api_origin)
    finally:
        context.close()
    assert (result["created"], result["posted"]) == (201, 202)
    names = [e["event"] for e in result["events"]]
    assert names[0] == "start" and names[-1] == "end" and "token" in names
    reply = "".join(e["data"]["text"] for e in result["events"] if e["event"] == "token")
    # The same owner (the cookie) throughout: the history is readable and holds the turn.
    assert [m["content"] for m in result["history"]["messages"]] == ["hello from another origin", reply]


READ_FROM_ANOTHER_ORIGIN = """
async (api) => {
  try {
    await fetch(api + "/api/sessions", {method: "POST", credentials: "include"});
    return "read";
  } catch (error) {
    return "blocked";
  }
}
"""


def test_a_page_from_an_origin_not_listed_cannot_read_the_api(browser, page_origins: tuple[str, str], api: ChatServer) -> None:
    _, other = page_origins
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(other + "/")
        assert page.evaluate(READ_FROM_ANOTHER_ORIGIN, f"http://localhost:{api.port}") == "blocked"
    finally:
        context.close()
