"""The wheel carries the page (templates and static files mapped into the package), the
gunicorn settings and the ``chatapp`` command."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from tests.support.servers import ROOT


def test_wheel_contains_templates_and_static(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(tmp_path), str(ROOT)],
        check=True,
        timeout=300,
    )
    [wheel] = tmp_path.glob("chatapp-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "chatapp/web/templates/chatapp/index.html" in names
    for asset in ("chatapp.js", "tabshare.js", "ssestream.js", "chatapp-chat.js", "markdown.js", "codeblocks.js", "view.js", "reply.js", "page.js", "chatapp.css", "favicon.svg"):
        assert f"chatapp/web/static/{asset}" in names
    assert "chatapp/sse.py" in names
    # `chatapp serve` finds its gunicorn settings inside the installed package.
    assert "chatapp/server/gunicorn_conf.py" in names
    assert "chatapp/py.typed" in names
    [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert "chatapp = chatapp.tools.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
