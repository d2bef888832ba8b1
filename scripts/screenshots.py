"""Take the README's screenshots of the chat page in headless Chromium.

A real server (gunicorn, gevent worker) runs the scripted test app, a question is typed
and sent, and the page is captured once the reply has streamed in: desktop in the light
theme, phone in the dark one. Run through ``scripts/screenshots``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402

from tests.support.apps.scripted import PREFIX  # noqa: E402
from tests.support.browser import chromium_path, launch  # noqa: E402
from tests.support.servers import ChatServer  # noqa: E402

QUESTION = "How do I stream a response from Flask?"
SHOTS = [
    ("screenshot-desktop.png", {"width": 1280, "height": 800}, "light", False),
    ("screenshot-phone.png", {"width": 390, "height": 844}, "dark", True),
]


def main() -> int:
    if chromium_path() is None:
        print("chromium is not installed (apt-get install chromium)", file=sys.stderr)
        return 1
    out = ROOT / "docs"
    out.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as logs:
        server = ChatServer(log_dir=Path(logs), app="tests.support.apps.scripted:app", health_path=PREFIX + "/healthz")
        try:
            with sync_playwright() as playwright:
                browser = launch(playwright)
                for name, viewport, scheme, mobile in SHOTS:
                    context = browser.new_context(
                        viewport=viewport, color_scheme=scheme, is_mobile=mobile, has_touch=mobile, device_scale_factor=2 if mobile else 1
                    )
                    page = context.new_page()
                    page.goto(server.base_url + PREFIX + "/")
                    page.get_by_label("Message").fill(QUESTION)
                    page.keyboard.press("Enter")
                    page.wait_for_selector('[data-role="assistant"][aria-busy]', state="detached", timeout=30_000)
                    page.evaluate("document.activeElement.blur()")
                    page.wait_for_timeout(400)  # let the composer's focus ring fade out
                    page.screenshot(path=str(out / name))
                    print(out / name)
                    context.close()
                browser.close()
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
