"""Headless Chromium for page tests: Debian's ``chromium`` driven by Playwright."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from playwright.sync_api import Browser, Playwright

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


def chromium_path() -> str | None:
    """The Chromium executable, or None when it is not installed."""
    return CHROMIUM if Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK) else None


def launch(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
