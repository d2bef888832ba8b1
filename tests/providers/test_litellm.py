"""The openai provider's acceptance against the LiteLLM proxy, a real OpenAI-compatible
server nobody here wrote: chatapp (gunicorn, the real SDK) -> LiteLLM -> its mock model or
the scripted upstream. A reply with non-ASCII text, a rate limit and a refused key each
end as they should."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.providers.test_openai_stream import Recorder, tokens
from tests.support.litellm import MASTER_KEY, LiteLLMProxy
from tests.support.servers import ChatServer, ServerFactory
from tests.support.upstream import Reply, Upstream

TEXT = "Grüße aus dem Proxy — 日本語, emoji 👩‍👩‍👧 and a\nnew line."


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream) -> Iterator[LiteLLMProxy]:
    models = [
        {"model_name": "mock-reply", "litellm_params": {"model": "openai/gpt-4o-mini", "api_key": "unused", "mock_response": TEXT}},
        {"model_name": "mock-rate-limit", "litellm_params": {"model": "openai/gpt-4o-mini", "api_key": "unused", "mock_response": "litellm.RateLimitError"}},
        # Relayed to the scripted upstream, which refuses the proxy's key.
        {"model_name": "refused-key", "litellm_params": {"model": "openai/test-model", "api_key": "sk-wrong", "api_base": upstream.url}},
    ]
    server = LiteLLMProxy(models, tmp_path_factory.mktemp("litellm"))
    yield server
    server.stop()


def chat_server(start_server: ServerFactory, proxy: LiteLLMProxy, model: str) -> ChatServer:
    return start_server(
        {
            "CHATAPP_PROVIDER": "openai",
            "OPENAI_BASE_URL": proxy.url,
            "OPENAI_API_KEY": MASTER_KEY,
            "CHATAPP_MODEL": model,
            "CHATAPP_UPSTREAM_TIMEOUT_SECONDS": "30",
            "CHATAPP_CACHE_TTL_SECONDS": "0",
        }
    )


def test_a_reply_with_non_ascii_text(start_server: ServerFactory, proxy: LiteLLMProxy) -> None:
    server = chat_server(start_server, proxy, "mock-reply")
    with server.client() as client:
        chat = Recorder(client)
        session_id = chat.new_session()
        events = chat.turn(session_id, "Say hello")
        assert [e.event for e in events][0] == "start" and events[-1].event == "end"
        assert events[0].json()["model"] == "mock-reply"
        assert "".join(tokens(events)) == TEXT
        assert events[-1].json()["finish_reason"] == "stop"
        assert chat.history(session_id)[-1]["content"] == TEXT
        # And the next turn goes through the proxy too.
        again = chat.turn(session_id, "Again")
        assert "".join(tokens(again)) == TEXT
        chat.assert_nothing_leaked()


def test_a_rate_limit_is_retryable(start_server: ServerFactory, proxy: LiteLLMProxy) -> None:
    server = chat_server(start_server, proxy, "mock-rate-limit")
    with server.client() as client:
        chat = Recorder(client)
        events = chat.turn(chat.new_session(), "Hello?")
        assert [e.event for e in events] == ["start", "error", "end"]
        error = events[1].json()
        assert (error["code"], error["retryable"]) == ("upstream_rate_limited", True)
        assert events[-1].json()["finish_reason"] == "error"
        chat.assert_nothing_leaked()
    assert "Traceback" not in server.log()


def test_a_refused_key_is_not_retryable(start_server: ServerFactory, proxy: LiteLLMProxy, upstream: Upstream) -> None:
    upstream.script("Let me in", Reply(["never"], status=401))
    server = chat_server(start_server, proxy, "refused-key")
    with server.client() as client:
        chat = Recorder(client)
        events = chat.turn(chat.new_session(), "Let me in")
        assert [e.event for e in events] == ["start", "error", "end"]
        error = events[1].json()
        assert (error["code"], error["retryable"]) == ("upstream_auth", False)
        chat.assert_nothing_leaked()
    # LiteLLM really relayed to the upstream, which saw LiteLLM's own key.
    assert upstream.seen("Let me in") and upstream.seen("Let me in")[0].headers["authorization"] == "Bearer sk-wrong"
