"""One stream connection for all the tabs of a browser (tabshare.js), in Chromium.

Ten tabs of one browser follow one session: the server counts one open stream (its
``/healthz``); closing the tab that holds it moves the stream to another tab, and every
tab ends with exactly the events of the turn, each once, in order, and the same reply.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.support.apps.scripted import PREFIX, words
from tests.support.browser import TIMEOUT_MS
from tests.support.servers import ChatServer, ServerFactory, wait_for
from tests.support.sseclient import EventStream

TABS = 10


@pytest.fixture(scope="module")
def scripted(start_server: ServerFactory) -> ChatServer:
    # No response cache: each test streams "shared" afresh, not replayed in an instant.
    env = {"CHATAPP_RETRY_MS": "300", "CHATAPP_CACHE_TTL_SECONDS": "0"}
    return start_server(env, app="tests.support.apps.scripted:app", health_path=PREFIX + "/healthz")


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """One browser profile: its tabs share storage, Web Locks and BroadcastChannels."""
    context = browser.new_context()
    errors: list[str] = []
    context.on("page", lambda page: page.on("pageerror", lambda error: errors.append(str(error))))
    yield context
    context.close()
    assert errors == []


def open_tab(context: BrowserContext, url: str) -> Page:
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    return page


def open_streams(server: ChatServer) -> int:
    return httpx.get(server.base_url + PREFIX + "/healthz", timeout=5).json()["streams"]


#: Runs in a tab: follow the session's turn, recording each event's name, id and data.
FOLLOW = """
([sessionId]) => {
    window.seen = [];
    window.client = new ChatAppClient(document.body.dataset.apiBase, {sessionId});
    const handlers = {};
    for (const name of ["start", "token", "error", "end", "closed"]) {
        handlers[name] = (data, event) => seen.push([name, event ? event.lastEventId : null, data]);
    }
    client.subscribe(handlers);
}
"""


def leaders(tabs: list[Page]) -> list[Page]:
    return [tab for tab in tabs if tab.evaluate("!!(client.subscription && client.subscription.leading)")]


def server_turn(server: ChatServer, stream_url: str) -> list[list[Any]]:
    """The turn as the server logged it, read through the stream token (no cookie)."""
    with httpx.stream("GET", server.base_url + stream_url, headers={"Accept": "text/event-stream"}, timeout=10) as response:
        assert response.status_code == 200
        return [[e.event, e.id, e.json()] for e in EventStream(response).until_end()]


def test_ten_tabs_hold_one_stream_and_the_lead_moves_when_its_tab_closes(scripted: ChatServer, context: BrowserContext) -> None:
    first = open_tab(context, scripted.base_url + "/")
    session_id = first.evaluate("new ChatAppClient(document.body.dataset.apiBase).open()")
    tabs = [first] + [open_tab(context, scripted.base_url + "/") for _ in range(TABS - 1)]
    # The first tab posts and follows; the other nine join while the reply streams.
    first.evaluate(FOLLOW.replace("client.subscribe(handlers);", 'client.send("shared", handlers);'), [session_id])
    first.wait_for_function("() => seen.length > 3")
    for tab in tabs[1:]:
        tab.evaluate(FOLLOW, [session_id])
    for tab in tabs:
        tab.wait_for_function("() => seen.filter(s => s[0] === 'token').length > 20")
    # Ten tabs following, one connection to the server.
    assert open_streams(scripted) == 1
    assert leaders(tabs) == [first]

    # The leading tab goes: another takes the stream over, still one connection.
    first.close()
    rest = tabs[1:]
    assert wait_for(lambda: len(leaders(rest)) == 1)
    assert wait_for(lambda: open_streams(scripted) == 1)
    second = leaders(rest)[0]
    for tab in rest:
        tab.wait_for_function("(n) => seen.filter(s => s[0] === 'token').length > n", arg=tab.evaluate("seen.length"))
    assert open_streams(scripted) == 1

    # Once more, so a tab that took over hands over in turn.
    second.close()
    rest = [tab for tab in rest if tab is not second]
    assert wait_for(lambda: len(leaders(rest)) == 1)

    for tab in rest:
        tab.wait_for_function("() => seen.some(s => s[0] === 'end')", timeout=30_000)
    stream_url = rest[0].evaluate("(id) => client.history().then((h) => h.stream_url)", session_id)
    expected = server_turn(scripted, stream_url)
    assert expected[-1][2]["finish_reason"] == "stop"
    assert "".join(e[2]["text"] for e in expected if e[0] == "token") == "".join(words("s", 300))
    for tab in rest:
        # Every event of the turn, once each, in order: nothing lost or doubled by the moves.
        assert tab.evaluate("seen") == expected
    wait_for(lambda: open_streams(scripted) == 0)
    assert open_streams(scripted) == 0


CHAT_INPUT = "#message"


def test_ten_chat_pages_show_the_same_reply_over_one_stream(scripted: ChatServer, context: BrowserContext) -> None:
    page_url = scripted.base_url + PREFIX + "/"
    first = open_tab(context, page_url)
    first.fill(CHAT_INPUT, "shared")
    first.press(CHAT_INPUT, "Enter")
    reply = "[data-role=assistant] .message-content"
    expect(first.locator(reply)).to_contain_text("s3")
    # Nine more tabs of the same chat (the session id is in localStorage): each replays
    # the reply so far and follows it on.
    tabs = [first] + [open_tab(context, page_url) for _ in range(TABS - 1)]
    for tab in tabs:
        expect(tab.locator(reply)).to_contain_text("s40")
    assert open_streams(scripted) == 1
    first.close()
    rest = tabs[1:]
    for tab in rest:
        expect(tab.locator("#send")).to_be_visible(timeout=30_000)
    texts = {tab.locator(reply).inner_text() for tab in rest}
    assert texts == {"".join(words("s", 300))}
    assert wait_for(lambda: open_streams(scripted) == 0)


def test_without_web_locks_each_tab_keeps_its_own_stream(scripted: ChatServer, context: BrowserContext) -> None:
    # An insecure origin or an older browser has no Web Locks: the client falls back.
    context.add_init_script("delete Navigator.prototype.locks;")
    first = open_tab(context, scripted.base_url + "/")
    session_id = first.evaluate("new ChatAppClient(document.body.dataset.apiBase).open()")
    tabs = [first, open_tab(context, scripted.base_url + "/"), open_tab(context, scripted.base_url + "/")]
    first.evaluate(FOLLOW.replace("client.subscribe(handlers);", 'client.send("resumable", handlers);'), [session_id])
    first.wait_for_function("() => seen.length > 3")
    for tab in tabs[1:]:
        tab.evaluate(FOLLOW, [session_id])
    for tab in tabs:
        tab.wait_for_function("() => seen.filter(s => s[0] === 'token').length > 10")
    assert open_streams(scripted) == 3
    for tab in tabs:
        tab.wait_for_function("() => seen.some(s => s[0] === 'end')", timeout=30_000)
    assert len({str(tab.evaluate("seen")) for tab in tabs}) == 1
