"""The chat page in real headless Chromium against real gunicorn+gevent servers.

Most tests use the scripted host app (chatapp mounted at ``/assistant``), whose replies
are chosen by the message, so the model can be made to say HTML, scripts split across
tokens, Markdown, or fail. One server runs the standalone app with the demo provider.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Locator, Page, Route, expect

from tests.support.apps.scripted import (
    ANSWER,
    FRESH_ANSWER,
    FRESH_THOUGHTS,
    HOSTILE,
    PREFIX,
    RESUMED_CODE,
    RESUMED_PROSE,
    THOUGHTS,
    inject,
    words,
)
from tests.support.browser import TIMEOUT_MS, Tabs
from tests.support.servers import ChatServer, ServerFactory
from tests.support.tcpproxy import TCPProxy

ASSISTANT = '[data-role="assistant"]'
USER = '[data-role="user"]'
THINKING = f"{ASSISTANT} details.thinking"


@pytest.fixture(scope="module")
def scripted(start_server: ServerFactory) -> ChatServer:
    return start_server({"CHATAPP_RETRY_MS": "500"}, app="tests.support.apps.scripted:app", health_path=PREFIX + "/healthz")


@pytest.fixture(scope="module")
def demo(start_server: ServerFactory) -> ChatServer:
    return start_server({"CHATAPP_DEMO_DELAY_MS": "60", "CHATAPP_DEMO_REPLY_WORDS": "40"})


def page_url(server: ChatServer) -> str:
    return server.base_url + PREFIX + "/"


def send(page: Page, text: str) -> None:
    box = page.get_by_label("Message")
    box.fill(text)
    box.press("Enter")


def wait_idle(page: Page) -> None:
    """Wait until no reply is being generated."""
    expect(page.locator(f"{ASSISTANT}[aria-busy]")).to_have_count(0, timeout=TIMEOUT_MS)
    expect(page.get_by_role("button", name="Send")).to_be_visible()


def reply_text(page: Page, index: int = -1) -> str:
    return page.locator(f"{ASSISTANT} .message-content").nth(index).inner_text()


def session_id(page: Page) -> str:
    """The id of the page's chat, as it keeps it."""
    return page.evaluate(
        """() => {
            const base = document.body.dataset.apiBase;
            return localStorage.getItem("chatapp:session:" + new URL(base, location.href).href);
        }"""
    )


def history(page: Page) -> dict:
    """The session's history from the API, fetched by the page with its own cookie."""
    return page.evaluate(
        """async () => {
            const base = document.body.dataset.apiBase;
            const id = localStorage.getItem("chatapp:session:" + new URL(base, location.href).href);
            const response = await fetch(base + "/" + id);
            return await response.json();
        }"""
    )


def record_lengths(page: Page) -> None:
    """Record the text length of the newest reply at every change of the log."""
    page.evaluate(
        """() => {
            window.__lengths = [];
            new MutationObserver(() => {
                const replies = document.querySelectorAll('[data-role="assistant"] .message-content');
                const last = replies[replies.length - 1];
                if (last) window.__lengths.push(last.textContent.length);
            }).observe(document.getElementById("log"), {childList: true, subtree: true, characterData: true});
        }"""
    )


# -- streaming ----------------------------------------------------------------------------


def test_reply_streams_in_progressively(demo: ChatServer, new_tab: Tabs) -> None:
    tab = new_tab(demo.base_url + "/")
    page = tab.page
    record_lengths(page)
    send(page, "hello")
    expect(page.locator(USER)).to_have_text("hello")
    # While generating: a visible state, Send disabled, Stop offered.
    expect(page.locator(f"{ASSISTANT}.is-generating")).to_have_count(1)
    expect(page.get_by_role("button", name="Stop")).to_be_visible()
    assert page.locator("#send").is_disabled()
    wait_idle(page)

    final = reply_text(page)
    lengths = page.evaluate("window.__lengths")
    partial = sorted({n for n in lengths if 0 < n < len(final)})
    assert len(partial) >= 3, lengths
    assert len(final.split()) == 40
    assert history(page)["messages"][-1]["content"] == final
    expect(page.locator("#model")).to_have_text("demo")
    assert tab.console_errors == []
    # Everything came from this server: no CDN, no external fetch.
    assert {urlsplit(url).netloc for url in tab.requests} == {urlsplit(demo.base_url).netloc}


def test_stop_halts_the_text_and_the_next_message_works(scripted: ChatServer, new_tab: Tabs) -> None:
    page = new_tab(page_url(scripted)).page
    send(page, "slow")
    page.wait_for_function("() => (document.querySelector('[data-role=assistant] .message-content').textContent.length > 30)")
    page.get_by_role("button", name="Stop").click()
    wait_idle(page)
    expect(page.locator(f"{ASSISTANT} .message-note")).to_have_text("Stopped")
    stopped = reply_text(page)
    # The reply is cut (the full one has 400 words) and does not grow after `end`.
    assert stopped == "".join(words("word", len(stopped.split())))
    assert 0 < len(stopped.split()) < 400
    page.wait_for_timeout(500)
    assert reply_text(page) == stopped
    assert history(page)["messages"][-1]["content"] == stopped

    send(page, "and now?")
    wait_idle(page)
    assert reply_text(page) == "You said: and now?"
    expect(page.locator(USER)).to_have_count(2)


