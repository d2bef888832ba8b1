"""Each server's dialect of the OpenAI stream, through the real SDK against a real server:
reasoning in its three forms, keep-alives, frames without data, endings held open or cut,
and the finish reasons servers invent."""

from __future__ import annotations

import threading
import time

import pytest

from chatapp.broker.base import Message
from chatapp.errors import ProviderError
from chatapp.providers.base import ChatRequest, Completion, Reasoning
from chatapp.providers.openai import OpenAIProvider
from tests.support.upstream import Reply, Upstream, chunk

SECRET = "sk-dialects-0000"
GRACE = 0.5


@pytest.fixture(scope="module")
def provider(upstream: Upstream) -> OpenAIProvider:
    return OpenAIProvider(model="test-model", api_key=SECRET, base_url=upstream.url, timeout_seconds=5.0, finish_grace_seconds=GRACE)


def run(provider: OpenAIProvider, upstream: Upstream, message: str, reply: Reply) -> tuple[str, str, Completion | None, ProviderError | None, list]:
    """The joined reasoning, the joined answer, the completion and the error."""
    upstream.script(message, reply)
    items: list = []
    error = None
    try:
        items.extend(provider.stream(ChatRequest("test-model", "", (Message("m", "user", message),)), threading.Event()))
    except ProviderError as exc:
        error = exc
    thought = "".join(i.text for i in items if isinstance(i, Reasoning))
    answer = "".join(i for i in items if isinstance(i, str))
    completions = [i for i in items if isinstance(i, Completion)]
    return thought, answer, completions[0] if completions else None, error, items


THOUGHT = ["Let me think. ", "Two plus two ", "is four; ünïcødé 🤔."]
ANSWER = ["The answer ", "is 4."]


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_reasoning_fields_become_reasoning_before_the_answer(provider: OpenAIProvider, upstream: Upstream, field: str) -> None:
    thought, answer, completion, error, items = run(provider, upstream, f"think via {field}", Reply(ANSWER, reasoning=THOUGHT, reasoning_field=field))
    assert error is None
    assert (thought, answer) == ("".join(THOUGHT), "".join(ANSWER))
    # In order: all the thinking, then the answer, then how it ended.
    kinds = [type(i).__name__ for i in items]
    assert kinds == ["Reasoning"] * 3 + ["str"] * 2 + ["Completion"]
    assert completion is not None and completion.finish_reason == "stop"


def test_reasoning_tokens_are_kept_in_usage(provider: OpenAIProvider, upstream: Upstream) -> None:
    extra = {"completion_tokens_details": {"reasoning_tokens": 42, "accepted_prediction_tokens": 0}}
    _, _, completion, _, _ = run(provider, upstream, "count my thinking", Reply(ANSWER, reasoning=THOUGHT, usage_extra=extra))
    assert completion is not None and completion.usage is not None
    assert completion.usage["completion_tokens_details"] == {"reasoning_tokens": 42}
    assert completion.usage["total_tokens"] == completion.usage["prompt_tokens"] + completion.usage["completion_tokens"]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 40])
def test_think_tags_split_anywhere(provider: OpenAIProvider, upstream: Upstream, size: int) -> None:
    content = "<think>\nPlan: add 2 and 2 </thin> not yet.\n</think>\n\nIt is **4**."
    pieces = [content[i : i + size] for i in range(0, len(content), size)]
    thought, answer, completion, error, _ = run(provider, upstream, f"tags {size}", Reply(pieces))
    assert error is None and completion is not None
    assert thought == "\nPlan: add 2 and 2 </thin> not yet.\n"
    assert answer == "It is **4**."


def test_think_tags_off_leave_the_text_alone(upstream: Upstream) -> None:
    plain = OpenAIProvider(model="test-model", api_key=SECRET, base_url=upstream.url, think_tags=False)
    content = ["<think>x</think>", "y"]
    thought, answer, _, _, _ = run(plain, upstream, "tags off", Reply(content))
    assert (thought, answer) == ("", "<think>x</think>y")


def test_a_think_tag_later_in_the_answer_is_text(provider: OpenAIProvider, upstream: Upstream) -> None:
    thought, answer, _, _, _ = run(provider, upstream, "tags later", Reply(["Use ", "<think>", " tags."]))
    assert (thought, answer) == ("", "Use <think> tags.")


