"""The SSE encoder, byte for byte, and a round trip through a WHATWG parser."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatapp import ServerSentEvent
from chatapp.sse import PING, encode_event, retry_field
from tests.support.sseclient import SSEParser, parse_all


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (ServerSentEvent(data="hello"), b"data: hello\n\n"),
        (ServerSentEvent(data=""), b"data: \n\n"),
        (ServerSentEvent(data="a\nb"), b"data: a\ndata: b\n\n"),
        (ServerSentEvent(data="a\r\nb"), b"data: a\ndata: b\n\n"),
        (ServerSentEvent(data="a\rb"), b"data: a\ndata: b\n\n"),
        (ServerSentEvent(data="a\n\nb"), b"data: a\ndata: \ndata: b\n\n"),
        (ServerSentEvent(data="a\r\r\nb"), b"data: a\ndata: \ndata: b\n\n"),
        # A trailing newline is kept: the parser drops exactly one final LF.
        (ServerSentEvent(data="line\n"), b"data: line\ndata: \n\n"),
        (ServerSentEvent(data="\n"), b"data: \ndata: \n\n"),
        # The parser removes one space after the colon; a leading space must survive.
        (ServerSentEvent(data=" lead"), b"data:  lead\n\n"),
        (ServerSentEvent(data=": not a comment"), b"data: : not a comment\n\n"),
        # Only CR, LF and CRLF break lines; str.splitlines would split all of these.
        (ServerSentEvent(data="a\u2028b\x85c\x0cd\x0be\x1cf"), "data: a\u2028b\x85c\x0cd\x0be\x1cf\n\n".encode()),
        (ServerSentEvent(data="é 😀 ✓"), "data: é 😀 ✓\n\n".encode()),
        (ServerSentEvent(data='{"text":"<b>"}', event="token", id="17-3"), b'event: token\nid: 17-3\ndata: {"text":"<b>"}\n\n'),
        (ServerSentEvent(id=""), b"id: \n\n"),
        (ServerSentEvent(retry=3000), b"retry: 3000\n\n"),
        (ServerSentEvent(retry=0), b"retry: 0\n\n"),
        (ServerSentEvent(comment="ping"), b": ping\n\n"),
        (ServerSentEvent(comment=""), b": \n\n"),
        (ServerSentEvent(comment="two\nlines\r\nhere"), b": two\n: lines\n: here\n\n"),
        (ServerSentEvent(), b"\n"),
        (
            ServerSentEvent(data="x", event="e", id="1-0", retry=5, comment="c"),
            b": c\nevent: e\nid: 1-0\nretry: 5\ndata: x\n\n",
        ),
        # A lone surrogate cannot be UTF-8; it becomes U+FFFD instead of failing the stream.
        (ServerSentEvent(data="a\ud800b"), "data: a\ufffdb\n\n".encode()),
    ],
)
def test_encode_exact_bytes(event: ServerSentEvent, expected: bytes) -> None:
    assert event.encode() == expected


@pytest.mark.parametrize(
    "kwargs",
    [
        {"id": "a\nb"},
        {"id": "a\rb"},
        {"id": "a\0b"},
        {"event": "to\nken"},
        {"event": "to\rken"},
        {"event": "to\0ken"},
        {"retry": -1},
        {"retry": True},
        {"retry": 1.5},
        {"retry": "3000"},
    ],
)
def test_refuses_values_the_wire_cannot_carry(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        ServerSentEvent(**kwargs)


def test_ping_is_a_comment_frame() -> None:
    assert PING == b": ping\n\n"
    [item] = parse_all(PING)
    assert (item.kind, item.data) == ("comment", "ping")


def test_retry_field_travels_in_the_next_events_block() -> None:
    assert retry_field(3000) == b"retry: 3000\n"
    raw = retry_field(3000) + ServerSentEvent(data="{}", event="start", id="1-0").encode()
    assert raw == b"retry: 3000\nevent: start\nid: 1-0\ndata: {}\n\n"
    parser = SSEParser()
    [item] = parser.feed(raw)
    # One event, which also set the reconnect delay: no empty event before it.
    assert (item.event, item.id, item.data, parser.retry) == ("start", "1-0", "{}", 3000)
    with pytest.raises(ValueError):
        retry_field(-1)


def as_browser_sees(data: str) -> str:
    """Data after a round trip: every CR, LF or CRLF arrives as one LF."""
    return re.sub(r"\r\n|\r", "\n", data)


@given(data=st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from("\r\n")), event=st.text(alphabet=st.characters(blacklist_characters="\r\n\0"), min_size=1), id=st.from_regex(r"\A[0-9a-z-]{0,12}\Z"))
def test_round_trip_through_a_whatwg_parser(data: str, event: str, id: str) -> None:
    [item] = parse_all(ServerSentEvent(data=data, event=event, id=id).encode())
    assert (item.event, item.data, item.id) == (event, as_browser_sees(data), id)


@given(st.lists(st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from("\r\n")), min_size=1, max_size=5), st.integers(min_value=1, max_value=7))
def test_round_trip_survives_any_chunking(datas: list[str], step: int) -> None:
    raw = b"".join(ServerSentEvent(data=d, id=str(i)).encode() for i, d in enumerate(datas))
    parser = SSEParser()
    items = []
    for start in range(0, len(raw), step):
        items += parser.feed(raw[start : start + step])
    assert [i.data for i in items] == [as_browser_sees(d) for d in datas]


@pytest.mark.parametrize(
    ("event", "id", "data"),
    [
        ("token", "1795261153151-0", '{"text":" flows"}'),
        ("token", "1-0", ""),
        ("token", "1-0", "é 😀 ✓ \u2028\x85"),
        # Not the one-line case: these take the general encoder, with the same result.
        ("token", "1-0", "a\nb"),
        ("token", "1-0", "a\r\nb\r"),
        ("token", "1-0", "line\n"),
        ("token", "1-0", "a\ud800b"),
        ("token", "1-0", "nul\0inside"),
    ],
)
def test_encode_event_is_the_general_encoder_in_one_step(event: str, id: str, data: str) -> None:
    assert encode_event(event, id, data) == ServerSentEvent(data=data, event=event, id=id).encode()


@pytest.mark.parametrize(("event", "id"), [("to\nken", "1"), ("to\rken", "1"), ("to\0ken", "1"), ("token", "1\n2"), ("token", "1\r"), ("token", "1\0")])
def test_encode_event_refuses_what_the_general_encoder_refuses(event: str, id: str) -> None:
    with pytest.raises(ValueError):
        encode_event(event, id, "x")


@given(
    data=st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from("\r\n\0") | st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)),
    event=st.text(alphabet=st.characters(blacklist_characters="\r\n\0"), min_size=1),
    id=st.from_regex(r"\A[0-9a-z-]{0,12}\Z"),
)
def test_encode_event_matches_the_general_encoder(data: str, event: str, id: str) -> None:
    assert encode_event(event, id, data) == ServerSentEvent(data=data, event=event, id=id).encode()