def test_escape_stops_too(scripted: ChatServer, new_tab: Tabs) -> None:
    page = new_tab(page_url(scripted)).page
    send(page, "slow")
    page.wait_for_function("() => (document.querySelector('[data-role=assistant] .message-content').textContent.length > 10)")
    page.keyboard.press("Escape")
    wait_idle(page)
    expect(page.locator(f"{ASSISTANT} .message-note")).to_have_text("Stopped")


# -- reload -------------------------------------------------------------------------------


def test_reload_restores_the_conversation(scripted: ChatServer, new_tab: Tabs) -> None:
    tab = new_tab(page_url(scripted))
    page = tab.page
    send(page, "markdown")
    wait_idle(page)
    send(page, "second")
    wait_idle(page)
    log_html = page.locator("#log").inner_html()

    page.reload()
    expect(page.locator(f"{USER}, {ASSISTANT}")).to_have_count(4)
    roles = page.locator("#log > article").evaluate_all("els => els.map(e => e.dataset.role)")
    assert roles == ["user", "assistant", "user", "assistant"]
    # The Markdown rendered from history is the very DOM the live stream built.
    strip = re.compile(r' data-message-id="[^"]*"')
    assert strip.sub("", page.locator("#log").inner_html()) == strip.sub("", log_html)
    assert reply_text(page) == "You said: second"
    # A session id of another mount does not leak in: the key names this mount's API.
    keys = page.evaluate("Object.keys(localStorage)")
    assert keys == ["chatapp:session:" + scripted.base_url + PREFIX + "/api/sessions"]
    assert tab.console_errors == []


def test_reload_resumes_a_reply_still_generating(scripted: ChatServer, new_tab: Tabs) -> None:
    page = new_tab(page_url(scripted)).page
    send(page, "medium")
    page.wait_for_function("() => (document.querySelector('[data-role=assistant] .message-content').textContent.length > 12)")
    page.reload()
    # The stream replays the running turn from its start, then goes on live.
    expect(page.locator(f"{ASSISTANT}[aria-busy]")).to_have_count(1)
    expect(page.get_by_role("button", name="Stop")).to_be_visible()
    wait_idle(page)
    expect(page.locator(USER)).to_have_count(1)
    text = reply_text(page)
    assert text == "".join(words("w", 60))
    assert history(page)["messages"][-1]["content"] == text


def test_a_session_gone_from_the_server_starts_fresh(scripted: ChatServer, new_tab: Tabs) -> None:
    page = new_tab(page_url(scripted)).page
    send(page, "hello")
    wait_idle(page)
    key = page.evaluate("Object.keys(localStorage)[0]")
    page.evaluate("key => localStorage.setItem(key, 'AAAAAAAAAAAAAAAAAAAAAA')", key)
    page.reload()
    expect(page.locator("#empty")).to_be_visible()
    assert page.evaluate("Object.keys(localStorage)") == []
    send(page, "again")
    wait_idle(page)
    assert reply_text(page) == "You said: again"


def test_new_chat_starts_an_empty_conversation(scripted: ChatServer, new_tab: Tabs) -> None:
    page = new_tab(page_url(scripted)).page
    send(page, "hello")
    wait_idle(page)
    old = page.evaluate("Object.values(localStorage)")
    page.get_by_role("button", name="New chat").click()
    expect(page.locator("#log > article")).to_have_count(0)
    expect(page.locator("#empty")).to_be_visible()
    expect(page.get_by_label("Message")).to_be_focused()
    send(page, "fresh")
    wait_idle(page)
    assert page.evaluate("Object.values(localStorage)") != old
    page.reload()
    expect(page.locator(USER)).to_have_text(["fresh"])


# -- untrusted model text -----------------------------------------------------------------


def assert_nothing_ran(page: Page) -> None:
    assert page.evaluate("window.__pwned") is None
    log = page.locator("#log")
    assert log.locator("script, img, svg, iframe, object, embed, style, div[onmouseover]").count() == 0
    attributes = log.evaluate(
        "el => [...el.querySelectorAll('*')].flatMap(n => [...n.attributes].map(a => a.name))"
    )
    assert not [name for name in attributes if name.startswith("on")]
    hrefs = log.locator("a").evaluate_all("els => els.map(a => a.getAttribute('href'))")
    assert hrefs == ["https://example.com/a?b=1"]


