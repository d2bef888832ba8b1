"""A host site for page tests: chatapp mounted at ``/assistant`` with scripted replies.

``gunicorn tests.support.apps.scripted:app``. The reply to a message is chosen by its text, so
a test can make the model say exactly what it needs to (HTML, a ``<script>`` tag split
across tokens, Markdown, an error), through the real stream and the real page.
The host's own page at ``/`` includes chatapp's client script, as a host site would.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator

from flask import Flask, render_template_string

from chatapp import ChatApp
from chatapp.errors import ProviderError
from chatapp.providers.base import ChatRequest, Completion, Provider

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
    "wide": (["A long word: " + "x" * 300 + "\n\n```\n" + "y = 1; " * 60 + "\n```\n\n" + "https://example.com/" + "z" * 200], 0.01),
    "long": ([f"Paragraph {i}: " + "lorem ipsum dolor sit amet " * 6 + "\n\n" for i in range(12)], 0.01),
}

#: What a model talked into printing delimiters gives: 32,000 characters of one pattern,
#: in pieces of 1,000, each an "adversarial <name>" message.
ADVERSARIAL = {"emphasis": "*a ", "underscores": "_a ", "brackets": "[a ", "links": "[a](", "backticks": "``a `", "tildes": "~~a "}
for _name, _unit in ADVERSARIAL.items():
    _text = (_unit * (32_000 // len(_unit) + 1))[:32_000]
    SCRIPTS[f"adversarial {_name}"] = ([_text[i : i + 1000] for i in range(0, len(_text), 1000)], 0.01)


class ScriptedProvider(Provider):
    name = "scripted"
    default_model = "scripted"

    def stream(self, request: ChatRequest, cancelled: threading.Event) -> Iterator[str | Completion]:
        text = request.messages[-1].content
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
</body></html>
"""


def create_app() -> Flask:
    app = Flask(__name__, static_folder=None)
    app.secret_key = "tests-only-key"
    ChatApp(app, url_prefix=PREFIX, provider=ScriptedProvider())

    @app.get("/")
    def home() -> str:
        return render_template_string(HOST_PAGE)

    return app


app = create_app()
