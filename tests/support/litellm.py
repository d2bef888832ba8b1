"""The LiteLLM proxy on a loopback port: a real OpenAI-compatible server nobody here wrote.

Its models answer from its own ``mock_response`` (no model download, no network), or
pass through to the project's scripted upstream for what LiteLLM must relay, such as an
upstream refusing a key. ``scripts/test`` installs it in ``.venv-litellm``.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.support.servers import ROOT, free_port

__all__ = ["MASTER_KEY", "LiteLLMProxy", "litellm_binary"]

#: The key chatapp presents to the proxy.
MASTER_KEY = "sk-litellm-test-master-0000"


def litellm_binary() -> Path:
    """The proxy's command; fails under CI and skips elsewhere when it is not installed."""
    binary = ROOT / ".venv-litellm" / "bin" / "litellm"
    if not binary.exists():
        message = "the LiteLLM proxy is not installed; scripts/test installs it into .venv-litellm"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return binary


class LiteLLMProxy:
    """``litellm --config`` with the given model list; ``url`` is the base URL for the SDK."""

    def __init__(self, models: list[dict], log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        config = log_dir / f"litellm-{self.port}.json"
        # JSON is YAML. Written as UTF-8: YAML reads the \u escapes of a surrogate pair apart.
        settings = {"model_list": models, "general_settings": {"master_key": MASTER_KEY}, "litellm_settings": {"telemetry": False}}
        config.write_text(json.dumps(settings, ensure_ascii=False), encoding="utf-8")
        self.log_path = log_dir / f"litellm-{self.port}.log"
        self._log = self.log_path.open("wb")
        environ = {**os.environ, "LITELLM_LOG": "ERROR", "LITELLM_MODE": "PRODUCTION", "NO_DOCS": "True"}
        self.process = subprocess.Popen(
            [str(litellm_binary()), "--config", str(config), "--host", "127.0.0.1", "--port", str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=environ,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the LiteLLM proxy exited: {self.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health/liveliness", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the LiteLLM proxy did not start in {timeout:.0f} s")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()