def test_model_html_and_scripts_render_as_text(scripted: ChatServer, new_tab: Tabs) -> None:
    tab = new_tab(page_url(scripted))
    page = tab.page
    send(page, "hostile")
    wait_idle(page)
    text = reply_text(page)
    # The tags split across tokens arrive whole, as text.
    assert "<script>window.__pwned='script'</script>" in text
    assert "<img src=x onerror=\"window.__pwned='img'\">" in text
    assert "<a href=\"javascript:window.__pwned='href'\">a link</a>" in text
    # Markdown links to javascript: or data: URLs keep their words and lose the URL.
    assert "click me" in text and "(javascript:" not in text and "(data:" not in text
    assert_nothing_ran(page)
    page.locator(f"{ASSISTANT} >> text=hover").hover()
    page.locator(f"{ASSISTANT} >> text=click me").click()
    assert page.evaluate("window.__pwned") is None

    # The same text rendered from history after a reload runs nothing either.
    page.reload()
    expect(page.locator(ASSISTANT)).to_have_count(1)
    assert reply_text(page) == text
    assert_nothing_ran(page)
    assert tab.console_errors == []


def test_user_html_is_text(scripted: ChatServer, new_tab: Tabs) -> None:
    page = new_tab(page_url(scripted)).page
    hostile = "<img src=x onerror=\"window.__pwned='user'\"><b>hi</b>"
    send(page, hostile)
    wait_idle(page)
    expect(page.locator(USER)).to_have_text(hostile)
    assert reply_text(page) == "You said: " + hostile
    assert page.evaluate("window.__pwned") is None
    assert page.locator("#log img, #log b").count() == 0


def test_markdown_from_the_model(scripted: ChatServer, new_tab: Tabs) -> None:
    page = new_tab(page_url(scripted)).page
    send(page, "markdown")
    wait_idle(page)
    reply = page.locator(f"{ASSISTANT} .message-content")
    expect(reply.locator("h3")).to_have_text("Heading")
    expect(reply.locator("strong")).to_have_text("bold")
    expect(reply.locator("em")).to_have_text("italic")
    expect(reply.locator("p > code")).to_have_text("inline <code>")
    expect(reply.locator("ul > li")).to_have_count(2)
    expect(reply.locator("ol > li")).to_have_text(["one", "two"])
    link = reply.locator("a")
    expect(link).to_have_text("link")
    expect(link).to_have_attribute("href", "https://example.com/docs")
    expect(link).to_have_attribute("rel", "noopener noreferrer nofollow")
    expect(reply.locator("pre code")).to_have_text('print("<b>not bold</b>")')
    expect(reply.locator("pre")).to_have_attribute("data-lang", "python")
    expect(reply.locator("blockquote")).to_have_text("a quote")
    expect(reply.get_by_role("button", name="Copy")).to_have_count(1)


# -- the model's thinking -----------------------------------------------------------------


def is_open(block: Locator) -> bool:
    return bool(block.evaluate("el => el.open"))


def record_thinking(page: Page) -> None:
    """Record [thinking length, open, answer length, summary] of the newest reply's
    "Thinking" block at every change of the log."""
    page.evaluate(
        """() => {
            window.__thinking = [];
            new MutationObserver(() => {
                const blocks = document.querySelectorAll('[data-role="assistant"] details.thinking');
                const block = blocks[blocks.length - 1];
                if (!block) return;
                const answer = block.parentNode.querySelector(".message-content");
                window.__thinking.push([
                    block.querySelector(".thinking-body").textContent.length,
                    block.open,
                    answer.textContent.length,
                    block.querySelector("summary").textContent,
                ]);
            }).observe(document.getElementById("log"), {childList: true, subtree: true, characterData: true, attributes: true});
        }"""
    )


def test_thinking_streams_in_then_folds_away_when_the_answer_starts(scripted: ChatServer, new_tab: Tabs) -> None:
    tab = new_tab(page_url(scripted))
    page = tab.page
    record_thinking(page)
    send(page, "think")
    block = page.locator(THINKING)
    expect(block.locator("summary")).to_have_text("Thinking…")
    assert is_open(block)
    wait_idle(page)

    # While the model thought, the block was open, said so, and grew piece by piece.
    states = page.evaluate("window.__thinking")
    thinking = [state for state in states if state[3] == "Thinking…"]
    assert all(state[1] and state[2] == 0 for state in thinking), states
    grown = sorted({state[0] for state in thinking if state[0] > 0})
    assert len(grown) >= 3, states
    # Once the answer came, it was closed and said for how long the model thought.
    assert all(not state[1] for state in states if state[2] > 0), states
    summary = block.locator("summary").inner_text()
    seconds = re.fullmatch(r"Thought for (\d+) s", summary)
    assert seconds and 1 <= int(seconds.group(1)) <= 5, summary
    assert not is_open(block)
    assert reply_text(page) == "It sends Last-Event-ID, and the server replays the rest."
    # The thinking is Markdown, rendered as answers are.
    expect(block.locator(".thinking-body strong")).to_have_text("resume")
    expect(block.locator(".thinking-body li")).to_have_count(2)
    expect(block.locator(".caret")).to_have_count(0)
    message = history(page)["messages"][-1]
    assert message["reasoning"] == "".join(THOUGHTS) and message["content"] == "".join(ANSWER)

    # The summary is a button for the keyboard.
    block.locator("summary").focus()
    page.keyboard.press("Enter")
    assert is_open(block)
    expect(block.locator(".thinking-body")).to_be_visible()
    page.keyboard.press("Enter")
    assert not is_open(block)
    thought = block.locator(".thinking-body").inner_html()

    # From history: the same thinking, closed, for a time no one knows any more.
    page.reload()
    expect(page.locator(ASSISTANT)).to_have_count(1)
    expect(block.locator("summary")).to_have_text("Thought")
    assert not is_open(block)
    assert block.locator(".thinking-body").inner_html() == thought
    assert reply_text(page) == "It sends Last-Event-ID, and the server replays the rest."
    expect(page.locator(f"{ASSISTANT} .message-note")).to_have_count(0)
    assert tab.console_errors == []


