"""The turn runner: events in order, errors become error+end, cancel keeps the partial."""

from __future__ import annotations

import json
import subprocess
import sys

from chatapp.broker.memory import MemoryBroker
from chatapp.errors import ProviderError
from chatapp.providers.base import Completion
from chatapp.turns import TurnRunner
from tests.support.fakes import ScriptedProvider


def run(script: list, text: str = "hi") -> tuple[MemoryBroker, str, list]:
    broker = MemoryBroker()
    provider = ScriptedProvider(script)
    runner = TurnRunner(broker, provider, model="", system_prompt="Be brief.")
    session_id = broker.create_session("alice")
    turn = broker.begin_turn(session_id, text)
    runner.run(turn)
    events = [(e.event, e.payload()) for e in broker.read(session_id, None, 0)]
    assert provider.requests[0].system_prompt == "Be brief."
    assert provider.requests[0].messages[-1].content == text
    return broker, session_id, events


def test_events_in_order_with_usage() -> None:
    broker, session_id, events = run(["Hel", "lo ✓\n", Completion("length", {"total_tokens": 3})])
    assert [name for name, _ in events] == ["start", "token", "token", "end"]
    assert events[0][1]["model"] == "scripted-1" and events[0][1]["cached"] is False
    assert [data["text"] for name, data in events if name == "token"] == ["Hel", "lo ✓\n"]
    assert events[-1][1]["finish_reason"] == "length" and events[-1][1]["usage"] == {"total_tokens": 3}
    assert broker.get_session(session_id).messages[-1].content == "Hello ✓\n"


def test_provider_error_becomes_error_then_end_and_keeps_partial() -> None:
    broker, session_id, events = run(["part", ProviderError("The model is busy.", code="upstream_rate_limited", retryable=True)])
    assert [name for name, _ in events] == ["start", "token", "error", "end"]
    assert events[2][1] == {"code": "upstream_rate_limited", "message": "The model is busy.", "retryable": True}
    assert events[3][1]["finish_reason"] == "error"
    info = broker.get_session(session_id)
    assert info.generating is False and info.messages[-1].content == "part"


def test_unexpected_exception_is_not_leaked() -> None:
    _, _, events = run([RuntimeError("secret sk-123 at /srv/app.py line 3")])
    assert events[1][0] == "error"
    assert "sk-123" not in str(events) and events[1][1]["code"] == "internal_error"
    assert events[-1][1]["finish_reason"] == "error"


def test_cancel_ends_with_cancelled_and_no_more_tokens() -> None:
    broker, session_id, events = run(["a", "b", "<cancel>", "c", "d"])
    assert [name for name, _ in events] == ["start", "token", "token", "end"]
    assert events[-1][1]["finish_reason"] == "cancelled"
    assert broker.get_session(session_id).messages[-1].content == "ab"


def test_nothing_generated_stores_no_empty_reply() -> None:
    broker, session_id, _events = run([ProviderError("down")])
    assert [m.role for m in broker.get_session(session_id).messages] == ["user"]


def test_token_data_is_compact_utf8_json_whatever_the_text() -> None:
    texts = ['say "hi"', "back\\slash", "tab\tline\nbreak\r", "\x00\x1f", "é 😀 \u2028", "</script>"]
    broker, session_id, _ = run(texts)
    tokens = [e for e in broker.read(session_id, None, 0) if e.event == "token"]
    # Byte for byte what json.dumps gives with the settings every other event uses.
    assert [e.data for e in tokens] == [json.dumps({"text": t}, ensure_ascii=False, separators=(",", ":")) for t in texts]
    assert [e.payload()["text"] for e in tokens] == texts


def test_turn_cancel_flag_is_gevents_event_in_a_patched_worker() -> None:
    # gunicorn's master imports chatapp before the gevent worker patches threading; a
    # turn started in the worker must still wait on gevent's Event, not the stdlib's.
    code = (
        "import chatapp.broker.base as base\n"
        "from gevent import monkey\n"
        "monkey.patch_all()\n"
        "import threading\n"
        "turn = base.TurnHandle('s', 'm', ())\n"
        "assert type(turn.cancelled) is threading.Event, type(turn.cancelled)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
