"""Headless Chromium for page tests: Debian's ``chromium`` driven by Playwright."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Playwright

#: Debian's package; Playwright's own browser download is never used.
CHROMIUM = os.environ.get("CHATAPP_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"

# A closed network: anything that phones home only fails, slowly and noisily.
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

#: Hang guard for anything a page waits for; replies in tests take seconds at most.
TIMEOUT_MS = 30_000


def chromium_path() -> str | None:
    """The Chromium executable, or None when it is not installed."""
    return CHROMIUM if Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK) else None


def launch(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)


@dataclass
class Tab:
    """A page in its own browser context (own cookies and storage), with what it logged."""

    page: Page
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)


class Tabs:
    """Opens tabs for one test and closes them after it."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.contexts: list[BrowserContext] = []
        self.tabs: list[Tab] = []

    def __call__(self, url: str, **context_options: Any) -> Tab:
        context = self.browser.new_context(**context_options)
        self.contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        tab = Tab(page)
        self.tabs.append(tab)

        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error":
                tab.console_errors.append(message.text)

        page.on("console", on_console)
        page.on("pageerror", lambda error: tab.page_errors.append(str(error)))
        page.on("request", lambda request: tab.requests.append(request.url))
        page.goto(url)
        return tab

    def close(self) -> list[str]:
        """Close every context; the uncaught page errors seen, which should be none."""
        for context in self.contexts:
            context.close()
        return [error for tab in self.tabs for error in tab.page_errors]