def test_thinking_goes_on_live_after_a_reload(scripted: ChatServer, new_tab: Tabs) -> None:
    page = new_tab(page_url(scripted)).page
    send(page, "think on")
    page.wait_for_function("() => (document.querySelector('[data-role=assistant] .thinking-body')?.textContent.length > 60)")
    page.reload()
    # The running turn is replayed from its start: the thinking so far, then live.
    block = page.locator(THINKING)
    expect(block.locator("summary")).to_have_text("Thinking…")
    assert is_open(block)
    expect(page.locator(f"{ASSISTANT}[aria-busy]")).to_have_count(1)
    wait_idle(page)
    # The replay hides how long the model has been thinking.
    expect(block.locator("summary")).to_have_text("Thought")
    assert not is_open(block)
    expect(page.locator(THINKING)).to_have_count(1)
    assert reply_text(page) == "It sends Last-Event-ID, and the server replays the rest."
    assert history(page)["messages"][-1]["reasoning"] == "".join(THOUGHTS * 3)
    # Nothing shown twice: the text is the thinking once, as history renders it.
    live = block.locator(".thinking-body").inner_html()
    page.reload()
    expect(block.locator("summary")).to_have_text("Thought")
    assert block.locator(".thinking-body").inner_html() == live


RAN_OUT = "The model ran out of room while thinking, before it could answer."


def test_running_out_of_room_while_thinking(scripted: ChatServer, new_tab: Tabs) -> None:
    page = new_tab(page_url(scripted)).page
    send(page, "think too long")
    wait_idle(page)
    expect(page.locator(f"{ASSISTANT} .message-note")).to_have_text(re.compile("^" + re.escape(RAN_OUT)))
    expect(page.locator(f"{ASSISTANT} .message-error")).to_have_count(0)
    block = page.locator(THINKING)
    # With no answer to read, the thinking stays open.
    assert is_open(block)
    assert re.fullmatch(r"Thought for (<1|\d+) s", block.locator("summary").inner_text())
    assert page.locator(f"{ASSISTANT} .message-content").text_content() == ""
    expect(page.locator(f"{ASSISTANT} .message-content")).to_be_hidden()
    message = history(page)["messages"][-1]
    assert message["content"] == "" and message["reasoning"] == "".join(THOUGHTS)

    # History keeps no finish reason: after a reload the thinking alone is shown, as
    # an empty answer may also be a reply stopped while the model thought.
    page.reload()
    expect(block.locator("summary")).to_have_text("Thought")
    assert not is_open(block)
    expect(page.locator(f"{ASSISTANT} .message-note")).to_have_count(0)


def test_notes_from_a_history_that_keeps_the_finish_reason(scripted: ChatServer, new_tab: Tabs) -> None:
    """Where history says how a reply ended, the page shows the note the live reply had."""
    page = new_tab(page_url(scripted)).page
    send(page, "think too long")
    wait_idle(page)

    def with_finish_reason(route: Route) -> None:
        response = route.fetch()
        data = response.json()
        for message in data["messages"]:
            if message["role"] == "assistant":
                message.setdefault("finish_reason", "length")
        route.fulfill(response=response, json=data)

    page.route(re.compile(r"/api/sessions/[^/?]+$"), with_finish_reason)
    page.reload()
    expect(page.locator(THINKING).locator("summary")).to_have_text("Thought")
    expect(page.locator(f"{ASSISTANT} .message-note")).to_have_text(re.compile("^" + re.escape(RAN_OUT)))


def test_model_thinking_with_html_and_scripts_is_text(scripted: ChatServer, new_tab: Tabs) -> None:
    tab = new_tab(page_url(scripted))
    page = tab.page
    send(page, "think hostile")
    wait_idle(page)
    block = page.locator(THINKING)
    body = block.locator(".thinking-body")
    text = body.text_content() or ""
    assert "<script>window.__pwned='script'</script>" in text
    assert "<img src=x onerror=\"window.__pwned='img'\">" in text
    assert reply_text(page) == "Nothing ran."
    assert history(page)["messages"][-1]["reasoning"] == "".join(HOSTILE)
    assert_nothing_ran(page)
    block.locator("summary").click()
    body.locator("text=hover").hover()
    body.locator("text=click me").click()
    assert page.evaluate("window.__pwned") is None

    page.reload()
    expect(block).to_have_count(1)
    assert body.text_content() == text
    assert_nothing_ran(page)
    assert tab.console_errors == []


