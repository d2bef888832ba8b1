"""A host site for page tests: chatapp mounted at ``/assistant`` with scripted replies.

``gunicorn tests.support.apps.scripted:app``. The reply to a message is chosen by its text, so
a test can make the model say exactly what it needs to (HTML, a ``<script>`` tag split
across tokens, Markdown, an error, its thinking, an unusual ending), through the real
stream and the real page.
The host's own page at ``/`` includes chatapp's client scripts, as a host site would.

Test-only, for what a single server never does by itself (a turn taken over by another
worker): ``POST /_test/sessions/<id>/events`` publishes events into the session's running
turn through the app's broker, and the scripted replies of :data:`TAKEOVERS` wait at each
:data:`HOLD` until that route releases them. So a test writes a dead producer's partial
reply and the ``reset`` or ``resumed`` of the worker that takes over, in the order the
real takeover does, and the page reads them from the real stream. This app always uses the
embedded broker, which remembers each session's running turn for the route.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
from flask import Flask, render_template_string
from flask import request as http_request

from chatapp import ChatApp, events
from chatapp.broker.base import Draft, TurnHandle
from chatapp.broker.memory import MemoryBroker
from chatapp.errors import ProviderError
from chatapp.providers.base import ChatRequest, Completion, Provider, Reasoning, StreamItem

PREFIX = "/assistant"

def words(stem: str, count: int) -> list[str]:
    """``["w0", " w1", " w2", ...]``: numbered words, one token each."""
    return [f"{' ' if i else ''}{stem}{i}" for i in range(count)]


#: A script in pieces, one browser ``token`` event each; tags are split on purpose.
HOSTILE = [
    "Here is <b>bold</b> and <img src=x onerror=\"window.__pwned='img'\"> an image. ",
    "<scr",
    "ipt>window.__pwned='script'</scr",
    "ipt> and <a href=\"javascript:window.__pwned='href'\">a link</a>",
    " and [click me](javascript:window.__pwned='md') and [data](data:text/html,<script>x</script>)",
    " and <div onmouseover=\"window.__pwned='div'\">hover</div>",
    " <svg><script>window.__pwned='svg'</script></svg>",
    " and [a safe link](https://example.com/a?b=1) done.",
]

MARKDOWN = """# Heading

Some **bold**, *italic* and `inline <code>` text.

