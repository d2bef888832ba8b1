"""Real models, end to end: a gunicorn chatapp (gevent worker, and gthread once) on the
openai provider, the real SDK inside it, a real OpenAI-compatible server on loopback,
and a real SSE client reading what a browser would."""

from __future__ import annotations

import httpx
import pytest

from tests.support.servers import ChatClient, ChatServer, ServerFactory, wait_for
from tests.support.sseclient import Received
from tests.support.upstream import FAULTS, PIECES, SILENCE, Fault, Reply, Upstream, refused_url

SECRET = "sk-chatapp-test-9f8e7d6c5b4a39281706"
MODEL = "test-model"
SYSTEM = "Answer exactly."
#: CHATAPP_UPSTREAM_TIMEOUT_SECONDS of these servers.
TIMEOUT = 1.0
#: The client's read timeout: only a guard against a hang, never a measurement.
GUARD = TIMEOUT + 15.0


def openai_env(base_url: str, **extra: str) -> dict[str, str]:
    return {
        "CHATAPP_PROVIDER": "openai",
        "OPENAI_BASE_URL": base_url,
        "OPENAI_API_KEY": SECRET,
        "CHATAPP_MODEL": MODEL,
        "CHATAPP_SYSTEM_PROMPT": SYSTEM,
        "CHATAPP_UPSTREAM_TIMEOUT_SECONDS": str(TIMEOUT),
        **extra,
    }


@pytest.fixture(scope="module")
def server(start_server: ServerFactory, upstream: Upstream) -> ChatServer:
    return start_server(openai_env(upstream.url))


@pytest.fixture(scope="module")
def patient_server(start_server: ServerFactory, upstream: Upstream) -> ChatServer:
    """An upstream timeout longer than any test: only a cancel can end a silent reply.

    Heartbeats rarer than the client's read guard, so a cancel that waited for the
    upstream's silence to end would trip the guard instead of passing late.
    """
    return start_server(openai_env(upstream.url, CHATAPP_UPSTREAM_TIMEOUT_SECONDS=str(SILENCE), CHATAPP_HEARTBEAT_SECONDS=str(SILENCE)))


class Recorder:
    """A chat client that keeps every byte it receives, headers included."""

    def __init__(self, client: ChatClient) -> None:
        self.client = client
        self.received = bytearray()

    def keep(self, response: httpx.Response) -> httpx.Response:
        for name, value in response.headers.raw:
            self.received += name + b": " + value + b"\n"
        self.received += response.content
        return response

    def new_session(self) -> str:
        response = self.keep(self.client.post("/api/sessions", json={}))
        assert response.status_code == 201, response.text
        return response.json()["session_id"]

    def history(self, session_id: str) -> list[dict]:
        response = self.keep(self.client.get(f"/api/sessions/{session_id}"))
        assert response.status_code == 200 and response.json()["generating"] is False
        return response.json()["messages"]

    def turn(self, session_id: str, message: str) -> list[Received]:
        """Post ``message`` and read its turn until the server closes the stream."""
        response = self.keep(self.client.post(f"/api/sessions/{session_id}/messages", json={"message": message}))
        assert response.status_code == 202, response.text
        with self.client.open_stream(session_id, read_timeout=GUARD) as stream:
            for name, value in stream.headers.raw:
                self.received += name + b": " + value + b"\n"
            items = stream.read_rest()
        self.received += stream.raw
        return [item for item in items if item.kind == "event"]

    def assert_nothing_leaked(self, upstream: Upstream | None = None) -> None:
        raw = bytes(self.received)
        assert SECRET.encode() not in raw
        assert b"Bearer" not in raw and b"Traceback" not in raw and b"Error code" not in raw
        if upstream is not None:
            assert f":{upstream.port}".encode() not in raw


def tokens(events: list[Received]) -> list[str]:
    return [e.json()["text"] for e in events if e.event == "token"]


#: Text that must come through unchanged: scripts, emoji (with joiners and flags),
#: every kind of line break, markup, JSON and SSE look-alikes, NUL and U+2028.
TRICKY = [
    "Grüße, ",
    "日本語と",
    "emoji 👍🏽 👩‍👩‍👧 🇺🇦",
    "\n\nline\r\nbreaks\rand\ttabs",
    "<b>bold</b> & <script>alert('x')</script> &amp;",
    "```python\nprint(\"hi\")\n```\n",
    '{"json": [1, 2]}',
    "\ndata: [DONE]\n\nevent: end\nid: 1\n",
    "nul\u0000 and \u2028 separator",
    "  ",
    "end.",
]


