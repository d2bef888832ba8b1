"""``<chatapp-chat>``, the drop-in element (static/chatapp-chat.js), in Chromium.

On the example host site (its own login, chatapp at ``/assistant``) under gunicorn, and on
the scripted host for replies that need a script: hostile HTML, a stop, the fetch transport.
"""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.support.apps.scripted import PREFIX
from tests.support.browser import Tabs
from tests.support.servers import ROOT, ChatServer, ServerFactory

EXAMPLE = ROOT / "examples" / "existing_site"
ELEMENT = "chatapp-chat"
INPUT = f"{ELEMENT} textarea"
REPLY = f"{ELEMENT} .message.assistant"


@pytest.fixture(scope="module")
def site(start_server: ServerFactory) -> ChatServer:
    return start_server(
        {"CHATAPP_DEMO_DELAY_MS": "20", "CHATAPP_DEMO_REPLY_WORDS": "12", "SITE_SECRET_KEY": "example-secret"},
        app="wsgi:app",
        cwd=EXAMPLE,
        health_path="/assistant/healthz",
    )


def sign_in(page: Page, site: ChatServer, name: str, password: str) -> None:
    page.goto(site.base_url + "/login")
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", password)
    page.click("form button")
    page.wait_for_url(site.base_url + "/account")


def test_the_element_chats_on_the_example_site(site: ChatServer, new_tab: Tabs) -> None:
    page = new_tab(site.base_url + "/").page
    sign_in(page, site, "alice", "wonderland")
    # The page loaded only chatapp-chat.js; the element fetched the rest beside it.
    assert page.evaluate("customElements.get('chatapp-chat') !== undefined")
    page.wait_for_function("() => customElements.get('chatapp-chat') && document.querySelector('chatapp-chat').client")
    page.fill(INPUT, "hello from the account page")
    page.press(INPUT, "Enter")
    expect(page.locator(f"{REPLY}[data-finished=stop]")).to_have_count(1)
    reply = page.locator(REPLY).inner_text()
    assert page.locator(f"{ELEMENT} .message.user").inner_text() == "hello from the account page"

    # Alice owns that chat, as on the chat page: the element and the API agree.
    session_id = page.evaluate("document.querySelector('chatapp-chat').client.sessionId")
    history = page.evaluate("(id) => fetch('/assistant/api/sessions/' + id).then((r) => r.json())", session_id)
    assert [m["content"] for m in history["messages"]] == ["hello from the account page", reply]

    # Its styles stay in its shadow root, and the site's stay out of it.
    assert page.evaluate("getComputedStyle(document.querySelector('chatapp-chat').shadowRoot.querySelector('.chat')).borderRadius") == "12px"
    assert page.evaluate("document.styleSheets.length") == 1
    assert page.evaluate("getComputedStyle(document.body).fontFamily").startswith("system-ui")

    # A reload shows the chat again, from its history.
    page.reload()
    expect(page.locator(REPLY)).to_have_text(reply)
    expect(page.locator(f"{ELEMENT} .message.user")).to_have_text("hello from the account page")

    # Another user signed in elsewhere cannot read it.
    bob = httpx.Client(base_url=site.base_url, timeout=10)
    with bob:
        assert bob.post("/login", data={"username": "bob", "password": "builder"}).status_code == 302
        assert bob.get(f"/assistant/api/sessions/{session_id}").status_code == 404


@pytest.fixture(scope="module")
def scripted(start_server: ServerFactory) -> ChatServer:
    return start_server({"CHATAPP_RETRY_MS": "300"}, app="tests.support.apps.scripted:app", health_path=PREFIX + "/healthz")


#: Runs in the scripted host's page: add the element (and its script) as a host would.
ADD_ELEMENT = """
(attributes) => new Promise((resolve) => {
    const element = document.createElement("chatapp-chat");
    for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
    document.body.appendChild(element);
    const script = document.createElement("script");
    script.src = "/assistant/static/chatapp-chat.js";
    document.head.appendChild(script);
    customElements.whenDefined("chatapp-chat").then(resolve);
})
"""


def test_hostile_replies_stay_text_in_the_element(scripted: ChatServer, new_tab: Tabs) -> None:
    page = new_tab(scripted.base_url + "/").page
    page.evaluate(ADD_ELEMENT, {"src": PREFIX})
    page.fill(INPUT, "hostile")
    page.press(INPUT, "Enter")
    expect(page.locator(f"{REPLY}[data-finished=stop]")).to_have_count(1)
    assert page.evaluate("window.__pwned") is None
    shadow = "document.querySelector('chatapp-chat').shadowRoot"
    assert page.evaluate(f"{shadow}.querySelectorAll('script, img, svg, [onerror], [onmouseover]').length") == 0
    hrefs = page.evaluate(f"Array.from({shadow}.querySelectorAll('a')).map((a) => a.getAttribute('href'))")
    assert hrefs == ["https://example.com/a?b=1"]
    assert "<scr" in page.locator(REPLY).inner_text()


def test_escape_stops_the_reply_in_the_element(scripted: ChatServer, new_tab: Tabs) -> None:
    page = new_tab(scripted.base_url + "/").page
    page.evaluate(ADD_ELEMENT, {"src": PREFIX})
    page.fill(INPUT, "slow")
    page.press(INPUT, "Enter")
    expect(page.locator(f"{ELEMENT} .stop")).to_be_visible()
    expect(page.locator(REPLY)).to_contain_text("word3")
    page.press(INPUT, "Escape")
    expect(page.locator(f"{REPLY}[data-finished=cancelled]")).to_have_count(1)
    expect(page.locator(f"{REPLY} .note")).to_have_text("Stopped")
    expect(page.locator(f"{ELEMENT} .send")).to_be_visible()


def test_the_element_on_the_fetch_transport_posts_once(scripted: ChatServer, new_tab: Tabs) -> None:
    tab = new_tab(scripted.base_url + "/")
    tab.page.evaluate(ADD_ELEMENT, {"src": PREFIX, "transport": "fetch"})
    tab.page.fill(INPUT, "abc")
    tab.page.press(INPUT, "Enter")
    expect(tab.page.locator(f"{REPLY}[data-finished=stop]")).to_have_text("You said: abc")
    api = [url.rsplit("/", 1)[-1] for url in tab.requests if "/api/" in url]
    assert api == ["sessions", "messages"]
