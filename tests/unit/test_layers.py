"""The package's layers (README, "Architecture"): lower layers never import
higher ones, and no module imports itself back through others. Imports are
read with ``ast`` (module level and inside functions alike: a lazy import is
still a dependency); ``__main__`` entry points are exempt."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "gguf_mtp"

#: bottom to top; a module may import its own layer and the layers below
LAYERS = [
    ("gguf_mtp", "gguf_mtp.upstream", "gguf_mtp.gguf"),
    ("gguf_mtp.heads",),
    ("gguf_mtp.runtime",),
    ("gguf_mtp.convert",),
    ("gguf_mtp.train",),
    ("gguf_mtp.testing",),
    ("gguf_mtp.models",),
    ("gguf_mtp.bench",),
    ("gguf_mtp.serve",),
    ("gguf_mtp.cli",),
]


def _modname(p: Path) -> str:
    parts = list(p.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    mods = {_modname(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        if mod.endswith("__main__"):
            continue
        is_pkg = path.name == "__init__.py"
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[:len(base) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if not target.startswith("gguf_mtp"):
                    continue
                for a in node.names:
                    deps.add(f"{target}.{a.name}" if f"{target}.{a.name}" in mods else target)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("gguf_mtp"))
        deps.discard(mod)
        graph[mod] = {d for d in deps if d in mods}
    return graph


def layer_of(mod: str) -> int:
    best, level = -1, None
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (mod == p or mod.startswith(p + ".")) and len(p) > best:
                best, level = len(p), i
    assert level is not None, f"{mod} is in no layer: add its package to LAYERS and the README"
    return level


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    found = cycles(import_graph())
    assert found == [], "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_no_import_goes_up_the_layers():
    bad = []
    for mod, deps in sorted(import_graph().items()):
        for d in sorted(deps):
            if layer_of(d) > layer_of(mod) and d != "gguf_mtp":
                bad.append(f"{mod} -> {d}")
    assert bad == [], "imports that go up the layer order:\n" + "\n".join(bad)
