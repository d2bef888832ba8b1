"""static/chatapp.js, the reusable client, on a host site's own page in headless Chromium.

The scripted host app serves its own page at ``/`` that includes only chatapp.js, with
chatapp mounted at ``/assistant``; the tests drive ``ChatAppClient`` as a host page would.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Page, Route

from tests.support.apps.scripted import PREFIX, THOUGHTS, inject, words
from tests.support.browser import Tabs
from tests.support.servers import ChatServer, ServerFactory
from tests.support.tcpproxy import TCPProxy

#: Runs in the page: send a message and collect every callback until `end`.
FOLLOW = """
async ([text, options]) => {
    const client = new ChatAppClient(document.body.dataset.apiBase, options || {});
    const calls = [];
    const done = new Promise((resolve) => {
        const handlers = {};
        for (const name of ["start", "reasoning", "token", "error", "end", "open", "reconnecting", "closed"]) {
            handlers[name] = (data, event) => {
                calls.push([name, data === undefined ? null : data, event ? event.lastEventId : null]);
                if (name === "end" || name === "closed") resolve();
            };
        }
        client.send(text, handlers).catch((error) => { calls.push(["rejected", error.code]); resolve(); });
    });
    await done;
    window.client = client;
    return {calls, sessionId: client.sessionId};
}
"""


@pytest.fixture(scope="module")
def scripted(start_server: ServerFactory) -> ChatServer:
    return start_server({"CHATAPP_RETRY_MS": "500"}, app="tests.support.apps.scripted:app", health_path=PREFIX + "/healthz")


@pytest.fixture
def page(scripted: ChatServer, new_tab: Tabs) -> Page:
    page = new_tab(scripted.base_url + "/").page
    assert page.evaluate("typeof ChatAppClient") == "function"
    return page


def names(calls: list[list[Any]]) -> list[str]:
    return [call[0] for call in calls if call[0] not in ("token", "reasoning")]


def text_of(calls: list[list[Any]], kind: str = "token") -> str:
    return "".join(call[1]["text"] for call in calls if call[0] == kind)


def test_send_follows_the_reply_to_its_end(page: Page) -> None:
    result = page.evaluate(FOLLOW, ["hello", None])
    calls = result["calls"]
    assert names(calls) == ["open", "start", "end"]
    assert text_of(calls) == "You said: hello"
    start, end = calls[1], calls[-1]
    assert start[1]["model"] == "scripted" and end[1]["finish_reason"] == "stop"
    assert end[1]["message_id"] == start[1]["message_id"]
    # The stream was closed on `end`: EventSource does not reconnect.
    assert page.evaluate("client.subscription") is None
    history = page.evaluate("client.history()")
    assert history["session_id"] == result["sessionId"]
    assert [m["content"] for m in history["messages"]] == ["hello", "You said: hello"]
    # Without `remember`, nothing is stored.
    assert page.evaluate("Object.keys(localStorage)") == []


def test_reasoning_reaches_its_handler_before_the_answer(page: Page) -> None:
    calls = page.evaluate(FOLLOW, ["think too long", None])["calls"]
    assert names(calls) == ["open", "start", "end"]
    assert text_of(calls, "reasoning") == "".join(THOUGHTS)
    assert [call[0] for call in calls if call[0] in ("reasoning", "token")] == ["reasoning"] * len(THOUGHTS)
    assert calls[-1][1]["finish_reason"] == "length"
    # Every reasoning event has its own id, like any other.
    ids = [call[2] for call in calls if call[2]]
    assert len(ids) == len(set(ids)) == len(THOUGHTS) + 2


def test_stop_cancels_the_reply(page: Page) -> None:
    calls = page.evaluate(
        """async () => {
            const client = new ChatAppClient(document.body.dataset.apiBase);
            const calls = [];
            await new Promise((resolve) => {
                let stopping = false;
                client.send("slow", {
                    token: (d) => { calls.push(["token", d]); if (!stopping) { stopping = true; client.stop(); } },
                    end: (d) => { calls.push(["end", d]); resolve(); },
                });
            });
            return calls;
        }"""
    )
    assert calls[-1][1]["finish_reason"] == "cancelled"
    assert 1 <= len(calls) - 1 < 400


def test_server_errors_reach_the_error_handler(page: Page) -> None:
    calls = page.evaluate(FOLLOW, ["flaky", None])["calls"]
    assert names(calls) == ["open", "start", "error", "end"]
    assert text_of(calls) == "Starting"
    [error] = [call[1] for call in calls if call[0] == "error"]
    assert error == {"code": "upstream_error", "message": "The model is overloaded; try again.", "retryable": True}
    assert calls[-1][1]["finish_reason"] == "error"


def test_subscribe_after_an_id_resumes_there(page: Page) -> None:
    calls = page.evaluate(FOLLOW, ["abc", None])["calls"]
    start_id = calls[1][2]
    resumed = page.evaluate(
        """(after) => new Promise((resolve) => {
            const seen = [];
            client.subscribe({
                token: (d, e) => seen.push(["token", d, e.lastEventId]),
                start: (d, e) => seen.push(["start", d, e.lastEventId]),
                end: (d, e) => { seen.push(["end", d, e.lastEventId]); resolve(seen); },
            }, {after});
        })""",
        start_id,
    )
    assert [c[0] for c in resumed][0] == "token"
    assert resumed == [c for c in calls if c[0] in ("token", "end")]


def test_remember_keeps_the_session_per_api_base(scripted: ChatServer, page: Page) -> None:
    result = page.evaluate(FOLLOW, ["hi", {"remember": True}])
    key = "chatapp:session:" + scripted.base_url + PREFIX + "/api/sessions"
    assert page.evaluate("Object.entries(localStorage)") == [[key, result["sessionId"]]]
    # A new client on the same base picks the session up; another base does not.
    assert page.evaluate("new ChatAppClient(document.body.dataset.apiBase, {remember: true}).sessionId") == result["sessionId"]
    assert page.evaluate("new ChatAppClient('/elsewhere/api/sessions', {remember: true}).sessionId") is None
    page.evaluate("client.reset()")
    assert page.evaluate("Object.keys(localStorage)") == []
    assert page.evaluate("client.sessionId") is None


def test_forget_deletes_the_session(page: Page) -> None:
    result = page.evaluate(FOLLOW, ["hi", None])
    page.evaluate("client.forget()")
    assert page.evaluate("client.sessionId") is None
    gone = page.evaluate(
        "async (id) => { const c = new ChatAppClient(document.body.dataset.apiBase, {sessionId: id}); return [await c.history(), c.sessionId]; }",
        result["sessionId"],
    )
    assert gone == [None, None]


def test_api_errors_reject_with_status_and_code(page: Page) -> None:
    error = page.evaluate(
        """async () => {
            const client = new ChatAppClient(document.body.dataset.apiBase);
            try { await client.send("   ", {}); } catch (e) {
                return {name: e.name, status: e.status, code: e.code, message: e.message, retryable: e.retryable, isError: e instanceof Error};
            }
        }"""
    )
    assert error == {
        "name": "ChatAppError",
        "status": 400,
        "code": "invalid_request",
        "message": '"message" must not be empty.',
        "retryable": False,
        "isError": True,
    }


def test_network_errors_are_retryable(page: Page) -> None:
    from tests.support.servers import free_port

    error = page.evaluate(
        """async (base) => {
            const client = new ChatAppClient(base);
            try { await client.open(); } catch (e) { return {status: e.status, code: e.code, retryable: e.retryable}; }
        }""",
        f"http://127.0.0.1:{free_port()}/api/sessions",
    )
    assert error == {"status": 0, "code": "network_error", "retryable": True}


# -- recovery: EventSource gave up before `end` ---------------------------------------------

#: Runs in the page: follow the session's turn on ``client``, recording every callback.
SUBSCRIBE = """
() => new Promise((resolve) => {
    const calls = [];
    const handlers = {};
    for (const name of ["start", "reasoning", "token", "error", "end", "open", "reconnecting", "closed"]) {
        handlers[name] = (data, event) => {
            if (data instanceof ChatAppClient.Error) data = {status: data.status, code: data.code};
            calls.push([name, data === undefined ? null : data, event ? event.lastEventId : null]);
            if (name === "end" || name === "closed") resolve(calls);
        };
    }
    client.subscribe(handlers);
})
"""


def refuse(route: Route) -> None:
    """Answer a request as a server that is out of service would."""
    error = {"error": {"code": "unavailable", "message": "Try again later."}}
    route.fulfill(status=503, content_type="application/json", body=json.dumps(error))


def test_a_refused_reconnect_resumes_after_the_last_event(scripted: ChatServer, new_tab: Tabs) -> None:
    proxy = TCPProxy(scripted.port)
    try:
        page = new_tab(proxy.base_url + "/").page
        streams: list[str] = []

        def stream(route: Route) -> None:
            streams.append(route.request.url)
            # EventSource's own reconnect is refused, so EventSource gives up for good.
            if len(streams) == 2:
                refuse(route)
            else:
                route.continue_()

        page.route(re.compile(r"/stream(\?|$)"), stream)
        page.evaluate(
            """() => {
                window.calls = [];
                window.client = new ChatAppClient(document.body.dataset.apiBase);
                const handlers = {};
                for (const name of ["start", "token", "error", "end", "open", "reconnecting", "closed"]) {
                    handlers[name] = (data, event) => calls.push([name, data === undefined ? null : data, event ? event.lastEventId : null]);
                }
                client.send("slow", handlers);
            }"""
        )
        page.wait_for_function("() => calls.filter(c => c[0] === 'token').length >= 5")
        assert proxy.drop() >= 1
        page.wait_for_function("() => calls.filter(c => c[0] === 'open').length === 2", timeout=15_000)
        before = page.evaluate("calls.filter(c => c[0] === 'token').length")
        page.wait_for_function(f"() => calls.filter(c => c[0] === 'token').length >= {before + 5}")
        page.evaluate("client.stop()")
        page.wait_for_function("() => calls.some(c => c[0] === 'end')")
        calls = page.evaluate("calls")
    finally:
        proxy.close()

    assert names(calls)[:2] == ["open", "start"]
    assert "reconnecting" in names(calls) and "closed" not in names(calls)
    assert names(calls)[-2:] == ["open", "end"] and calls[-1][1]["finish_reason"] == "cancelled"
    # Every word once, in order, and the same text as the server kept.
    text = text_of(calls)
    assert text == "".join(words("word", len(text.split())))
    assert page.evaluate("client.history()")["messages"][-1]["content"] == text
    # The client followed the turn again from the last event it had seen.
    assert len(streams) == 3
    dropped = [call[0] for call in calls].index("reconnecting")
    last_seen = [call[2] for call in calls[:dropped] if call[2]][-1]
    resumed = urlsplit(streams[2])
    assert resumed.path.endswith("/stream")
    # The stream_url of the post (its token) and the id to resume after.
    assert set(parse_qs(resumed.query)) == {"token", "last_event_id"}
    assert parse_qs(resumed.query)["last_event_id"] == [last_seen]


def test_a_refused_stream_of_a_finished_turn_hands_over_the_history(page: Page) -> None:
    page.evaluate(FOLLOW, ["hello", None])
    page.route(re.compile(r"/stream(\?|$)"), refuse)
    calls = page.evaluate(SUBSCRIBE)
    assert names(calls) == ["closed"]
    history = calls[0][1]
    assert history["generating"] is False
    assert [m["content"] for m in history["messages"]] == ["hello", "You said: hello"]
    assert page.evaluate("client.subscription") is None


def test_a_failed_check_is_tried_again(page: Page) -> None:
    session_id = page.evaluate(FOLLOW, ["hello", None])["sessionId"]
    page.route(re.compile(r"/stream(\?|$)"), refuse)
    checks: list[str] = []

    def history(route: Route) -> None:
        checks.append(route.request.url)
        if len(checks) == 1:
            route.abort()
        else:
            route.continue_()

    page.route(lambda url: url.endswith("/api/sessions/" + session_id), history)
    calls = page.evaluate(SUBSCRIBE)
    assert names(calls) == ["reconnecting", "closed"]
    assert calls[0][1]["code"] == "network_error"
    assert [m["content"] for m in calls[1][1]["messages"]] == ["hello", "You said: hello"]
    assert len(checks) == 2


def test_the_stream_of_a_gone_session_closes_without_history(page: Page) -> None:
    result = page.evaluate(
        """() => new Promise((resolve) => {
            const client = new ChatAppClient(document.body.dataset.apiBase, {sessionId: "AAAAAAAAAAAAAAAAAAAAAA"});
            client.subscribe({closed: (history) => resolve([history, client.sessionId])});
        })"""
    )
    assert result == [None, None]


@pytest.mark.parametrize("refused", [False, True])
def test_reasoning_across_a_reconnect_loses_and_doubles_nothing(scripted: ChatServer, new_tab: Tabs, refused: bool) -> None:
    """A connection cut mid-thinking: EventSource reconnects with Last-Event-ID, or, its
    reconnect refused, the client follows the turn again after the last event it saw."""
    proxy = TCPProxy(scripted.port)
    message = "think refused" if refused else "think dropped"
    try:
        page = new_tab(proxy.base_url + "/").page
        streams: list[str] = []

        def stream(route: Route) -> None:
            streams.append(route.request.url)
            if refused and len(streams) == 2:
                refuse(route)
            else:
                route.continue_()

        page.route(re.compile(r"/stream(\?|$)"), stream)
        page.evaluate(
            """(text) => {
                window.calls = [];
                window.client = new ChatAppClient(document.body.dataset.apiBase);
                const handlers = {};
                for (const name of ["start", "reasoning", "token", "error", "end", "open", "reconnecting", "closed"]) {
                    handlers[name] = (data, event) => calls.push([name, data === undefined ? null : data, event ? event.lastEventId : null]);
                }
                client.send(text, handlers);
            }""",
            message,
        )
        page.wait_for_function("() => calls.filter(c => c[0] === 'reasoning').length >= 5")
        assert proxy.drop() >= 1
        page.wait_for_function("() => calls.some(c => c[0] === 'end')", timeout=20_000)
        calls = page.evaluate("calls")
    finally:
        proxy.close()

    assert "reconnecting" in names(calls) and "closed" not in names(calls)
    assert names(calls)[-1] == "end" and calls[-1][1]["finish_reason"] == "stop"
    # Every thought once, in order, all before the answer; the same as history keeps.
    assert text_of(calls, "reasoning") == "".join(words("t", 80))
    assert text_of(calls) == "Done thinking."
    kinds = [call[0] for call in calls if call[0] in ("reasoning", "token")]
    assert kinds == ["reasoning"] * 80 + ["token"] * 2
    ids = [call[2] for call in calls if call[2]]
    assert len(ids) == len(set(ids))
    last = page.evaluate("client.history()")["messages"][-1]
    assert last["reasoning"] == "".join(words("t", 80)) and last["content"] == "Done thinking."
    if refused:
        # The client followed the turn again from the last event it had seen.
        assert len(streams) == 3 and "last_event_id" in parse_qs(urlsplit(streams[2]).query)
    else:
        assert len(streams) == 2


@pytest.mark.parametrize("replayed", [False, True])
def test_reset_and_resumed_reach_their_handlers_once_across_a_reconnect(scripted: ChatServer, new_tab: Tabs, replayed: bool) -> None:
    """A turn started over (``reset``), then continued by another worker (``resumed``),
    with the connection cut after both. EventSource reconnects with Last-Event-ID; or,
    its reconnect refused, the client follows the turn again, asking for it from its start
    (the id taken off its request): the server replays it whole, and the client must not
    deliver what it had (a second ``reset`` would wipe the text after it)."""
    proxy = TCPProxy(scripted.port)
    try:
        page = new_tab(proxy.base_url + "/").page
        streams: list[str] = []

        def stream(route: Route) -> None:
            streams.append(route.request.url)
            if replayed and len(streams) == 2:
                refuse(route)
            elif replayed and len(streams) == 3:
                route.continue_(url=route.request.url.partition("?")[0])
            else:
                route.continue_()

        page.route(re.compile(r"/stream(\?|$)"), stream)
        page.evaluate(
            """(text) => {
                window.calls = [];
                window.client = new ChatAppClient(document.body.dataset.apiBase);
                const handlers = {};
                for (const name of ["start", "reasoning", "token", "reset", "resumed", "error", "end", "open", "reconnecting", "closed"]) {
                    handlers[name] = (data, event) => calls.push([name, data === undefined ? null : data, event ? event.lastEventId : null]);
                }
                client.send(text, handlers);
            }""",
            "taken over twice #" + ("replayed" if replayed else "reconnected"),
        )
        page.wait_for_function("() => calls.some(c => c[0] === 'start')")
        session_id = page.evaluate("client.sessionId")
        # The first producer's partial reply; then the next one starts it over.
        inject(scripted.base_url, session_id, {"event": "reasoning", "text": "Old thought."}, {"event": "token", "text": "Stale answer."})
        page.wait_for_function("() => calls.some(c => c[0] === 'token')")
        inject(scripted.base_url, session_id, {"event": "reset", "reason": "restarted"}, release=True)
        # It dies after 30 words too; a third one continues after them.
        page.wait_for_function("() => calls.filter(c => c[0] === 'token').length === 31")
        after = len("".join(words("f", 30)))
        inject(scripted.base_url, session_id, {"event": "resumed", "after_chars": after}, release=True)
        page.wait_for_function("() => calls.filter(c => c[0] === 'token').length >= 36")
        assert proxy.drop() >= 1
        page.wait_for_function("() => calls.some(c => c[0] === 'end')", timeout=20_000)
        calls = page.evaluate("calls")
        requests = re.findall(r"GET ([^ ]*/stream[^ ]*) HTTP/1\.1\r\n(.*?)\r\n\r\n", proxy.requests(), re.S)
    finally:
        proxy.close()

    assert "reconnecting" in names(calls) and "closed" not in names(calls)
    # What reached the server: the turn after the last event seen, or (the refused request
    # answered in the browser) the whole turn again, though the client asked after its last.
    resumed_from = [bool(re.search(r"(?im)^last-event-id: ", head)) or "last_event_id=" in path for path, head in requests]
    assert resumed_from == [False, not replayed]
    assert len(streams) == (3 if replayed else 2)
    if replayed:
        assert "last_event_id" in parse_qs(urlsplit(streams[2]).query)
    events = [call for call in calls if call[0] not in ("open", "reconnecting")]
    message_id = events[0][1]["message_id"]
    # Each event once, in the order the server logged them.
    assert [call[0] for call in events] == ["start", "reasoning", "token", "reset", *["token"] * 30, "resumed", *["token"] * 30, "end"]
    assert events[3][1] == {"message_id": message_id, "reason": "restarted"}
    assert events[34][1] == {"message_id": message_id, "after_chars": after}
    ids = [call[2] for call in events]
    assert all(ids) and len(set(ids)) == len(ids)
    # What follows the reset is the reply, as the server keeps it.
    text = text_of(events[4:])
    assert text == "".join(words("f", 30)) + "".join(words("g", 30))
    last = page.evaluate("client.history()")["messages"][-1]
    assert last["content"] == text and "reasoning" not in last
