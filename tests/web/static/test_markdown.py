"""static/markdown.js and codeblocks.js in headless Chromium: Markdown in, exact DOM out,
nothing unsafe; code blocks with their language and a Copy button."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from playwright.sync_api import Browser, Page, expect

from tests.support.browser import Tabs
from tests.support.servers import ROOT

STATIC = ROOT / "chatapp" / "web" / "static"
LINK = 'rel="noopener noreferrer nofollow" target="_blank"'


@pytest.fixture(scope="module")
def page(browser: Browser) -> Iterator[Page]:
    tabs = Tabs(browser)
    tab = tabs("about:blank")
    for script in ("markdown.js", "codeblocks.js"):
        tab.page.add_script_tag(path=str(STATIC / script))
    yield tab.page
    assert tabs.close() == []


def render(page: Page, text: str) -> str:
    return page.evaluate(
        "text => { const div = document.createElement('div'); div.appendChild(ChatAppMarkdown.render(text)); return div.innerHTML; }",
        text,
    )


CASES = [
    # inline
    ("plain", "<p>plain</p>"),
    ("**a** and *b* and __c__ and _d_", "<p><strong>a</strong> and <em>b</em> and <strong>c</strong> and <em>d</em></p>"),
    ("~~gone~~", "<p><del>gone</del></p>"),
    ("***both***", "<p><strong><em>both</em></strong></p>"),
    ("2 * 3 * 4", "<p>2 * 3 * 4</p>"),
    ("snake_case_name", "<p>snake_case_name</p>"),
    ("\\*not emphasis\\*", "<p>*not emphasis*</p>"),
    ("an *unclosed emphasis", "<p>an *unclosed emphasis</p>"),
    ("`<b>code</b>`", "<p><code>&lt;b&gt;code&lt;/b&gt;</code></p>"),
    ("`` a ` b ``", "<p><code>a ` b</code></p>"),
    ("`unclosed", "<p>`unclosed</p>"),
    ("a\nb", "<p>a<br>b</p>"),
    ("a &amp; b", "<p>a &amp;amp; b</p>"),
    # links: only http, https and mailto, absolute
    ("[x](https://a.example/?q=1&r=2)", f'<p><a href="https://a.example/?q=1&amp;r=2" {LINK}>x</a></p>'),
    ("[x](http://a.example \"title\")", f'<p><a href="http://a.example/" {LINK}>x</a></p>'),
    ("[me](mailto:me@a.example)", f'<p><a href="mailto:me@a.example" {LINK}>me</a></p>'),
    ("[a **b**](https://a.example)", f'<p><a href="https://a.example/" {LINK}>a <strong>b</strong></a></p>'),
    ("[x](javascript:alert(1))", "<p>x</p>"),
    ("[x](JaVaScRiPt:alert(1))", "<p>x</p>"),
    ("[x]( javascript:alert(1) )", "<p>x</p>"),
    ("[x](java\tscript:alert(1))", "<p>x</p>"),
    ("[x](vbscript:msgbox)", "<p>x</p>"),
    ("[x](data:text/html,<script>alert(1)</script>)", "<p>x</p>"),
    ("[x](/relative/path)", "<p>x</p>"),
    ("[x](//a.example/protocol-relative)", "<p>x</p>"),
    ("[x](<https://a.example/b c>)", f'<p><a href="https://a.example/b%20c" {LINK}>x</a></p>'),
    ("<https://a.example/x>", f'<p><a href="https://a.example/x" {LINK}>https://a.example/x</a></p>'),
    ("<javascript:alert(1)>", "<p>&lt;javascript:alert(1)&gt;</p>"),
    ("see https://a.example/x.", f'<p>see <a href="https://a.example/x" {LINK}>https://a.example/x</a>.</p>'),
    ("(https://a.example/wiki/A_(b))", f'<p>(<a href="https://a.example/wiki/A_(b)" {LINK}>https://a.example/wiki/A_(b)</a>)</p>'),
    ("[a [nested] label](https://a.example)", f'<p><a href="https://a.example/" {LINK}>a [nested] label</a></p>'),
    ("[no destination]", "<p>[no destination]</p>"),
    # HTML is text
    ("<script>alert(1)</script>", "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>"),
    ('<img src=x onerror="alert(1)">', '<p>&lt;img src=x onerror="alert(1)"&gt;</p>'),
    # blocks
    ("# Title", "<h3>Title</h3>"),
    ("### Three ###", "<h5>Three</h5>"),
    ("#hashtag", "<p>#hashtag</p>"),
    ("a\n\nb", "<p>a</p><p>b</p>"),
    ("---", "<hr>"),
    ("> quoted\n> more", "<blockquote><p>quoted<br>more</p></blockquote>"),
    ("- a\n- b", "<ul><li>a</li><li>b</li></ul>"),
    ("* a\n* b", "<ul><li>a</li><li>b</li></ul>"),
    ("1. a\n2. b", "<ol><li>a</li><li>b</li></ol>"),
    ("3. c\n4. d", '<ol start="3"><li>c</li><li>d</li></ol>'),
    ("- a\n  - b\n- c", "<ul><li>a<ul><li>b</li></ul></li><li>c</li></ul>"),
    ("- a\n\n- b", "<ul><li><p>a</p></li><li><p>b</p></li></ul>"),
    ("- a\ncontinued", "<ul><li>a<br>continued</li></ul>"),
    ("text\n- item", "<p>text</p><ul><li>item</li></ul>"),
    ("- a\n\nafter", "<ul><li>a</li></ul><p>after</p>"),
    ("-", "<p>-</p>"),
    ("```js\nif (a < b) {}\n```", '<pre data-lang="js"><code class="language-js">if (a &lt; b) {}</code></pre>'),
    ("```\n<b>x</b>\n\n**y**\n```", "<pre><code>&lt;b&gt;x&lt;/b&gt;\n\n**y**</code></pre>"),
    ("```py\nstill streaming", '<pre data-lang="py"><code class="language-py">still streaming</code></pre>'),
    ('```"><img src=x>\nx\n```', "<pre><code>x</code></pre>"),
    ("~~~\ntilde\n~~~", "<pre><code>tilde</code></pre>"),
    ("- item\n\n  ```\n  code\n  ```", "<ul><li><p>item</p><pre><code>code</code></pre></li></ul>"),
]


@pytest.mark.parametrize(("text", "html"), CASES)
def test_render(page: Page, text: str, html: str) -> None:
    assert render(page, text) == html


def test_deep_nesting_is_bounded(page: Page) -> None:
    html = render(page, "> " * 200 + "deep")
    assert html.count("<blockquote>") == 8
    assert "deep" in html
    html = render(page, "*" * 50 + "x" + "*" * 50)
    assert "x" in html


ALLOWED = {
    "P": set(), "BR": set(), "STRONG": set(), "EM": set(), "DEL": set(), "CODE": {"class"},
    "PRE": {"data-lang"}, "A": {"href", "rel", "target"}, "UL": set(), "OL": {"start"}, "LI": set(),
    "BLOCKQUOTE": set(), "HR": set(), "H3": set(), "H4": set(), "H5": set(), "H6": set(),
}

PIECES = st.sampled_from(
    [
        "<", ">", "<script>", "</script>", "<img src=x onerror=alert(1)>", "<a href=\"javascript:x\">",
        "[", "]", "(", ")", "](", "javascript:", "JAVASCRIPT:", "data:text/html,", "https://a.example/",
        "mailto:a@b.example", "*", "**", "_", "~~", "`", "```", "```js", "\n", "\n\n", "- ", "1. ",
        "> ", "# ", "---", " ", "\t", "\\", "\"", "'", "=", "&amp;", "on", "click", "text",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(PIECES, max_size=40).map("".join))
def test_any_text_renders_only_safe_nodes(page: Page, text: str) -> None:
    nodes = page.evaluate(
        """text => {
            const div = document.createElement('div');
            div.appendChild(ChatAppMarkdown.render(text));
            return [...div.querySelectorAll('*')].map(n => [n.tagName, [...n.attributes].map(a => [a.name, a.value])]);
        }""",
        text,
    )
    for tag, attributes in nodes:
        assert tag in ALLOWED, (text, tag)
        for name, value in attributes:
            assert name in ALLOWED[tag], (text, tag, name)
            if name == "href":
                assert re.match(r"^(https?://|mailto:)", value), (text, value)


# -- code blocks ------------------------------------------------------------------------


def decorated(page: Page, text: str) -> str:
    return page.evaluate(
        """text => {
            const div = document.createElement('div');
            div.appendChild(ChatAppCodeBlocks.decorate(ChatAppMarkdown.render(text)));
            return div.innerHTML;
        }""",
        text,
    )


def bar(label: str) -> str:
    return f'<div class="code-bar"><span>{label}</span><button type="button" class="code-copy">Copy</button></div>'


CODE_CASES = [
    (
        "```python\nprint(1)\n```",
        f'<div class="code-block">{bar("python")}<pre data-lang="python"><code class="language-python">print(1)</code></pre></div>',
    ),
    ("```\n<b>x</b>\n```", f'<div class="code-block">{bar("code")}<pre><code>&lt;b&gt;x&lt;/b&gt;</code></pre></div>'),
    # A language that is not a plain name is no label either.
    ('```"><img src=x>\nx\n```', f'<div class="code-block">{bar("code")}<pre><code>x</code></pre></div>'),
    (
        "a\n\n```js\n1\n```\n\n~~~\n2\n~~~",
        f'<p>a</p><div class="code-block">{bar("js")}<pre data-lang="js"><code class="language-js">1</code></pre></div>'
        f'<div class="code-block">{bar("code")}<pre><code>2</code></pre></div>',
    ),
    (
        "- item\n\n  ```\n  code\n  ```",
        f'<ul><li><p>item</p><div class="code-block">{bar("code")}<pre><code>code</code></pre></div></li></ul>',
    ),
    ("`inline` only", "<p><code>inline</code> only</p>"),
]


@pytest.mark.parametrize(("text", "html"), CODE_CASES)
def test_code_blocks_get_a_language_and_a_copy_button(page: Page, text: str, html: str) -> None:
    assert decorated(page, text) == html


def test_decorating_twice_changes_nothing(page: Page) -> None:
    html = page.evaluate(
        """() => {
            const div = document.createElement('div');
            div.appendChild(ChatAppMarkdown.render('```py\\nx\\n```'));
            ChatAppCodeBlocks.decorate(div);
            ChatAppCodeBlocks.decorate(div);
            return div.innerHTML;
        }"""
    )
    assert html == f'<div class="code-block">{bar("py")}<pre data-lang="py"><code class="language-py">x</code></pre></div>'


def code_page(new_tab: Tabs, **context_options: object) -> Page:
    """A page on http://localhost (a secure context, so the clipboard API exists) with a code block."""
    page = new_tab("about:blank", **context_options).page
    page.route("http://localhost/", lambda route: route.fulfill(content_type="text/html", body="<!doctype html><title>code</title>"))
    page.goto("http://localhost/")
    for script in ("markdown.js", "codeblocks.js"):
        page.add_script_tag(path=str(STATIC / script))
    page.evaluate(
        """() => document.body.appendChild(
            ChatAppCodeBlocks.decorate(ChatAppMarkdown.render('```js\\nif (a < b) {}\\n```\\n\\n```\\nother\\n```'))
        )"""
    )
    return page


