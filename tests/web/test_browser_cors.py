"""Cross-origin use from a real browser: headless Chromium driven by Playwright.

A page served from another origin (another port of localhost: same site, different
origin) creates a session, posts a message and reads the reply with
``new EventSource(url, {withCredentials: true})``, then cancels and deletes; the owner
cookie travels with every request because the origin is listed in
``CHATAPP_CORS_ORIGINS``. A page from an origin that is not listed cannot read the API's
answers at all, and cannot act as its visitor either: its no-cors requests, which carry
the visitor's cookie on the same site, are refused by the Origin check.
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
  const json = {"Content-Type": "application/json"};
  const created = await fetch(api + "/api/sessions", {method: "POST", credentials: "include", headers: json, body: "{}"});
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
  const cancelled = await fetch(api + `/api/sessions/${session_id}/cancel`, {method: "POST", credentials: "include"});
  const deleted = await fetch(api + `/api/sessions/${session_id}`, {method: "DELETE", credentials: "include"});
  return {created: created.status, posted: posted.status, events, history, cancelled: cancelled.status, deleted: deleted.status};
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
    assert (result["created"], result["posted"], result["cancelled"], result["deleted"]) == (201, 202, 202, 204)
    names = [e["event"] for e in result["events"]]
    assert names[0] == "start" and names[-1] == "end" and "token" in names
    reply = "".join(e["data"]["text"] for e in result["events"] if e["event"] == "token")
    # The same owner (the cookie) throughout: the history is readable and holds the turn.
    assert [m["content"] for m in result["history"]["messages"]] == ["hello from another origin", reply]


READ_FROM_ANOTHER_ORIGIN = """
async (api) => {
  try {
    await fetch(api + "/api/sessions", {method: "POST", credentials: "include", headers: {"Content-Type": "application/json"}, body: "{}"});
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


ACT_AS_THE_VISITOR = """
async ({api, session}) => {
  // What a page can send without CORS's permission: "simple" requests, no-cors, with the
  // visitor's cookie (SameSite=Lax does not hold back a same-site request).
  const quiet = {mode: "no-cors", credentials: "include"};
  const text = {"Content-Type": "text/plain"};
  await fetch(api + "/api/sessions", {...quiet, method: "POST"});
  await fetch(api + "/api/sessions", {...quiet, method: "POST", headers: text, body: "{}"});
  await fetch(api + `/api/sessions/${session}/messages`, {...quiet, method: "POST", headers: text, body: JSON.stringify({message: "sent by another page"})});
  await fetch(api + `/api/sessions/${session}/cancel`, {...quiet, method: "POST"});
  // DELETE is not a simple request: its preflight finds no permission and it is never sent.
  try {
    await fetch(api + `/api/sessions/${session}`, {method: "DELETE", credentials: "include"});
  } catch (error) {}
  return "sent";
}
"""


def test_a_same_site_page_on_another_port_cannot_act_as_the_visitor(
    browser, page_origins: tuple[str, str], start_server: ServerFactory, new_tab
) -> None:
    allowed, other = page_origins
    chat = start_server({"CHATAPP_DEMO_DELAY_MS": "100", "CHATAPP_DEMO_REPLY_WORDS": "100", "CHATAPP_CORS_ORIGINS": allowed})
    chat_origin = f"http://localhost:{chat.port}"
    # The visitor chats on the page itself (which may create, post and cancel).
    tab = new_tab(chat_origin + "/")
    page = tab.page
    box = page.get_by_label("Message")
    box.fill("my own question")
    box.press("Enter")
    page.wait_for_function("() => document.querySelectorAll('[data-role=assistant] .message-content')[0]?.textContent.length > 0")
    session = page.evaluate("() => Object.entries(localStorage).find(([k]) => k.startsWith('chatapp:session:'))[1]")
    # Then opens another page of the same site, in the same browser.
    attacker = page.context.new_page()
    statuses: list[tuple[str, str, int]] = []
    attacker.on("response", lambda r: statuses.append((r.request.method, r.url, r.status)) if r.url.startswith(chat_origin) else None)
    attacker.goto(other + "/")
    assert attacker.evaluate(ACT_AS_THE_VISITOR, {"api": chat_origin, "session": session}) == "sent"
    attacker.wait_for_timeout(300)
    posts = [status for method, _, status in statuses if method == "POST"]
    assert posts == [403, 403, 403, 403], statuses
    assert [method for method, _, _ in statuses if method == "DELETE"] == []
    # Nothing happened to the visitor's chat: its reply goes on to its end, unposted to.
    history = page.evaluate(
        """async (id) => (await fetch(document.body.dataset.apiBase + "/" + id)).json()""", session
    )
    assert [m["content"] for m in history["messages"]][:1] == ["my own question"]
    assert history["generating"] is True
    expect_done = page.locator('[data-role="assistant"][aria-busy]')
    expect_done.wait_for(state="detached", timeout=30_000)
    history = page.evaluate("""async (id) => (await fetch(document.body.dataset.apiBase + "/" + id)).json()""", session)
    assert len(history["messages"]) == 2 and "sent by another page" not in str(history)
    assert page.locator(".message-note").count() == 0  # not "Stopped"
