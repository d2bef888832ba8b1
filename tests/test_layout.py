"""The package's shape: no import cycle, layers that point one way, optional extras optional."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.servers import ROOT

PACKAGE = ROOT / "chatapp"

#: Each top-level part of the package and its layer: a module may import its own layer
#: and the layers below it, never one above.
LAYERS = {
    "chatapp.errors": 0,
    "chatapp.sse": 0,
    "chatapp._concurrency": 0,
    "chatapp.events": 1,
    "chatapp.config": 1,
    "chatapp.metrics": 2,
    "chatapp.broker": 2,
    "chatapp.cache": 2,
    "chatapp.providers": 2,
    "chatapp.turns": 3,
    "chatapp.web": 4,
    "chatapp.server": 5,
    "chatapp.tools": 5,
    "chatapp": 6,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every chatapp module that ``name`` imports, wherever the import statement is."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            # ``from pkg import mod`` imports the submodule; ``from mod import name`` the module.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        found.update(target for target in targets if target in known and target != name)
    return found


def import_graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports_of(name, path, set(found)) for name, path in found.items()}


def layer(name: str) -> int:
    while name not in LAYERS:
        name = name.rpartition(".")[0]
    return LAYERS[name]


def test_the_graph_sees_the_imports_it_must() -> None:
    graph = import_graph()
    assert "chatapp.events" in graph["chatapp.turns"]
    assert "chatapp.broker.redis.scripts" in graph["chatapp.broker.redis.broker"]
    # Imports inside functions count too.
    assert "chatapp.broker.redis" in graph["chatapp.web.components"]


def test_there_is_no_import_cycle() -> None:
    graph = import_graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                cycles.append([*trail[trail.index(target) :], target] if target in trail else [name, target])
            elif target not in state:
                visit(target, [*trail, target])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_layers_point_one_way() -> None:
    wrong = [
        f"{name} (layer {layer(name)}) imports {target} (layer {layer(target)})"
        for name, targets in import_graph().items()
        for target in targets
        if layer(target) > layer(name)
    ]
    assert wrong == []


#: Run in a fresh interpreter in which the optional packages cannot be imported, as in a
#: venv with only the core dependencies.
WITHOUT_EXTRAS = textwrap.dedent(
    """
    import importlib, importlib.abc, pkgutil, sys

    class Missing(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in {"redis", "hiredis", "playwright", "pytest", "hypothesis"}:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Missing())
    import chatapp
    for module in pkgutil.walk_packages(chatapp.__path__, "chatapp."):
        importlib.import_module(module.name)
    from chatapp.broker.redis import RedisBroker
    try:
        RedisBroker("redis://127.0.0.1:6379/0")
    except ImportError as exc:
        print("refused:", exc)
    app = chatapp.create_app({"TESTING": True})
    print("page:", app.test_client().get("/").status_code)
    """
)


def test_every_module_imports_without_the_optional_packages() -> None:
    result = subprocess.run([sys.executable, "-c", WITHOUT_EXTRAS], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "refused: The Redis broker and cache need redis-py: pip install 'chatapp[redis]'" in result.stdout
    assert "page: 200" in result.stdout


@pytest.mark.parametrize("name", ["ChatApp", "create_app", "ServerSentEvent", "Provider", "Broker", "ResponseCache", "ProviderError", "ConfigError"])
def test_the_public_api_is_at_the_top(name: str) -> None:
    import chatapp

    assert name in chatapp.__all__ and getattr(chatapp, name) is not None
