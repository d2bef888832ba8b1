"""The openai provider in this process (threads), through the real SDK, against a real
OpenAI-compatible server on loopback: the request it sends, the text and usage it
yields, each fault as a chatapp error, and cancel closing the upstream connection."""

from __future__ import annotations

import threading

import pytest

from chatapp import create_app
from chatapp.broker.base import Message
from chatapp.errors import ConfigError, ProviderError
from chatapp.providers.base import ChatRequest, Completion
from chatapp.providers.openai import OpenAIProvider
from tests.support.servers import wait_for
from tests.support.upstream import FAULTS, PIECES, SILENCE, Fault, Reply, Upstream, refused_url

SECRET = "sk-test-provider-0123456789abcdef"
TIMEOUT = 1.0


def request(text: str, *, history: tuple[Message, ...] = (), system: str = "") -> ChatRequest:
    return ChatRequest("test-model", system, (*history, Message("m-new", "user", text)))


@pytest.fixture(scope="module")
def provider(upstream: Upstream) -> OpenAIProvider:
    return OpenAIProvider(model="test-model", api_key=SECRET, base_url=upstream.url, timeout_seconds=TIMEOUT)


def collect(provider: OpenAIProvider, req: ChatRequest, cancelled: threading.Event | None = None) -> tuple[list[str], Completion | None, ProviderError | None]:
    texts: list[str] = []
    completion = None
    try:
        for item in provider.stream(req, cancelled or threading.Event()):
            if isinstance(item, Completion):
                completion = item
            else:
                texts.append(item)
    except ProviderError as exc:
        return texts, completion, exc
    return texts, completion, None


def test_request_and_reply(provider: OpenAIProvider, upstream: Upstream) -> None:
    history = (Message("a", "user", "Earlier?"), Message("b", "assistant", "Earlier."))
    texts, completion, error = collect(provider, request("provider hello", history=history, system="Be exact."))
    assert error is None
    assert texts == ["You ", "said: ", "provider hello"]
    assert completion == Completion("stop", {"prompt_tokens": 6, "completion_tokens": 3, "total_tokens": 9})
    [seen] = upstream.seen("provider hello")
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["authorization"] == f"Bearer {SECRET}"
    assert seen.body["model"] == "test-model"
    assert seen.body["stream"] is True
    assert seen.body["stream_options"] == {"include_usage": True}
    assert seen.body["messages"] == [
        {"role": "system", "content": "Be exact."},
        {"role": "user", "content": "Earlier?"},
        {"role": "assistant", "content": "Earlier."},
        {"role": "user", "content": "provider hello"},
    ]


def test_history_window_starts_at_a_user_message_and_merges_repeated_roles() -> None:
    provider = OpenAIProvider(model="m", base_url="http://127.0.0.1:9/v1", max_history_messages=4)
    history = tuple(
        Message(str(i), role, f"{role} {i}")
        for i, role in enumerate(["user", "assistant", "user", "assistant", "user", "assistant"])
    )
    sent = provider.messages(request("now", history=history))
    # The last four are assistant 3, user 4, assistant 5, user now: the window drops the
    # leading assistant message.
    assert sent == [
        {"role": "user", "content": "user 4"},
        {"role": "assistant", "content": "assistant 5"},
        {"role": "user", "content": "now"},
    ]
    # A turn that failed before any text leaves two user messages in a row.
    failed = (Message("1", "user", "first try"),)
    assert provider.messages(request("second try", history=failed, system="S")) == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "first try\n\nsecond try"},
    ]
    one = OpenAIProvider(model="m", base_url="http://127.0.0.1:9/v1", max_history_messages=1)
    assert one.messages(request("only", history=history)) == [{"role": "user", "content": "only"}]


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.name)
def test_each_fault_becomes_its_error(provider: OpenAIProvider, upstream: Upstream, fault: Fault) -> None:
    message = f"provider fault {fault.name}"
    upstream.script(message, fault.reply)
    texts, completion, error = collect(provider, request(message))
    assert error is not None, f"no error; got {texts!r} {completion!r}"
    assert (error.code, error.retryable) == (fault.code, fault.retryable)
    assert "".join(texts) == fault.partial
    assert completion is None
    # The user's message names no key, no address and no SDK text.
    assert SECRET not in error.message and "127.0.0.1" not in error.message
    assert "Error code" not in error.message and "Traceback" not in error.message


