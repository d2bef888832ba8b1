"""The page's bounds in headless Chromium: it runs under a strict Content-Security-Policy
with no violation, loads older history a page at a time as the reader scrolls up, and
renders adversarial Markdown (32,000 characters of one delimiter) without a long task."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.support.apps.scripted import ADVERSARIAL, PREFIX
from tests.support.browser import TIMEOUT_MS, Tabs
from tests.support.servers import ChatServer, ServerFactory

ASSISTANT = '[data-role="assistant"]'
USER = '[data-role="user"]'

#: Collects CSP violations and long tasks from the first script on.
WATCH = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__violations.push(event.violatedDirective + " " + event.blockedURI);
});
window.__longtasks = [];
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) window.__longtasks.push(entry.duration);
}).observe({type: "longtask", buffered: true});
"""


@pytest.fixture(scope="module")
def demo(start_server: ServerFactory) -> ChatServer:
    return start_server({"CHATAPP_DEMO_DELAY_MS": "5", "CHATAPP_DEMO_REPLY_WORDS": "30"})


@pytest.fixture(scope="module")
def scripted(start_server: ServerFactory) -> ChatServer:
    return start_server(
        {"CHATAPP_HISTORY_PAGE_MESSAGES": "4", "CHATAPP_RATE_LIMIT": "1000/minute"},
        app="tests.support.apps.scripted:app",
        health_path=PREFIX + "/healthz",
    )


def watched(new_tab: Tabs, url: str) -> Page:
    page = new_tab("about:blank").page
    page.add_init_script(WATCH)
    page.goto(url)
    return page


def send(page: Page, text: str) -> None:
    box = page.get_by_label("Message")
    box.fill(text)
    box.press("Enter")


def wait_idle(page: Page) -> None:
    expect(page.locator(f"{ASSISTANT}[aria-busy]")).to_have_count(0, timeout=TIMEOUT_MS)
    expect(page.get_by_role("button", name="Send")).to_be_visible()


def test_the_page_runs_under_its_csp_with_no_violation(demo: ChatServer, new_tab: Tabs) -> None:
    page = watched(new_tab, demo.base_url + "/")
    response = page.request.get(demo.base_url + "/")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert "frame-ancestors 'self'" in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "same-origin"
    # Everything the page does: send, stream, a code block's button, reload, a new chat.
    send(page, "hello")
    wait_idle(page)
    page.reload()
    expect(page.locator(ASSISTANT)).to_have_count(1)
    page.get_by_role("button", name="New chat").click()
    send(page, "again")
    wait_idle(page)
    assert page.evaluate("window.__violations") == []
    # And the policy holds: an inline script is refused (and reported).
    try:
        page.add_script_tag(content="window.__inline = true")
    except Exception:
        pass
    assert page.evaluate("window.__inline") is None
    assert any(v.startswith("script-src") for v in page.evaluate("window.__violations"))


def test_a_host_may_be_allowed_to_frame_the_page(start_server: ServerFactory) -> None:
    server = start_server({"CHATAPP_FRAME_ANCESTORS": "https://host.example"})
    import httpx

    policy = httpx.get(server.base_url + "/").headers["content-security-policy"]
    assert "frame-ancestors https://host.example" in policy


def post_turns(page: Page, count: int) -> None:
    """``count`` turns posted by the page's own script (its cookie), each waited for."""
    page.evaluate(
        """async (count) => {
            const base = document.body.dataset.apiBase;
            const json = {"Content-Type": "application/json"};
            const created = await (await fetch(base, {method: "POST", headers: json, body: "{}"})).json();
            for (let i = 0; i < count; i++) {
              await fetch(base + "/" + created.session_id + "/messages", {method: "POST", headers: json, body: JSON.stringify({message: "long"})});
              while ((await (await fetch(base + "/" + created.session_id)).json()).generating) {
                await new Promise((resolve) => setTimeout(resolve, 20));
              }
            }
            localStorage.setItem("chatapp:session:" + new URL(base, location.href).href, created.session_id);
        }""",
        count,
    )


def test_older_messages_load_a_page_at_a_time_as_the_reader_scrolls_up(scripted: ChatServer, new_tab: Tabs) -> None:
    page = watched(new_tab, scripted.base_url + PREFIX + "/")
    post_turns(page, 10)
    page.reload()
    wait_idle(page)
    shown = page.locator(USER).count()
    # A page and whatever fills the screen, not the whole chat.
    assert 0 < shown < 10
    # The reply the reader sees stays in place while older pages come in above it.
    for _ in range(20):
        if page.locator(USER).count() == 10:
            break
        page.evaluate("window.scrollTo(0, 0)")
        page.wait_for_timeout(150)
    assert page.locator(USER).count() == 10
    assert page.locator(ASSISTANT).count() == 10
    # In order: user, assistant, user, ... from the first turn.
    roles = page.eval_on_selector_all("#log > article", "items => items.map(i => i.dataset.role)")
    assert roles == ["user", "assistant"] * 10
    assert page.evaluate("window.__violations") == []


@pytest.mark.parametrize("pattern", list(ADVERSARIAL))
def test_adversarial_markdown_renders_without_a_long_task(scripted: ChatServer, new_tab: Tabs, pattern: str) -> None:
    page = watched(new_tab, scripted.base_url + PREFIX + "/")
    send(page, f"adversarial {pattern}")
    wait_idle(page)
    assert len(page.locator(f"{ASSISTANT} .message-content").inner_text()) > 10_000
    streamed = page.evaluate("window.__longtasks")
    # Rendered again from history after a reload.
    page.reload()
    expect(page.locator(ASSISTANT)).to_have_count(1)
    page.wait_for_timeout(200)
    reloaded = page.evaluate("window.__longtasks")
    assert max(streamed + reloaded, default=0) < 200, (streamed, reloaded)