@pytest.mark.parametrize(
    ("message", "text", "note"),
    [
        ("filtered", "Here is the start of a reply that", "The model server's content filter stopped this reply."),
        ("cut short", "".join(words("c", 20)), "Cut short: the reply reached the model's length limit."),
    ],
)
def test_a_reply_the_upstream_ended_early_says_so(scripted: ChatServer, new_tab: Tabs, message: str, text: str, note: str) -> None:
    page = new_tab(page_url(scripted)).page
    send(page, message)
    wait_idle(page)
    expect(page.locator(f"{ASSISTANT} .message-note")).to_have_text(note)
    expect(page.locator(f"{ASSISTANT} .message-error")).to_have_count(0)
    expect(page.locator(THINKING)).to_have_count(0)
    # What came before the end is kept.
    assert reply_text(page) == text
    assert history(page)["messages"][-1]["content"] == text


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_thinking_is_muted_and_fits_a_phone(scripted: ChatServer, new_tab: Tabs, scheme: str) -> None:
    page = new_tab(page_url(scripted), viewport={"width": 390, "height": 844}, color_scheme=scheme).page
    send(page, "think hostile")
    wait_idle(page)
    page.locator(THINKING).locator("summary").click()
    send(page, "think too long")
    wait_idle(page)
    assert page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth") == 0
    colors = page.evaluate(
        """() => {
            const color = (selector) => getComputedStyle(document.querySelector(selector)).color;
            return {
                thinking: color('[data-role="assistant"] .thinking-body'),
                note: color('[data-role="assistant"] .message-note'),
                answer: color('[data-role="assistant"] .message-content'),
            };
        }"""
    )
    # Thinking is in the muted color of notes, not the answer's.
    assert colors["thinking"] == colors["note"] != colors["answer"]
    # The summary is a comfortable target on a touch screen.
    height = page.locator(THINKING).first.locator("summary").evaluate("el => el.getBoundingClientRect().height")
    assert height >= 30


# -- a turn taken over by another worker --------------------------------------------------
#
# One server never takes its own turns over, so the scripted app's test-only route writes
# what the real takeover does into the running turn's log: the dead producer's partial
# reply and the new producer's `reset`, or the `resumed` before a continuation.

STALE_THOUGHT = "Old thinking from a worker that died."
STALE_ANSWER = ["Stale words", " from the worker", " that died."]


def record_reply(page: Page) -> None:
    """Record [thinking text or null, thinking open, answer text, generating, caret in the
    answer, seams] of the newest reply at every change of the log."""
    page.evaluate(
        """() => {
            window.__reply = [];
            new MutationObserver(() => {
                const replies = document.querySelectorAll('[data-role="assistant"]');
                const reply = replies[replies.length - 1];
                if (!reply) return;
                const block = reply.querySelector("details.thinking");
                const answer = reply.querySelector(".message-content");
                window.__reply.push([
                    block ? block.querySelector(".thinking-body").textContent : null,
                    block ? block.open : false,
                    answer.textContent,
                    reply.classList.contains("is-generating"),
                    !!answer.querySelector(".caret"),
                    reply.querySelectorAll(".resumed-marker").length,
                ]);
            }).observe(document.getElementById("log"), {childList: true, subtree: true, characterData: true, attributes: true});
        }"""
    )


@pytest.mark.parametrize("message", ["restarted", "restarted without thinking"])
def test_a_restarted_reply_drops_its_text_and_goes_on_from_empty(scripted: ChatServer, new_tab: Tabs, message: str) -> None:
    page = new_tab(page_url(scripted)).page
    send(page, message)
    expect(page.locator(f"{ASSISTANT}[data-message-id]")).to_have_count(1)
    # The first producer's partial reply, thinking and answer, then it dies.
    inject(scripted.base_url, session_id(page), {"event": "reasoning", "text": STALE_THOUGHT}, *({"event": "token", "text": t} for t in STALE_ANSWER))
    expect(page.locator(f"{ASSISTANT} .message-content")).to_have_text("".join(STALE_ANSWER))
    expect(page.locator(f"{THINKING} .thinking-body")).to_have_text(STALE_THOUGHT)
    record_reply(page)
    # The worker that takes over says it starts again, and generates the reply anew.
    inject(scripted.base_url, session_id(page), {"event": "reset", "reason": "restarted"}, release=True)
    wait_idle(page)

    fresh = "".join(FRESH_ANSWER)
    assert reply_text(page) == fresh
    message_ = history(page)["messages"][-1]
    assert message_["content"] == fresh
    states = page.evaluate("window.__reply")
    # Not a frame of the old text once the reply started over, and never a mix.
    stale = [state[0] == STALE_THOUGHT or "Stale" in state[2] for state in states]
    assert not any(stale), states
    # It stayed a reply being written throughout, with its caret once the answer came.
    assert all(state[3] for state in states[:-1]), states
    assert all(state[4] for state in states if state[3] and state[2]), states
    if message == "restarted":
        # The thinking block was made again: open while the model thought, closed after.
        block = page.locator(THINKING)
        expect(block).to_have_count(1)
        expect(block.locator(".thinking-body")).to_have_text("Starting over. The question is about resuming a stream; the answer is short.")
        assert any(state[0] and state[1] and not state[2] for state in states), states
        assert all(not state[1] for state in states if state[2]), states
        assert re.fullmatch(r"Thought for (<1|\d+) s", block.locator("summary").inner_text())
        assert not is_open(block)
        assert message_["reasoning"] == "".join(FRESH_THOUGHTS)
    else:
        expect(page.locator(THINKING)).to_have_count(0)
        assert all(state[0] is None for state in states), states
        assert "reasoning" not in message_
    expect(page.locator(f"{ASSISTANT} .message-note, {ASSISTANT} .message-error, {ASSISTANT} .resumed-marker")).to_have_count(0)


