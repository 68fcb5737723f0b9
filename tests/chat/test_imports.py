"""The chat app's modules depend one way: no import cycles anywhere in `chat/`."""

from __future__ import annotations

import ast
from pathlib import Path

import chat

ROOT = Path(chat.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, name: str) -> set[str]:
    """Modules of `chat` that `path` imports, at module level or inside functions."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            candidates = [base] + [f"{base}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        found.update(c for c in candidates if c == "chat" or c.startswith("chat."))
    return found


def test_chat_has_no_import_cycles():
    """Every module of `chat` (migrations aside) can be ordered so that each imports only
    modules before it; a cycle is reported with its members."""
    modules = {module_name(p): p for p in ROOT.rglob("*.py") if "migrations" not in p.parts}
    graph = {
        name: {m for m in imports_of(path, name) if m in modules and m != name}
        for name, path in modules.items()
    }
    # A package's __init__ importing its own submodules is how packages work, not a cycle.
    for name in graph:
        graph[name] = {m for m in graph[name] if not (m.startswith(name + "."))}
    visiting, done, cycles = set(), set(), []

    def visit(node, stack):
        if node in done:
            return
        if node in visiting:
            cycles.append([*stack[stack.index(node) :], node])
            return
        visiting.add(node)
        for nxt in sorted(graph[node]):
            visit(nxt, [*stack, node] if not stack or stack[-1] != node else stack)
        visiting.discard(node)
        done.add(node)

    for name in sorted(graph):
        visit(name, [name])
    assert cycles == []
