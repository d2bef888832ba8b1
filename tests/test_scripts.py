"""scripts/setup picks a Python 3.11+, rebuilds a .venv made with the wrong one, and says
plainly when there is none.

The interpreters here are stand-ins (shell scripts that report a version and a path,
make a "venv" of themselves and record what pip was asked), so that every case runs in
a second without the network.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.servers import ROOT

#: What scripts/setup needs besides an interpreter.
TOOLS = ("env", "bash", "sh", "dirname", "sha256sum", "cut", "sort", "paste", "rm", "cat", "mkdir", "cp", "printf")


def interpreter(path: Path, version: str, real: str) -> Path:
    """A stand-in Python that says it is ``version`` at ``real``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        f'  -c) echo "{version} {real}" ;;\n'
        '  -m) if [ "$2" = venv ]; then mkdir -p "$3/bin" && cp "$0" "$3/bin/python";\n'
        '      elif [ "$2" = pip ]; then shift 2; echo "$*" >> "$(dirname "$0")/../../pip.log"; fi ;;\n'
        "esac\n"
    )
    path.chmod(0o755)
    return path


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A folder with scripts/setup and a pyproject.toml, and a PATH of only basic tools."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "setup", tmp_path / "scripts" / "setup")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    tools = tmp_path / "tools"
    tools.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        if found:
            (tools / tool).symlink_to(found)
    return tmp_path


def setup(checkout: Path, *extras: str, python: Path | None = None, path: Path | None = None) -> subprocess.CompletedProcess:
    env = {"PATH": f"{path}:{checkout / 'tools'}" if path else str(checkout / "tools"), "HOME": str(checkout)}
    if python:
        env["PYTHON"] = str(python)
    return subprocess.run(
        [str(checkout / "tools" / "bash"), str(checkout / "scripts" / "setup"), *extras],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def pip_log(checkout: Path) -> list[str]:
    log = checkout / "pip.log"
    return log.read_text().splitlines() if log.exists() else []


def venv_reports(checkout: Path) -> str:
    return subprocess.run([str(checkout / ".venv" / "bin" / "python"), "-c", ""], capture_output=True, text=True).stdout.strip()


def test_a_venv_of_an_old_python_is_rebuilt(checkout: Path) -> None:
    interpreter(checkout / ".venv" / "bin" / "python", "3.9", "/usr/bin/python3.9")
    python = interpreter(checkout / "py312" / "python3.12", "3.12", "/opt/python3.12")
    result = setup(checkout, python=python)
    assert result.returncode == 0, result.stderr
    assert "rebuilding .venv: it was made with Python 3.9" in result.stderr
    assert venv_reports(checkout) == "3.12 /opt/python3.12"
    assert pip_log(checkout)[-1].endswith("-e .[redis]")


def test_a_venv_of_another_interpreter_than_python_asks_for_is_rebuilt(checkout: Path) -> None:
    interpreter(checkout / ".venv" / "bin" / "python", "3.12", "/opt/a/python3.12")
    python = interpreter(checkout / "b" / "python3", "3.12", "/opt/b/python3.12")
    result = setup(checkout, python=python)
    assert result.returncode == 0, result.stderr
    assert "not PYTHON=" in result.stderr
    assert venv_reports(checkout) == "3.12 /opt/b/python3.12"


def test_a_good_venv_is_kept_and_extras_accumulate(checkout: Path) -> None:
    bin_dir = checkout / "bin"
    interpreter(bin_dir / "python3", "3.11", "/opt/python3.11")
    assert setup(checkout, "redis,test", path=bin_dir).returncode == 0
    installs = len(pip_log(checkout))
    # scripts/serve asks for fewer extras than scripts/test installed: nothing to do.
    result = setup(checkout, "redis", path=bin_dir)
    assert result.returncode == 0 and "rebuilding" not in result.stderr
    assert len(pip_log(checkout)) == installs
    # A new extra is added to those already there.
    assert setup(checkout, "docs", path=bin_dir).returncode == 0
    assert pip_log(checkout)[-1].endswith("-e .[docs,redis,test]")


def test_python_naming_an_old_interpreter_is_refused(checkout: Path) -> None:
    python = interpreter(checkout / "old" / "python3", "3.9", "/usr/bin/python3.9")
    result = setup(checkout, python=python)
    assert result.returncode == 1
    assert f"PYTHON={python} is Python 3.9; chatapp needs Python 3.11 or newer" in result.stderr
    assert not (checkout / ".venv").exists()


def test_no_python_3_11_on_path_says_what_to_install(checkout: Path) -> None:
    bin_dir = checkout / "bin"
    interpreter(bin_dir / "python3", "3.10", "/usr/bin/python3.10")
    result = setup(checkout, path=bin_dir)
    assert result.returncode == 1
    assert "chatapp needs Python 3.11 or newer, and none was found (python3 is 3.10;" in result.stderr
    assert "set PYTHON=" in result.stderr
    assert not (checkout / ".venv").exists()