def test_keep_alives_and_frames_without_data_are_absorbed(provider: OpenAIProvider, upstream: Upstream) -> None:
    frames = [
        ": OPENROUTER PROCESSING\n\n",
        ":\n\n",
        "id: 1\n\n",
        chunk({"role": "assistant", "content": ""}),
        "retry: 3000\n\n",
        chunk({"content": "kept "}),
        "\n\n",
        ": still here\r\n\r\n",
        chunk({"content": "alive"}),
        "id: 2\nretry: 10\n\n",
        chunk({}, "stop"),
    ]
    _, answer, completion, error, _ = run(provider, upstream, "keep alive", Reply(frames=frames))
    assert error is None and answer == "kept alive" and completion == Completion("stop", None)


def test_usage_only_final_chunk_after_the_finish_reason(provider: OpenAIProvider, upstream: Upstream) -> None:
    usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    frames = [chunk({"content": "a"}), chunk({"content": "b"}), chunk({}, "stop"), chunk(usage=usage, choices=False)]
    _, answer, completion, error, _ = run(provider, upstream, "usage last", Reply(frames=frames))
    assert error is None and answer == "ab" and completion == Completion("stop", usage)


def test_a_stream_held_open_after_its_finish_reason_ends_after_the_grace(provider: OpenAIProvider, upstream: Upstream) -> None:
    frames = [chunk({"content": "done "}), chunk({"content": "here"}), chunk({}, "length")]
    started = time.monotonic()
    _, answer, completion, error, _ = run(provider, upstream, "held open", Reply(frames=frames, ending="hold"))
    took = time.monotonic() - started
    assert error is None and answer == "done here" and completion is not None and completion.finish_reason == "length"
    # Ended by the grace period, not by the read timeout (5 s) nor by the upstream.
    assert GRACE <= took < 4.0
    [seen] = upstream.seen("held open")
    assert seen.client_closed.wait(5)


def test_a_stream_closed_without_done_or_finish_reason_is_incomplete(provider: OpenAIProvider, upstream: Upstream) -> None:
    frames = [chunk({"content": "half "}), chunk({"content": "a reply"})]
    _, answer, completion, error, _ = run(provider, upstream, "cut clean", Reply(frames=frames, ending="eof"))
    assert error is not None and (error.code, error.retryable) == ("upstream_incomplete", True)
    assert answer == "half a reply" and completion is None


@pytest.mark.parametrize(
    ("finish", "expected"),
    [("", "stop"), (None, "stop"), ("eos", "stop"), ("eos_token", "stop"), ("max_tokens", "length"), ("length", "length"), ("content_filter", "content_filter"), ("tool_calls", "stop")],
)
def test_finish_reasons_servers_invent(provider: OpenAIProvider, upstream: Upstream, finish: str | None, expected: str) -> None:
    # None: no finish reason at all, but [DONE].
    _, answer, completion, error, _ = run(provider, upstream, f"finish {finish!r}", Reply(["fine"], finish_reason=finish))
    assert error is None and answer == "fine"
    assert completion is not None and completion.finish_reason == expected


def test_length_after_long_reasoning_and_no_answer(provider: OpenAIProvider, upstream: Upstream) -> None:
    thought, answer, completion, error, _ = run(provider, upstream, "ran out", Reply([], reasoning=THOUGHT * 3, finish_reason="length"))
    assert error is None and answer == "" and thought == "".join(THOUGHT * 3)
    assert completion is not None and completion.finish_reason == "length"


def test_reasoning_is_never_sent_back(provider: OpenAIProvider) -> None:
    history = (Message("1", "user", "Q1"), Message("2", "assistant", "A1", reasoning="secret thoughts"), Message("3", "user", "Q2"), Message("4", "assistant", "", reasoning="only thinking"))
    sent = provider.messages(ChatRequest("m", "", (*history, Message("5", "user", "Q3"))))
    assert sent == [
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "Q2\n\nQ3"},
    ]
    assert "thought" not in str(sent) and "thinking" not in str(sent)


def test_reasoning_counts_as_activity_for_the_silence_watchdog(upstream: Upstream) -> None:
    # Each gap (0.6 s) is within the 1 s timeout, though the first token comes after 3 s.
    strict = OpenAIProvider(model="test-model", api_key=SECRET, base_url=upstream.url, timeout_seconds=1.0)
    thought, answer, completion, error, _ = run(strict, upstream, "slow thinker", Reply(["Done."], reasoning=["a", "b", "c", "d", "e"], delay=0.6))
    assert error is None and (thought, answer) == ("abcde", "Done.")
    assert completion is not None and completion.finish_reason == "stop"
