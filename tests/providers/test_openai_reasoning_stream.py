"""Reasoning replies and upstream quirks end to end: a gunicorn chatapp on the openai
provider, the real SDK inside it, the scripted OpenAI-compatible server, and a real SSE
client. Each turn ends as stated, within the stated time, with no traceback in the log,
and the session takes the next message."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from tests.providers.test_openai_stream import Recorder, openai_env, tokens
from tests.support.servers import ChatServer, ServerFactory
from tests.support.sseclient import Received
from tests.support.upstream import Reply, Upstream, chunk

GRACE = 0.5
THOUGHT = ["Hmm, ", "the user wants ", "a greeting — 日本語 too."]
ANSWER = ["Hello ", "there!"]


@pytest.fixture(scope="module")
def server(start_server: ServerFactory, upstream: Upstream) -> ChatServer:
    return start_server(openai_env(upstream.url, CHATAPP_FINISH_GRACE_SECONDS=str(GRACE)))


def reasoning(events: list[Received]) -> list[str]:
    return [e.json()["text"] for e in events if e.event == "reasoning"]


@pytest.mark.parametrize(
    "reply",
    [
        Reply(ANSWER, reasoning=THOUGHT, reasoning_field="reasoning_content"),
        Reply(ANSWER, reasoning=THOUGHT, reasoning_field="reasoning"),
        Reply(["<thi", "nk>" + THOUGHT[0], *THOUGHT[1:], "</think>\n\n", *ANSWER]),
    ],
    ids=["reasoning_content", "reasoning", "think_tags"],
)
def test_reasoning_streams_before_the_answer_and_stays_in_history(server: ChatServer, upstream: Upstream, reply: Reply) -> None:
    message = f"greet me, thinking via {reply.reasoning_field if reply.reasoning else 'tags'}"
    upstream.script(message, reply)
    with server.client() as client:
        chat = Recorder(client)
        session_id = chat.new_session()
        events = chat.turn(session_id, message)
        names = [e.event for e in events]
        assert names[0] == "start" and names[-1] == "end"
        # Thinking first, then the answer: no token before the last reasoning event.
        assert names.index("token") > max(i for i, name in enumerate(names) if name == "reasoning")
        assert "".join(reasoning(events)) == "".join(THOUGHT)
        assert "".join(tokens(events)) == "".join(ANSWER)
        ids = [e.id for e in events]
        assert len(set(ids)) == len(ids)
        last = chat.history(session_id)[-1]
        assert last == {"id": events[-1].json()["message_id"], "role": "assistant", "content": "".join(ANSWER), "reasoning": "".join(THOUGHT)}

        # The next turn's upstream request carries the answer, never the reasoning.
        upstream.script("and then?", Reply(["Then nothing."]))
        chat.turn(session_id, "and then?")
        sent = upstream.seen("and then?")[-1].body["messages"]
        assert {"role": "assistant", "content": "".join(ANSWER)} in sent
        assert all("reasoning" not in m and "Hmm" not in m["content"] for m in sent)

        # A cache hit replays the thinking too.
        again = chat.turn(chat.new_session(), message)
        assert again[0].json()["cached"] is True
        assert ("".join(reasoning(again)), "".join(tokens(again))) == ("".join(THOUGHT), "".join(ANSWER))
        chat.assert_nothing_leaked(upstream)


@dataclass(frozen=True)
class Quirk:
    name: str
    reply: Reply
    #: The names of the turn's events after ``start``, runs of tokens collapsed to one.
    shape: list[str]
    finish_reason: str
    answer: str
    error: str | None = None
    #: The turn ends within this many seconds.
    within: float = 3.0


QUIRKS = [
    Quirk(
        "usage_only_final_chunk",
        Reply(frames=[chunk({"content": "Hi"}), chunk({}, "stop"), chunk(usage={"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}, choices=False)]),
        ["token", "end"], "stop", "Hi",
    ),
    Quirk(
        "keep_alive_comments_and_dataless_frames",
        Reply(frames=[": OPENROUTER PROCESSING\n\n", "id: 7\n\n", chunk({"content": "Still "}), ":\n\n", "retry: 100\n\n", chunk({"content": "here"}), chunk({}, "stop")]),
        ["token", "end"], "stop", "Still here",
    ),
    Quirk(
        "error_object_mid_reply",
        Reply(["Part", "ial"], fault="error_event", error={"message": "Rate limit reached", "code": "rate_limit_exceeded"}),
        ["token", "error", "end"], "error", "Part", error="upstream_rate_limited",
    ),
    Quirk(
        "held_open_after_finish",
        Reply(frames=[chunk({"content": "Short."}), chunk({}, "stop")], ending="hold"),
        ["token", "end"], "stop", "Short.", within=GRACE + 2.0,
    ),
    Quirk(
        "closed_without_done_or_finish",
        Reply(frames=[chunk({"content": "Half"})], ending="eof"),
        ["token", "error", "end"], "error", "Half", error="upstream_incomplete",
    ),
    Quirk("eos_token", Reply(["Fine."], finish_reason="eos_token"), ["token", "end"], "stop", "Fine."),
    Quirk("max_tokens", Reply(["Cut"], finish_reason="max_tokens"), ["token", "end"], "length", "Cut"),
    Quirk("content_filter", Reply(["Some"], finish_reason="content_filter"), ["token", "end"], "content_filter", "Some"),
    Quirk("length_after_only_reasoning", Reply([], reasoning=THOUGHT, finish_reason="length"), ["reasoning", "end"], "length", ""),
]


def shape(events: list[Received]) -> list[str]:
    out: list[str] = []
    for e in events[1:]:
        if not out or out[-1] != e.event:
            out.append(e.event)
    return out


@pytest.mark.parametrize("quirk", QUIRKS, ids=lambda q: q.name)
def test_each_quirk_ends_its_turn_as_stated(server: ChatServer, upstream: Upstream, quirk: Quirk) -> None:
    message = f"quirk {quirk.name}"
    upstream.script(message, quirk.reply)
    log_before = len(server.log())
    with server.client() as client:
        chat = Recorder(client)
        session_id = chat.new_session()
        started = time.monotonic()
        events = chat.turn(session_id, message)
        took = time.monotonic() - started
        assert shape(events) == quirk.shape
        end = events[-1].json()
        assert end["finish_reason"] == quirk.finish_reason
        assert "".join(tokens(events)) == quirk.answer
        if quirk.error is not None:
            assert events[-2].json()["code"] == quirk.error
        assert took < quirk.within, f"the turn took {took:.1f} s"
        if quirk.answer:
            assert chat.history(session_id)[-1]["content"] == quirk.answer
        # The session takes the next message (merged with this one upstream when this
        # turn left no answer: the default reply echoes what was sent).
        follow = chat.turn(session_id, f"after {message}")
        assert follow[-1].json()["finish_reason"] == "stop" and "".join(tokens(follow)).endswith(f"after {message}")
        chat.assert_nothing_leaked(upstream)
    assert "Traceback" not in server.log()[log_before:]