def test_a_reply_that_started_over_is_replayed_without_its_old_text(scripted: ChatServer, new_tab: Tabs) -> None:
    """After a reload the stream replays the turn from its start, `reset` included."""
    page = new_tab(page_url(scripted)).page
    send(page, "restarted #reload")
    expect(page.locator(f"{ASSISTANT}[data-message-id]")).to_have_count(1)
    chat = session_id(page)
    inject(scripted.base_url, chat, {"event": "reasoning", "text": STALE_THOUGHT}, *({"event": "token", "text": t} for t in STALE_ANSWER))
    inject(scripted.base_url, chat, {"event": "reset", "reason": "restarted"})
    expect(page.locator(f"{ASSISTANT} .message-content")).to_have_text("")
    page.reload()
    # Replayed: the old text came and went; the reply waits for its new text, empty.
    reply = page.locator(f"{ASSISTANT}[aria-busy]")
    expect(reply).to_have_count(1)
    expect(reply.locator(".message-content")).to_have_text("")
    expect(page.locator(THINKING)).to_have_count(0)
    inject(scripted.base_url, chat, release=True)
    wait_idle(page)
    assert reply_text(page) == "".join(FRESH_ANSWER)
    expect(page.locator(f"{THINKING} summary")).to_have_text("Thought")
    expect(page.locator(f"{THINKING} .thinking-body")).to_have_text("Starting over. The question is about resuming a stream; the answer is short.")


@pytest.mark.parametrize(
    ("message", "parts", "layout"),
    [
        # Taken over mid-paragraph: the seam follows that paragraph.
        ("resumed", RESUMED_PROSE, ["p", "p", "seam", "p"]),
        # Taken over mid-code: the seam follows the code block, never inside it.
        ("resumed in code", RESUMED_CODE, ["p", "code-block", "seam", "p"]),
    ],
)
def test_a_resumed_reply_marks_the_seam_once(
    scripted: ChatServer, new_tab: Tabs, message: str, parts: tuple[list[str], list[str]], layout: list[str]
) -> None:
    tab = new_tab(page_url(scripted))
    page = tab.page
    first, rest = "".join(parts[0]), "".join(parts[1])
    send(page, message)
    page.wait_for_function(
        "(end) => document.querySelector('[data-role=assistant] .message-content').textContent.includes(end)",
        arg=parts[0][-1].strip(),
    )
    record_reply(page)
    # Another worker continues the reply after the characters the first one wrote.
    inject(scripted.base_url, session_id(page), {"event": "resumed", "after_chars": len(first)}, release=True)
    expect(page.locator("#announcer")).to_have_text("The reply is being continued by another server.")
    wait_idle(page)

    content = page.locator(f"{ASSISTANT} .message-content")
    seam = page.locator(f"{ASSISTANT} .resumed-marker")
    expect(seam).to_have_count(1)
    expect(seam).to_have_attribute("aria-hidden", "true")
    expect(seam).to_have_attribute("title", "Reply continued by another server")
    children = content.evaluate(
        "el => [...el.children].map(c => c.classList.contains('resumed-marker') ? 'seam' : c.className || c.tagName.toLowerCase())"
    )
    assert children == layout
    # Shown once from when it came, and the reply's text is the two parts, nothing else.
    states = page.evaluate("window.__reply")
    assert [state[5] for state in states] == sorted(state[5] for state in states) and max(s[5] for s in states) == 1, states
    assert history(page)["messages"][-1]["content"] == first + rest
    assert seam.text_content() == ""
    live_text, live_html = reply_text(page), content.evaluate(
        "el => { const copy = el.cloneNode(true); copy.querySelectorAll('.resumed-marker').forEach(m => m.remove()); return copy.innerHTML; }"
    )
    if message == "resumed in code":
        expect(content.locator("pre code")).to_have_text("x = 1\ny = 2")
        expect(content.get_by_role("button", name="Copy")).to_have_count(1)
    # The live reply is the concatenation rendered whole: as history renders it, less the seam.
    page.reload()
    expect(page.locator(ASSISTANT)).to_have_count(1)
    expect(page.locator(f"{ASSISTANT} .resumed-marker")).to_have_count(0)
    assert reply_text(page) == live_text
    assert content.inner_html() == live_html
    assert tab.console_errors == []


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_seam_is_muted_and_fits_a_phone(scripted: ChatServer, new_tab: Tabs, scheme: str) -> None:
    page = new_tab(page_url(scripted), viewport={"width": 390, "height": 844}, color_scheme=scheme).page
    send(page, "resumed #" + scheme)
    page.wait_for_function("() => document.querySelector('[data-role=assistant] .message-content').textContent.includes('cut off in the')")
    inject(scripted.base_url, session_id(page), {"event": "resumed", "after_chars": len("".join(RESUMED_PROSE[0]))}, release=True)
    wait_idle(page)
    assert page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth") == 0
    styles = page.evaluate(
        """() => {
            const seam = document.querySelector('[data-role="assistant"] .resumed-marker');
            const style = getComputedStyle(seam);
            return {
                seam: style.color,
                label: getComputedStyle(seam.firstChild, "::before").content,
                rule: getComputedStyle(seam, "::before").borderTopStyle,
                answer: getComputedStyle(document.querySelector('[data-role="assistant"] .message-content p')).color,
                width: seam.getBoundingClientRect().width,
                column: seam.parentNode.getBoundingClientRect().width,
            };
        }"""
    )
    assert styles["label"] == '"resumed"' and styles["rule"] == "dashed"
    # Muted, not the answer's color; across the reply's column.
    assert styles["seam"] != styles["answer"]
    assert styles["width"] == styles["column"]