- first item
- second with a [link](https://example.com/docs)

1. one
2. two

```python
print("<b>not bold</b>")
```

> a quote
"""

TOUR = """Flask can stream a response from a **generator**: each `yield` goes out as it is made.

```python
@app.get("/stream")
def stream():
    def events():
        for word in reply():
            yield f"data: {word}\\n\\n"
    return Response(events(), mimetype="text/event-stream")
```

A few things make it work in production:

1. Run it under **gunicorn with gevent workers**, so each open stream costs a greenlet, not a thread.
2. Send `X-Accel-Buffering: no` so a proxy does not hold the bytes back.
3. Give every event an `id`, so a browser that reconnects resumes where it stopped.

See the [EventSource docs](https://developer.mozilla.org/docs/Web/API/EventSource) for the browser side.
"""

#: Text whose UTF-8 is mostly multi-byte, so network chunks split characters.
MULTIBYTE = [f"{i}: Grüße, naïve café; 日本語のテキスト; 😀🎉👩‍💻; ∑∞≠\r\nΩ\rπ\n" for i in range(40)]

#: Replies by message text; anything else is echoed back.
SCRIPTS: dict[str, tuple[list[str], float]] = {
    "hostile": (HOSTILE, 0.05),
    # Split so that fences and markers arrive across several tokens.
    "markdown": ([MARKDOWN[i : i + 7] for i in range(0, len(MARKDOWN), 7)], 0.01),
    "How do I stream a response from Flask?": (re.findall(r"\S+\s*", TOUR), 0.02),
    "medium": (words("w", 60), 0.05),
    # Long enough that a connection cut soon after the start always lands mid-reply.
    # Each test that cuts one asks its own: the cache would replay a known reply at once.
    "resumable": (words("r", 120), 0.05),
    "refused once": (words("o", 60), 0.05),
    "refused always": (words("a", 60), 0.05),
    "slow": (words("word", 400), 0.05),
    # Long enough for ten tabs to join and for the leading one to leave mid-reply.
    "shared": (words("s", 300), 0.03),
    # Two-, three- and four-byte characters, and lines split by CR, LF and CRLF in JSON.
    "multibyte": (MULTIBYTE, 0.005),
    "wide": (["A long word: " + "x" * 300 + "\n\n```\n" + "y = 1; " * 60 + "\n```\n\n" + "https://example.com/" + "z" * 200], 0.01),
    "long": ([f"Paragraph {i}: " + "lorem ipsum dolor sit amet " * 6 + "\n\n" for i in range(12)], 0.01),
}

#: What a model talked into printing delimiters gives: 32,000 characters of one pattern,
#: in pieces of 1,000, each an "adversarial <name>" message.
ADVERSARIAL = {"emphasis": "*a ", "underscores": "_a ", "brackets": "[a ", "links": "[a](", "backticks": "``a `", "tildes": "~~a "}
for _name, _unit in ADVERSARIAL.items():
    _text = (_unit * (32_000 // len(_unit) + 1))[:32_000]
    SCRIPTS[f"adversarial {_name}"] = ([_text[i : i + 1000] for i in range(0, len(_text), 1000)], 0.01)


#: The thinking of the reasoning replies, one ``reasoning`` event each.
THOUGHTS = [
    "The user asks how Server-Sent Events **resume**. ",
    "A browser's `EventSource` reconnects by itself, ",
    "sending the id of the last event it saw in `Last-Event-ID`.\n\n",
    "So the server must:\n\n- give every event an `id`\n",
    "- replay what came after that id\n\n",
    "A short answer will do.",
]
ANSWER = ["It ", "sends ", "`Last-Event-ID`, ", "and the server ", "replays the rest."]


def thinking(thoughts: list[str], answer: list[str], finish_reason: str = "stop") -> list[StreamItem]:
    """A reasoning model's reply: its thinking, then its answer, then how it ended."""
    return [*(Reasoning(thought) for thought in thoughts), *answer, Completion(finish_reason, None)]


#: Replies of reasoning models and unusual endings, by message text: every item is
#: yielded after the delay (answer text, ``Reasoning``, and last a ``Completion``).
#: Each live "think..." has its own text, as the cache replays a known reply at once.
REASONED: dict[str, tuple[list[StreamItem], float]] = {
    # Thinking slow enough to be watched, then the answer.
    "think": (thinking(THOUGHTS, ANSWER), 0.4),
    "think on": (thinking(THOUGHTS * 3, ANSWER), 0.3),
    # The model spent its whole budget thinking: no answer at all.
    "think too long": (thinking(THOUGHTS, [], "length"), 0.05),
    # A script in the thinking, split as in HOSTILE; the answer is harmless.
    "think hostile": (thinking(HOSTILE, ["Nothing", " ran."]), 0.02),
    # Many small thoughts, so a connection cut soon after the start lands mid-thinking.
    "think dropped": (thinking(words("t", 80), ["Done", " thinking."]), 0.05),
    "think refused": (thinking(words("t", 80), ["Done", " thinking."]), 0.05),
    # The upstream's filter stopped the reply; what came before it is kept.
    "filtered": (["Here is the start", " of a reply that", Completion("content_filter", None)], 0.05),
    # The upstream's length limit cut the answer.
    "cut short": ([*words("c", 20), Completion("length", None)], 0.02),
}


class _Hold:
    def __repr__(self) -> str:
        return "HOLD"


#: In a script of :data:`TAKEOVERS`: wait here until the test-only route releases the turn.
HOLD = _Hold()
#: How long a HOLD waits before the reply fails (a test that never released it).
HOLD_SECONDS = 30.0

#: What the worker that takes a turn over generates again, after the ``reset``.
FRESH_THOUGHTS = ["Starting over. ", "The question is about **resuming** a stream; ", "the answer is short."]
FRESH_ANSWER = ["A fresh", " reply,", " from the", " worker that", " took over."]

#: A reply continued by another worker after its first part (``resumed``): the first part
#: ends in the middle of a paragraph, or in the middle of a code block.
RESUMED_PROSE = (
    ["The first server", " wrote this paragraph.\n\n", "And it began this", " one, cut off in the"],
    [" middle; another", " server finished it.\n\n", "Then it wrote", " a last paragraph."],
)
RESUMED_CODE = (
    ["Before the code:\n\n", "```python\n", "x = 1\n"],
    ["y = 2\n", "```\n\n", "After", " the code."],
)

#: Replies of turns that other workers take over, by message text; each item after the
#: delay. The test publishes the rest through the test-only route: for the ``restarted``
#: ones, the dead producer's partial reply, then ``reset`` (releasing the HOLD); for the
#: ``resumed`` ones, ``resumed`` after the first part (releasing the HOLD). A message may
#: add `` #<anything>`` to the name, so that each test asks its own: the cache would
#: replay a reply it knows at once, with no turn to take over.
TAKEOVERS: dict[str, tuple[list[StreamItem | _Hold], float]] = {
    "restarted": ([HOLD, *(Reasoning(t) for t in FRESH_THOUGHTS), *FRESH_ANSWER, Completion()], 0.1),
    "restarted without thinking": ([HOLD, *FRESH_ANSWER, Completion()], 0.1),
    "resumed": ([*RESUMED_PROSE[0], HOLD, *RESUMED_PROSE[1], Completion()], 0.05),
    "resumed in code": ([*RESUMED_CODE[0], HOLD, *RESUMED_CODE[1], Completion()], 0.05),
    # Started over, then continued by a third worker: long enough to cut the connection
    # in each part.
    "taken over twice": ([HOLD, *words("f", 30), HOLD, *words("g", 30), Completion()], 0.04),
}


class _Holds:
    """Where scripted replies wait for the test-only route, by their user message's id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._gates: dict[str, threading.Semaphore] = {}

    def _gate(self, key: str) -> threading.Semaphore:
        with self._lock:
            return self._gates.setdefault(key, threading.Semaphore(0))

    def release(self, key: str) -> None:
        """Let the reply go on past its next HOLD (or the one it is waiting at)."""
        self._gate(key).release()

    def wait(self, key: str, cancelled: threading.Event) -> bool:
        """Wait at a HOLD until released; False when the turn was cancelled meanwhile."""
        gate, deadline = self._gate(key), time.monotonic() + HOLD_SECONDS
        while not gate.acquire(timeout=0.05):
            if cancelled.is_set():
                return False
            if time.monotonic() > deadline:
                raise ProviderError("The test never released this reply.", code="upstream_timeout", retryable=False)
        return True


class ScriptedProvider(Provider):
    name = "scripted"
    default_model = "scripted"

    def __init__(self) -> None:
        self.holds = _Holds()

    def stream(self, request: ChatRequest, cancelled: threading.Event) -> Iterator[StreamItem]:
        text = request.messages[-1].content
        if text.partition(" #")[0] in TAKEOVERS:
            script, pause = TAKEOVERS[text.partition(" #")[0]]
            for item in script:
                if isinstance(item, _Hold):
                    if not self.holds.wait(request.messages[-1].id, cancelled):
                        return
                elif cancelled.wait(pause):
                    return
                else:
                    yield item
            return
        if text in ("flaky", "fatal"):
            # "flaky" fails the first time it is asked in a conversation, so Retry succeeds.
            asked = sum(1 for m in request.messages if m.role == "user" and m.content == text)
            yield "Starting"
            if text == "fatal":
                raise ProviderError("The model refused this request.", code="upstream_rejected", retryable=False)
            if asked == 1:
                raise ProviderError("The model is overloaded; try again.", code="upstream_error", retryable=True)
            yield " and finished."
            return
        if text in REASONED:
            items, pause = REASONED[text]
            for item in items:
                if cancelled.wait(pause):
                    return
                yield item
            return
        pieces, delay = SCRIPTS.get(text, (["You said: ", text], 0.02))
        for piece in pieces:
            if cancelled.wait(delay):
                return
            yield piece
        yield Completion("stop", None)


HOST_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Host site</title></head>
<body data-api-base="{{ url_for('chatapp.create_session') }}">
<h1>A host page</h1>
<script src="{{ url_for('chatapp.static', filename='chatapp.js') }}"></script>
<script src="{{ url_for('chatapp.static', filename='tabshare.js') }}"></script>
<script src="{{ url_for('chatapp.static', filename='ssestream.js') }}"></script>
</body></html>
"""


class RunningTurns(MemoryBroker):
    """The embedded broker, remembering each session's running turn for the test-only route."""

    def __init__(self) -> None:
        super().__init__()
        self.running: dict[str, TurnHandle] = {}

    def begin_turn(self, session_id: str, text: str, **limits: Any) -> TurnHandle:
        turn = super().begin_turn(session_id, text, **limits)
        self.running[session_id] = turn
        return turn

    def finish_turn(self, turn: TurnHandle, reply: str, events: Sequence[Draft], *, reasoning: str = "") -> None:
        super().finish_turn(turn, reply, events, reasoning=reasoning)
        if self.running.get(turn.session_id) is turn:
            del self.running[turn.session_id]


#: The test-only route: POST {"events": [{"event": name, ...fields}], "release": bool}.
INJECT_PATH = "/_test/sessions/{}/events"


def inject(base_url: str, session_id: str, *specs: dict[str, Any], release: bool = False) -> None:
    """From a test: publish ``specs`` (``{"event": "reset", "reason": ...}``, ...) into the
    session's running turn on the scripted app at ``base_url``; ``release`` its HOLD."""
    url = base_url + INJECT_PATH.format(session_id)
    response = httpx.post(url, json={"events": list(specs), "release": release}, timeout=10)
    assert response.status_code == 204, response.text


def _draft(turn: TurnHandle, spec: dict[str, Any]) -> Draft:
    """An event of the turn built by chatapp's own vocabulary, as a producer would."""
    name = spec["event"]
    if name == events.TOKEN:
        return events.token(spec["text"])
    if name == events.REASONING:
        return events.reasoning(spec["text"])
    if name == events.RESET:
        return events.reset(turn.message_id, spec.get("reason", "restarted"))
    if name == events.RESUMED:
        return events.resumed(turn.message_id, int(spec["after_chars"]))
    raise ValueError(f"not an event a test may inject: {name!r}")


def create_app() -> Flask:
    app = Flask(__name__, static_folder=None)
    app.secret_key = "tests-only-key"
    provider, broker = ScriptedProvider(), RunningTurns()
    ChatApp(app, url_prefix=PREFIX, provider=provider, broker=broker)

    @app.get("/")
    def home() -> str:
        return render_template_string(HOST_PAGE)

    @app.post(INJECT_PATH.format("<session_id>"))
    def inject_events(session_id: str) -> tuple[str, int]:
        """Test-only (see the module's docstring): publish events into the running turn,
        then let its scripted reply go on past a HOLD when ``release`` is true."""
        body = http_request.get_json()
        turn = broker.running.get(session_id)
        if turn is None:
            return "no turn is running", 409
        broker.publish(turn, [_draft(turn, spec) for spec in body.get("events", [])])
        if body.get("release"):
            provider.holds.release(turn.history[-1].id)
        return "", 204

    return app


app = create_app()