def test_connection_refused(upstream: Upstream) -> None:
    provider = OpenAIProvider(model="test-model", api_key=SECRET, base_url=refused_url(), timeout_seconds=TIMEOUT)
    texts, _, error = collect(provider, request("nobody home"))
    assert error is not None and (error.code, error.retryable) == ("upstream_connection", True)
    assert texts == []


def test_length_and_a_missing_usage_chunk(provider: OpenAIProvider, upstream: Upstream) -> None:
    upstream.script("provider length", Reply(["cut ", "short"], finish_reason="length"))
    texts, completion, error = collect(provider, request("provider length"))
    assert error is None and texts == ["cut ", "short"]
    assert completion is not None and completion.finish_reason == "length"
    # The reply is complete once its finish reason arrived; losing the connection
    # before the usage chunk and [DONE] costs only the usage.
    upstream.script("provider late cut", Reply(PIECES, fault="cut_after_finish"))
    texts, completion, error = collect(provider, request("provider late cut"))
    assert error is None and "".join(texts) == "Partial reply."
    assert completion == Completion("stop", None)


def test_server_that_refuses_stream_options(upstream: Upstream) -> None:
    provider = OpenAIProvider(model="test-model", api_key=SECRET, base_url=upstream.url, timeout_seconds=TIMEOUT)
    upstream.script("no usage here", Reply(["fine"], reject_stream_options=True))
    texts, completion, error = collect(provider, request("no usage here"))
    assert error is None and texts == ["fine"] and completion == Completion("stop", None)
    first, second = upstream.seen("no usage here")
    assert "stream_options" in first.body and "stream_options" not in second.body
    # Remembered: the next request does not ask again.
    collect(provider, request("no usage here"))
    assert len(upstream.seen("no usage here")) == 3


@pytest.mark.parametrize(
    ("phase", "reply"),
    [
        ("waiting for headers", Reply(PIECES, stall_headers=SILENCE)),
        ("waiting for the first token", Reply(PIECES, stall=SILENCE)),
        ("between tokens", Reply(["tick "] * 400, delay=0.05)),
    ],
)
def test_cancel_closes_the_upstream_connection(upstream: Upstream, phase: str, reply: Reply) -> None:
    # A long timeout: only the cancel may end these replies.
    provider = OpenAIProvider(model="test-model", api_key=SECRET, base_url=upstream.url, timeout_seconds=SILENCE)
    message = f"provider cancel {phase}"
    upstream.script(message, reply)
    cancelled = threading.Event()
    got: list = []
    worker = threading.Thread(target=lambda: got.extend(provider.stream(request(message), cancelled)))
    worker.start()
    assert wait_for(lambda: upstream.seen(message) and (upstream.seen(message)[0].sent_pieces >= 2 or reply.delay == 0))
    cancelled.set()
    [seen] = upstream.seen(message)
    assert seen.client_closed.wait(10), "the upstream never saw the connection close"
    worker.join(10)
    assert not worker.is_alive(), "the provider kept reading after cancel"
    assert not any(isinstance(item, Completion) for item in got)
    assert seen.sent_pieces < len(reply.pieces or [])


def test_settings_build_it_and_refuse_what_cannot_work(upstream: Upstream, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "CHATAPP_MODEL"):
        monkeypatch.delenv(name, raising=False)
    app = create_app({"CHATAPP_PROVIDER": "openai", "CHATAPP_MODEL": "test-model", "OPENAI_BASE_URL": upstream.url, "CHATAPP_MAX_HISTORY_MESSAGES": 7})
    provider = app.extensions["chatapp"].provider
    assert isinstance(provider, OpenAIProvider) and provider.max_history_messages == 7
    # No key for a local server: the SDK still gets one, the server may ignore it.
    texts, _, error = collect(provider, request("keyless"))
    assert error is None and texts[-1] == "keyless"
    with pytest.raises(ConfigError, match="CHATAPP_MODEL"):
        create_app({"CHATAPP_PROVIDER": "openai", "OPENAI_BASE_URL": upstream.url})
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        create_app({"CHATAPP_PROVIDER": "openai", "CHATAPP_MODEL": "gpt-4o-mini"})