# -- errors and the connection ------------------------------------------------------------


def test_a_retryable_server_error_offers_retry(scripted: ChatServer, new_tab: Tabs) -> None:
    page = new_tab(page_url(scripted)).page
    send(page, "flaky")
    wait_idle(page)
    error = page.locator(f"{ASSISTANT} .message-error")
    expect(error).to_have_attribute("role", "alert")
    expect(error).to_contain_text("The model is overloaded; try again.")
    assert reply_text(page) == "Starting"
    error.get_by_role("button", name="Retry").click()
    wait_idle(page)
    assert reply_text(page) == "Starting and finished."
    expect(page.get_by_role("button", name="Retry")).to_have_count(0)
    expect(page.locator(USER)).to_have_count(2)


def test_a_final_server_error_has_no_retry(scripted: ChatServer, new_tab: Tabs) -> None:
    page = new_tab(page_url(scripted)).page
    send(page, "fatal")
    wait_idle(page)
    expect(page.locator(f"{ASSISTANT} .message-error")).to_have_text("The model refused this request.")
    expect(page.get_by_role("button", name="Retry")).to_have_count(0)
    # The conversation goes on.
    send(page, "ok")
    wait_idle(page)
    assert reply_text(page) == "You said: ok"


def test_a_rejected_message_goes_back_to_the_composer(start_server: ServerFactory, new_tab: Tabs) -> None:
    server = start_server({"CHATAPP_MAX_MESSAGE_CHARS": "10"}, app="tests.support.apps.scripted:app", health_path=PREFIX + "/healthz")
    page = new_tab(page_url(server)).page
    send(page, "far too long a message")
    notice = page.locator("#notice")
    expect(notice).to_be_visible()
    expect(notice).to_contain_text("longer than 10 characters")
    expect(page.locator("#log > article")).to_have_count(0)
    expect(page.get_by_label("Message")).to_have_value("far too long a message")
    # 413 is not worth retrying as it is.
    expect(notice.get_by_role("button", name="Retry")).to_be_hidden()


def test_a_dropped_connection_resumes_without_duplicates(scripted: ChatServer, new_tab: Tabs) -> None:
    proxy = TCPProxy(scripted.port)
    try:
        page = new_tab(proxy.base_url + PREFIX + "/").page
        page.evaluate(
            """() => {
                window.__sawReconnecting = false;
                const indicator = document.getElementById("connection");
                new MutationObserver(() => { if (!indicator.hidden) window.__sawReconnecting = true; })
                    .observe(indicator, {attributes: true});
            }"""
        )
        send(page, "resumable")
        page.wait_for_function("() => (document.querySelector('[data-role=assistant] .message-content').textContent.length > 12)")
        assert proxy.drop() >= 1
        page.wait_for_function("() => window.__sawReconnecting")
        wait_idle(page)
        expect(page.locator("#connection")).to_be_hidden()
        text = reply_text(page)
        assert text == "".join(words("r", 120))
        assert history(page)["messages"][-1]["content"] == text
        # EventSource reconnected by itself, naming the last event it had.
        assert re.search(r"(?im)^last-event-id: \d+-\d+\r$", proxy.requests())
    finally:
        proxy.close()


