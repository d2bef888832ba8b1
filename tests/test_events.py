"""The event vocabulary: each payload's exact JSON, built in one place."""

from __future__ import annotations

import json

import pytest

from chatapp import events
from chatapp.errors import UpstreamTimeoutError


@pytest.mark.parametrize(
    ("draft", "name", "data"),
    [
        (events.start("msg_1", "demo", cached=False), "start", '{"message_id":"msg_1","model":"demo","cached":false}'),
        (events.token("héllo\n\"x\""), "token", '{"text":"héllo\\n\\"x\\""}'),
        (events.error("upstream_rate_limited", "Slow down.", retryable=True), "error", '{"code":"upstream_rate_limited","message":"Slow down.","retryable":true}'),
        (events.failure(UpstreamTimeoutError("Silent.")), "error", '{"code":"upstream_timeout","message":"Silent.","retryable":true}'),
        (events.end("msg_1", "stop", {"total_tokens": 3}), "end", '{"message_id":"msg_1","finish_reason":"stop","usage":{"total_tokens":3}}'),
        (events.end("msg_1", "cancelled"), "end", '{"message_id":"msg_1","finish_reason":"cancelled","usage":null}'),
    ],
)
def test_payloads_are_compact_utf8_json(draft: events.Draft, name: str, data: str) -> None:
    assert draft == (name, data)
    json.loads(data)


def test_token_json_matches_the_general_encoder() -> None:
    for text in ["", "plain", "ünïcødé 日本語 🎉", "line\r\nbreak\u2028", "\x00\x1f", '"\\']:
        assert events.token(text)[1] == json.dumps({"text": text}, ensure_ascii=False, separators=(",", ":"))


def test_an_interrupted_turn_ends_with_error_then_end() -> None:
    (error_name, error_data), (end_name, end_data) = events.interrupted("msg_9")
    assert (error_name, end_name) == ("error", "end")
    assert json.loads(error_data) == {"code": "generation_interrupted", "message": "The reply was interrupted; please try again.", "retryable": True}
    assert json.loads(end_data) == {"message_id": "msg_9", "finish_reason": "error", "usage": None}


def test_a_logged_event_carries_its_frame() -> None:
    event = events.Event("5-0", *events.token("a\nb"))
    assert event.frame == b'event: token\nid: 5-0\ndata: {"text":"a\\nb"}\n\n'
    assert events.text_of(event) == "a\nb"
    assert events.parse_event_id("5-0") == (5, 0)
    with pytest.raises(ValueError):
        events.parse_event_id("5-٣")


def test_no_event_payload_is_written_outside_events_py() -> None:
    from tests.support.servers import ROOT

    offenders = []
    for path in (ROOT / "chatapp").rglob("*"):
        if path.suffix not in (".py", ".lua") or path.name == "events.py":
            continue
        text = path.read_text()
        # What hand-built payloads looked like: a dict literal of an event's fields, or a
        # JSON template filled in by a script.
        for needle in ('"retryable"', '{"text"', "__ID__", "cjson.encode", "string.gsub"):
            if needle in text:
                offenders.append(f"{path.relative_to(ROOT)}: {needle}")
    assert offenders == []
