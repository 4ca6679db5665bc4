"""The package layout keeps its import direction: data -> losses -> models -> module -> api ->
tasks / cli / demo, with no cycles (every import counts, also those inside functions).

Losses sit below the models: they are pure functions of tensors (no model import), and the
captioner and generator compute their own terms with them (ITG, eq. 6; denoising, eq. 7)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "unifashion"

LAYERS = (
    ("data", "scoring", "index"),  # datasets and pure tensor / faiss code
    ("losses",),
    ("models",),
    ("phases", "optim", "module", "callbacks", "strategies", "lightning_cli"),
    ("api",),
    ("tasks", "cli", "demo", "planning", "__main__"),
)
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every `unifashion.*` module imported anywhere in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("unifashion"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("unifashion"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        # a package's own __init__ is imported with each of its modules anyway: not an edge
        graph[name] = {m for m in _imports(path) if m in files and m != name and not name.startswith(m + ".")}
    return graph


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_top_level_module_has_a_layer():
    tops = {_top(m) for m in _graph()} - {"__init__"}
    assert not tops - set(RANK), f"place these in tests/test_layout.py LAYERS: {sorted(tops - set(RANK))}"


def test_imports_run_one_way():
    bad = []
    for name, deps in _graph().items():
        if _top(name) == "__init__":
            continue  # the package's lazy `__getattr__` (UniFashion, GalleryIndex)
        for dep in deps:
            if _top(dep) != "__init__" and RANK[_top(dep)] > RANK[_top(name)]:
                bad.append(f"{name} -> {dep}")
    assert not bad, "imports against the layer order:\n" + "\n".join(sorted(bad))


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if _top(dep) == "__init__" or dep.endswith(".__init__"):
                continue
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            raise AssertionError("import cycle: " + " -> ".join(cycle))


def test_the_old_glue_modules_are_gone():
    for name in ("commands.py", "evaluate.py", "evaluate_tasks.py", "cli.py", "demo.py"):
        assert not (PACKAGE / name).exists(), name
