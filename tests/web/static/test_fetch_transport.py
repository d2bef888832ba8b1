"""The fetch transport of ``ChatAppClient`` and its SSE parser (ssestream.js), in Chromium.

The parser is checked against the reference parser of the Python client on the same
bytes, cut into network chunks every way; the transport streams a reply in one request
through a proxy that trickles the answer a few bytes at a time, and resumes a dropped one
with the GET stream.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from playwright.sync_api import Page

from tests.support.apps.scripted import MULTIBYTE, PREFIX, words
from tests.support.browser import Tabs
from tests.support.servers import ChatServer, ServerFactory
from tests.support.sseclient import SSEParser
from tests.support.tcpproxy import TCPProxy


@pytest.fixture(scope="module")
def scripted(start_server: ServerFactory) -> ChatServer:
    return start_server({"CHATAPP_RETRY_MS": "300"}, app="tests.support.apps.scripted:app", health_path=PREFIX + "/healthz")


@pytest.fixture
def page(scripted: ChatServer, new_tab: Tabs) -> Page:
    return new_tab(scripted.base_url + "/").page


# -- the parser ------------------------------------------------------------------------

#: Streams as a server (not only ours) may write them.
STREAMS = [
    "retry: 3000\nevent: start\nid: 1-0\ndata: {}\n\nevent: token\nid: 1-1\ndata: {\"text\":\"é 😀 日本\"}\n\n",
    "event: token\r\nid: 1-1\r\ndata: two\r\ndata: lines\r\n\r\n: a comment\r\n\r\ndata: crlf\r\n\r\n",
    # (The closing comment resolves the last CR for the reference parser, which waits to
    # see whether a LF follows; this one ends the line at once.)
    "event: token\rid: 7\rdata: cr only\r\rdata: again\r\r:\n",
    "\ufeffdata: after a byte order mark\n\n",
    "data:no space\ndata:  two spaces\ndata\n\n",
    "id: 5\ndata: first\n\ndata: keeps the id\n\nid: a\x00b\ndata: a NUL id is ignored\n\nid:\ndata: an empty id resets\n\n",
    "retry: 12a\nretry: 250\nevent: only a type\n\nevent: e\nunknown: field\ndata: x\n\n",
    ": ping\n\n: ping\n\nevent: end\nid: 9-9\ndata: {\"finish_reason\":\"stop\"}\n\n",
    "data: unfinished at the end is dropped\n",
]

PARSE = """
(cases) => cases.map((chunks) => {
    const events = [];
    const parser = new ChatAppSSE.Parser((e) => events.push([e.event, e.data, e.id]));
    for (const chunk of chunks) parser.push(new Uint8Array(chunk));
    parser.end();
    return {events, retry: parser.retry};
})
"""


def reference(raw: bytes) -> dict[str, Any]:
    parser = SSEParser()
    items = parser.feed(raw)
    return {"events": [[i.event, i.data, i.id] for i in items if i.kind == "event"], "retry": parser.retry}


def cuts(raw: bytes, rng: random.Random) -> list[list[list[int]]]:
    """``raw`` whole, a byte at a time, cut at every single place, and cut at random."""
    ways = [[raw], [raw[i : i + 1] for i in range(len(raw))]]
    ways += [[raw[:i], raw[i:]] for i in range(1, len(raw))]
    for _ in range(20):
        pieces, start = [], 0
        while start < len(raw):
            size = rng.randint(1, 7)
            pieces.append(raw[start : start + size])
            start += size
        ways.append(pieces)
    return [[list(piece) for piece in way] for way in ways]


@pytest.mark.parametrize("text", STREAMS, ids=range(len(STREAMS)))
def test_the_parser_reads_any_chunking_as_the_reference_parser(page: Page, text: str) -> None:
    raw = text.encode("utf-8")
    expected = reference(raw)
    assert expected["events"] or "unfinished" in text
    results = page.evaluate(PARSE, cuts(raw, random.Random(text)))
    for result in results:
        assert result == expected


def test_the_parser_turns_broken_utf8_into_replacement_characters(page: Page) -> None:
    raw = b"data: ok \xff then \xe6\x97 cut\n\n"
    [result] = page.evaluate(PARSE, [[list(raw[:12]), list(raw[12:])]])
    assert result["events"] == reference(raw)["events"] == [["message", "ok \ufffd then \ufffd cut", ""]]


# -- the transport ---------------------------------------------------------------------

#: Runs in the page: follow `send` on a fetch-transport client, recording every callback.
SEND = """
([text, options]) => new Promise((resolve) => {
    window.calls = [];
    window.client = new ChatAppClient(document.body.dataset.apiBase, Object.assign({transport: "fetch"}, options || {}));
    const handlers = {};
    for (const name of ["start", "token", "error", "end", "open", "reconnecting", "closed"]) {
        handlers[name] = (data, event) => {
            calls.push([name, data === undefined ? null : data, event ? event.lastEventId : null]);
            if (name === "end" || name === "closed") resolve(calls);
        };
    }
    client.send(text, handlers).then(
        (answer) => calls.push(["resolved", answer.message_id, null]),
        (error) => { calls.push(["rejected", {status: error.status, code: error.code}, null]); resolve(calls); },
    );
})
"""

#: Records every chunk fetch() bodies are read in.
RECORD_CHUNKS = """
() => {
    window.chunks = [];
    const read = ReadableStreamDefaultReader.prototype.read;
    ReadableStreamDefaultReader.prototype.read = function () {
        return read.call(this).then((step) => {
            if (!step.done && step.value) chunks.push(Array.from(step.value));
            return step;
        });
    };
}
"""


def names(calls: list[list[Any]]) -> list[str]:
    return [call[0] for call in calls if call[0] != "token"]


def text_of(calls: list[list[Any]]) -> str:
    return "".join(call[1]["text"] for call in calls if call[0] == "token")


def splits_a_character(chunk: list[int]) -> bool:
    try:
        bytes(chunk).decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def test_one_request_streams_a_reply_split_inside_its_characters(scripted: ChatServer, new_tab: Tabs) -> None:
    proxy = TCPProxy(scripted.port, trickle=3)
    try:
        tab = new_tab(proxy.base_url + "/")
        tab.page.evaluate(RECORD_CHUNKS)
        calls = tab.page.evaluate(SEND, ["multibyte", None])
        chunks = tab.page.evaluate("chunks")
    finally:
        proxy.close()
    # send() resolves once the reply has started.
    assert names(calls) == ["open", "start", "resolved", "end"]
    # Exactly the text the server sent, every character whole.
    assert text_of(calls) == "".join(MULTIBYTE)
    assert calls[-1][1]["finish_reason"] == "stop"
    # The network did cut characters in two: the reassembly was needed.
    assert len(chunks) > 100
    assert sum(splits_a_character(chunk) for chunk in chunks) > 10
    # One request: the post was the stream; no GET of the stream at all.
    api = [url for url in tab.requests if "/api/" in url]
    assert [url.rsplit("/", 1)[-1] for url in api] == ["sessions", "messages"]


def test_a_dropped_one_step_stream_resumes_on_the_get_stream(scripted: ChatServer, new_tab: Tabs) -> None:
    proxy = TCPProxy(scripted.port)
    try:
        page = new_tab(proxy.base_url + "/").page
        page.evaluate(f"(args) => {{ ({SEND.strip()})(args); }}", ["resumable", None])
        page.wait_for_function("() => window.calls && calls.filter(c => c[0] === 'token').length >= 5")
        assert proxy.drop() >= 1
        page.wait_for_function("() => calls.some(c => c[0] === 'end' || c[0] === 'closed')", timeout=20_000)
        calls = page.evaluate("calls")
        sent = proxy.requests()
    finally:
        proxy.close()
    assert names(calls)[:3] == ["open", "start", "resolved"]
    assert "reconnecting" in names(calls) and "closed" not in names(calls)
    assert names(calls)[-2:] == ["open", "end"]
    # Every word once, in order: nothing lost across the drop, nothing twice.
    assert text_of(calls) == "".join(words("r", 120))
    ids = [call[2] for call in calls if call[2]]
    assert len(ids) == len(set(ids))
    # The resume was a GET of the stream after the last event seen, with the header.
    dropped = [call[0] for call in calls].index("reconnecting")
    last_seen = [call[2] for call in calls[:dropped] if call[2]][-1]
    assert "POST /assistant/api/sessions/" in sent and "GET /assistant/api/sessions/" in sent
    assert "accept: text/event-stream" in sent.lower()
    assert f"last-event-id: {last_seen}" in sent.lower()


def test_refused_posts_reject_like_json_ones(page: Page) -> None:
    calls = page.evaluate(SEND, ["   ", None])
    assert calls == [["rejected", {"status": 400, "code": "invalid_request"}, None]]
    gone = page.evaluate(SEND, ["hello", {"sessionId": "AAAAAAAAAAAAAAAAAAAAAA"}])
    assert gone == [["rejected", {"status": 404, "code": "session_not_found"}, None]]


def test_subscribe_on_the_fetch_transport_resumes_after_an_id(page: Page) -> None:
    calls = page.evaluate(SEND, ["abc", None])
    start_id = [call[2] for call in calls if call[0] == "start"][0]
    resumed = page.evaluate(
        """(after) => new Promise((resolve) => {
            const seen = [];
            client.subscribe({
                token: (d, e) => seen.push(["token", d, e.lastEventId]),
                end: (d, e) => { seen.push(["end", d, e.lastEventId]); resolve(seen); },
            }, {after});
        })""",
        start_id,
    )
    assert resumed == [call for call in calls if call[0] in ("token", "end")]
    assert text_of(resumed) == "You said: abc"


def test_a_transport_that_cannot_work_is_refused_at_once(page: Page) -> None:
    errors = page.evaluate(
        """() => {
            const errors = [];
            for (const options of [{transport: "websocket"}, {transport: "fetch"}]) {
                const saved = window.ChatAppSSE;
                if (options.transport === "fetch") delete window.ChatAppSSE;
                try { new ChatAppClient("/api/sessions", options); } catch (e) { errors.push(e.message); }
                window.ChatAppSSE = saved;
            }
            return errors;
        }"""
    )
    assert errors == [
        'ChatAppClient: transport must be "eventsource" or "fetch", not "websocket"',
        'ChatAppClient: transport "fetch" needs ssestream.js; include it beside chatapp.js',
    ]