def test_copy_puts_the_code_on_the_clipboard(new_tab: Tabs) -> None:
    page = code_page(new_tab, permissions=["clipboard-read", "clipboard-write"])
    button = page.get_by_role("button", name="Copy").first
    button.click()
    expect(page.locator(".code-copy").first).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == "if (a < b) {}"
    # The label comes back, and the other block's button never changed.
    expect(page.locator(".code-copy")).to_have_text(["Copy", "Copy"])


def test_copy_selects_the_code_outside_a_secure_context(page: Page) -> None:
    page.evaluate(
        "() => document.body.replaceChildren(ChatAppCodeBlocks.decorate(ChatAppMarkdown.render('```\\nselect me\\n```')))"
    )
    assert page.evaluate("isSecureContext") is False
    page.locator(".code-copy").click()
    expect(page.locator(".code-copy")).to_have_text("Selected")
    assert page.evaluate("getSelection().toString()") == "select me"
    expect(page.locator(".code-copy")).to_have_text("Copy")
    page.evaluate("() => document.body.replaceChildren()")


def test_scripts_never_write_html() -> None:
    """The page's scripts build DOM nodes only: no HTML parsing of any text."""
    for script in sorted(STATIC.glob("*.js")):
        source = script.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "DOMParser"):
            assert sink not in source, f"{script.name} uses {sink}"