@pytest.mark.parametrize("refused", ["once", "always"])
def test_a_refused_reconnect_loses_and_doubles_nothing(scripted: ChatServer, new_tab: Tabs, refused: str) -> None:
    """EventSource gives up on a refused reconnect: the client follows the reply again from
    its last event, or settles it from history once it is over."""
    proxy = TCPProxy(scripted.port)
    try:
        page = new_tab(proxy.base_url + PREFIX + "/").page
        streams: list[str] = []

        def stream(route: Route) -> None:
            streams.append(route.request.url)
            if len(streams) == 1 or (refused == "once" and len(streams) > 2):
                route.continue_()
            else:
                route.fulfill(status=503, content_type="application/json", body='{"error": {"code": "unavailable", "message": "Later."}}')

        page.route(re.compile(r"/stream(\?|$)"), stream)
        record_lengths(page)
        send(page, "refused " + refused)
        page.wait_for_function("() => (document.querySelector('[data-role=assistant] .message-content').textContent.length > 12)")
        assert proxy.drop() >= 1
        wait_idle(page)
        expect(page.locator("#connection")).to_be_hidden()
        text = reply_text(page)
        assert text == "".join(words({"once": "o", "always": "a"}[refused], 60))
        assert history(page)["messages"][-1]["content"] == text
        expect(page.locator(f"{ASSISTANT} .message-note, {ASSISTANT} .message-error")).to_have_count(0)
        # The text only ever grew: nothing shown twice, then taken back.
        lengths = page.evaluate("window.__lengths")
        assert lengths == sorted(lengths), lengths
        assert len(streams) >= 3
        if refused == "once":
            # After the last event seen, on the stream_url the API gave (with its token).
            assert "last_event_id" in parse_qs(urlsplit(streams[2]).query)
    finally:
        proxy.close()


# -- keyboard, accessibility, layout ------------------------------------------------------


def test_enter_sends_and_shift_enter_adds_a_line(scripted: ChatServer, new_tab: Tabs) -> None:
    page = new_tab(page_url(scripted)).page
    box = page.get_by_label("Message")
    box.click()
    page.keyboard.type("line one")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("line two")
    expect(box).to_have_value("line one\nline two")
    expect(page.locator("#log > article")).to_have_count(0)
    page.keyboard.press("Enter")
    expect(page.locator(USER)).to_have_text("line one\nline two")
    expect(box).to_have_value("")
    wait_idle(page)
    assert reply_text(page) == "You said: line one\nline two"


def test_keyboard_only_use_with_visible_focus(scripted: ChatServer, new_tab: Tabs) -> None:
    page = new_tab(page_url(scripted)).page
    # Tab from the top reaches the skip link, which lands in the message box.
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to the message box")
    expect(skip).to_be_focused()
    assert skip.evaluate("el => getComputedStyle(el).transform") == "none"
    page.keyboard.press("Tab")
    new_chat = page.get_by_role("button", name="New chat")
    expect(new_chat).to_be_focused()
    outline = new_chat.evaluate("el => [getComputedStyle(el).outlineStyle, getComputedStyle(el).outlineWidth]")
    assert outline[0] == "solid" and outline[1] != "0px"
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Enter")
    expect(page.get_by_label("Message")).to_be_focused()
    page.keyboard.type("hello")
    page.keyboard.press("Enter")
    wait_idle(page)
    assert reply_text(page) == "You said: hello"
    expect(page.get_by_label("Message")).to_be_focused()


def test_accessible_structure(scripted: ChatServer, new_tab: Tabs) -> None:
    page = new_tab(page_url(scripted)).page
    log = page.locator("#log")
    expect(log).to_have_attribute("aria-live", "polite")
    expect(log).to_have_attribute("role", "log")
    send(page, "slow")
    stop = page.get_by_role("button", name="Stop")
    expect(stop).to_be_visible()
    # The reply is marked busy while it grows, so screen readers read it whole.
    expect(page.locator(ASSISTANT)).to_have_attribute("aria-busy", "true")
    stop.click()
    wait_idle(page)
    expect(page.locator(ASSISTANT)).not_to_have_attribute("aria-busy", "true")
    expect(page.get_by_role("button", name="Stop")).to_be_hidden()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_phone_width_has_no_horizontal_scroll(scripted: ChatServer, new_tab: Tabs, scheme: str) -> None:
    page = new_tab(page_url(scripted), viewport={"width": 390, "height": 844}, color_scheme=scheme).page

    def overflow() -> int:
        return page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")

    assert overflow() == 0
    for message in ("wide", "markdown", "x" * 400):
        send(page, message)
        wait_idle(page)
        assert overflow() == 0, message
    # The code block scrolls inside itself instead.
    pre = page.locator("pre").first
    assert pre.evaluate("el => el.scrollWidth > el.clientWidth")


def test_themes_follow_the_color_scheme(scripted: ChatServer, new_tab: Tabs) -> None:
    backgrounds = {}
    for scheme in ("light", "dark"):
        page = new_tab(page_url(scripted), color_scheme=scheme).page
        backgrounds[scheme] = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert backgrounds["light"] == "rgb(247, 247, 245)"
    assert backgrounds["dark"] == "rgb(24, 24, 27)"


def test_page_and_assets_are_under_the_mount_point(scripted: ChatServer, new_tab: Tabs) -> None:
    tab = new_tab(page_url(scripted))
    send(tab.page, "hello")
    wait_idle(tab.page)
    prefix = scripted.base_url + PREFIX + "/"
    assert tab.requests and all(url.startswith(prefix) for url in tab.requests), tab.requests
    assert any("/static/chatapp.css" in url for url in tab.requests)
    assert tab.console_errors == []