def test_reply_streams_byte_for_byte(server: ChatServer, upstream: Upstream) -> None:
    message = "Say tricky things ✓"
    # Written three bytes at a time, so UTF-8 sequences arrive split across reads.
    upstream.script(message, Reply(TRICKY, fragment=3))
    with server.client() as client:
        chat = Recorder(client)
        session_id = chat.new_session()
        events = chat.turn(session_id, message)
        assert [e.event for e in events] == ["start", *["token"] * len(TRICKY), "end"]
        assert events[0].json() == {"message_id": events[-1].json()["message_id"], "model": MODEL, "cached": False}
        assert tokens(events) == TRICKY
        end = events[-1].json()
        assert end["finish_reason"] == "stop"
        [seen] = upstream.seen(message)
        prompt = len(SYSTEM.split()) + len(message.split())
        assert end["usage"] == {"prompt_tokens": prompt, "completion_tokens": len(TRICKY), "total_tokens": prompt + len(TRICKY)}
        assert chat.history(session_id)[-1]["content"] == "".join(TRICKY)
        chat.assert_nothing_leaked(upstream)
    # What went upstream: the configured model, key, system prompt and the message.
    assert seen.headers["authorization"] == f"Bearer {SECRET}"
    assert seen.body["model"] == MODEL and seen.body["stream"] is True
    assert seen.body["messages"] == [{"role": "system", "content": SYSTEM}, {"role": "user", "content": message}]


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.name)
def test_fault_ends_with_error_then_end_and_the_session_goes_on(server: ChatServer, upstream: Upstream, fault: Fault) -> None:
    message = f"trigger {fault.name}"
    upstream.script(message, fault.reply)
    with server.client() as client:
        chat = Recorder(client)
        session_id = chat.new_session()
        events = chat.turn(session_id, message)
        assert [e.event for e in events][-2:] == ["error", "end"]
        error = events[-2].json()
        assert (error["code"], error["retryable"]) == (fault.code, fault.retryable)
        assert isinstance(error["message"], str) and error["message"]
        assert events[-1].json()["finish_reason"] == "error" and events[-1].json()["usage"] is None
        assert "".join(tokens(events)) == fault.partial

        # The partial reply stays in history; nothing at all when no text came.
        history = chat.history(session_id)
        if fault.partial:
            assert history[-1] == {"id": events[-1].json()["message_id"], "role": "assistant", "content": fault.partial}
        else:
            assert [m["role"] for m in history] == ["user"]

        # The session takes the next message, and the upstream sees the conversation.
        events = chat.turn(session_id, "and next?")
        assert [e.event for e in events][-1] == "end" and events[-1].json()["finish_reason"] == "stop"
        [sent] = [
            seen.body["messages"]
            for seen in list(upstream.requests)
            if seen.message.endswith("and next?") and seen.body["messages"][1]["content"].startswith(message)
        ]
        assert "".join(tokens(events)) == "You said: " + sent[-1]["content"]
        chat.assert_nothing_leaked(upstream)
    if fault.partial:
        assert sent[1:] == [
            {"role": "user", "content": message},
            {"role": "assistant", "content": fault.partial},
            {"role": "user", "content": "and next?"},
        ]
    else:
        assert sent[1:] == [{"role": "user", "content": f"{message}\n\nand next?"}]


def test_connection_refused(start_server: ServerFactory) -> None:
    server = start_server(openai_env(refused_url()))
    with server.client() as client:
        chat = Recorder(client)
        session_id = chat.new_session()
        for attempt in ("first", "second"):
            events = chat.turn(session_id, f"anyone there? {attempt}")
            assert [e.event for e in events] == ["start", "error", "end"]
            assert (events[1].json()["code"], events[1].json()["retryable"]) == ("upstream_connection", True)
        chat.assert_nothing_leaked()
    # The operator gets the detail the user does not.
    assert wait_for(lambda: "openai.APIConnectionError" in server.log() and "Connection refused" in server.log())


@pytest.mark.parametrize(
    ("phase", "reply"),
    [
        ("streaming", Reply(["tick "] * 400, delay=0.05)),
        ("silent before the first token", Reply(PIECES, stall=SILENCE)),
        ("silent before the headers", Reply(PIECES, stall_headers=SILENCE)),
    ],
)
def test_cancel_closes_the_upstream_connection(patient_server: ChatServer, upstream: Upstream, phase: str, reply: Reply) -> None:
    message = f"cancel while {phase}"
    upstream.script(message, reply)
    with patient_server.client() as client:
        session_id = client.new_session()
        client.send_message(session_id, message)
        assert wait_for(lambda: upstream.seen(message))
        with client.open_stream(session_id, read_timeout=GUARD) as stream:
            events: list[Received] = []
            cancelled = False
            for event in stream.events():
                events.append(event)
                if not cancelled and (reply.delay == 0 or len(tokens(events)) >= 2):
                    assert client.post(f"/api/sessions/{session_id}/cancel").json() == {"cancelled": True}
                    cancelled = True
                if event.event == "end":
                    break
        assert events[-1].json()["finish_reason"] == "cancelled"
        [seen] = upstream.seen(message)
        assert seen.client_closed.wait(10), "the upstream never saw the connection close"
        assert seen.sent_pieces < len(reply.pieces or [])
        partial = "".join(tokens(events))
        history = client.history(session_id)["messages"]
        assert (history[-1]["content"] if history[-1]["role"] == "assistant" else "") == partial


def test_cache_hit_makes_no_upstream_call(server: ChatServer, upstream: Upstream) -> None:
    message = "What is the capital of France? 🇫🇷"
    upstream.script(message, Reply(["Paris", ", of course", ".\n"]))
    with server.client() as client:
        chat = Recorder(client)
        first = chat.turn(chat.new_session(), message)
        assert first[0].json()["cached"] is False
        assert len(upstream.seen(message)) == 1
        session_id = chat.new_session()
        second = chat.turn(session_id, message)
        assert len(upstream.seen(message)) == 1, "a cache hit called the upstream"
        assert second[0].json()["cached"] is True and second[0].json()["model"] == MODEL
        assert tokens(second) == tokens(first) == ["Paris", ", of course", ".\n"]
        assert second[-1].json()["finish_reason"] == "stop" and second[-1].json()["usage"] == first[-1].json()["usage"]
        assert chat.history(session_id)[-1]["content"] == "Paris, of course.\n"
        # The same message after a different history is another request.
        other = chat.new_session()
        chat.turn(other, "Hello first")
        third = chat.turn(other, message)
        assert third[0].json()["cached"] is False and len(upstream.seen(message)) == 2


@pytest.mark.parametrize("failure", [Reply(PIECES, status=500), Reply(PIECES, fault="cut", fault_after=2), Reply(PIECES, stall=SILENCE, stall_after=2)], ids=["500", "cut", "silence"])
def test_a_failed_reply_is_never_cached(server: ChatServer, upstream: Upstream, failure: Reply) -> None:
    message = f"cache a failure? {failure.status} {failure.fault} {failure.stall}"
    upstream.script(message, failure)
    with server.client() as client:
        chat = Recorder(client)
        assert chat.turn(chat.new_session(), message)[-1].json()["finish_reason"] == "error"
        upstream.script(message, Reply(["Now ", "it works."]))
        retried = chat.turn(chat.new_session(), message)
        assert retried[0].json()["cached"] is False and tokens(retried) == ["Now ", "it works."]
        assert len(upstream.seen(message)) == 2
        # The complete reply is what gets cached.
        again = chat.turn(chat.new_session(), message)
        assert again[0].json()["cached"] is True and tokens(again) == ["Now ", "it works."]
        assert len(upstream.seen(message)) == 2


def test_threads_gthread_worker(start_server: ServerFactory, upstream: Upstream) -> None:
    """The provider under a threaded server: a reply, a fault, and a cancel."""
    server = start_server(openai_env(upstream.url, CHATAPP_CACHE_TTL_SECONDS="0"), kind="gthread")
    upstream.script("threads: tricky", Reply(TRICKY, fragment=5))
    upstream.script("threads: cut", Reply(PIECES, fault="cut"))
    upstream.script("threads: long", Reply(["tock "] * 400, delay=0.05))
    with server.client() as client:
        chat = Recorder(client)
        session_id = chat.new_session()
        assert tokens(chat.turn(session_id, "threads: tricky")) == TRICKY
        events = chat.turn(session_id, "threads: cut")
        assert [e.event for e in events][-2:] == ["error", "end"] and events[-2].json()["code"] == "upstream_connection"
        assert chat.history(session_id)[-1]["content"] == "Part"
        chat.assert_nothing_leaked(upstream)

        client.send_message(session_id, "threads: long")
        with client.open_stream(session_id, read_timeout=GUARD) as stream:
            seen_tokens = 0
            for event in stream.events():
                seen_tokens += event.event == "token"
                if seen_tokens == 2:
                    client.post(f"/api/sessions/{session_id}/cancel")
                if event.event == "end":
                    assert event.json()["finish_reason"] == "cancelled"
                    break
    [seen] = upstream.seen("threads: long")
    assert seen.client_closed.wait(10), "the upstream never saw the connection close"
    assert seen.sent_pieces < 400
