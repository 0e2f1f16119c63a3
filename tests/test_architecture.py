"""docs/architecture.md is true to the code: every drawn import arrow exists, every real one is drawn, no cycles."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "antisd"


def component(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    if parts[0] == "integrations" and len(parts) > 2:
        return f"integrations/{parts[1]}"
    return parts[0]


def _target(module: str) -> Path | None:
    parts = module.split(".")[1:]
    if not parts:
        return None
    base = SRC.joinpath(*parts)
    if base.with_suffix(".py").exists():
        return base.with_suffix(".py")
    if (base / "__init__.py").exists():
        return base / "__init__.py"
    return None


def real_edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for path in SRC.rglob("*.py"):
        src = component(path)
        for node in ast.walk(ast.parse(path.read_text())):
            modules = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "antisd":
                modules = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                modules = [a.name for a in node.names if a.name.split(".")[0] == "antisd"]
            for module in modules:
                target = _target(module)
                if target is not None and component(target) != src:
                    edges[src].add(component(target))
    return dict(edges)


def drawn_edges() -> dict[str, set[str]]:
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = re.search(r"```deps\n(.*?)```", text, flags=re.DOTALL)
    assert block, "docs/architecture.md has no ```deps block"
    edges = {}
    for line in block.group(1).strip().splitlines():
        src, _, targets = line.partition(" -> ")
        edges[src.strip()] = {t.strip() for t in targets.split(",")}
    return edges


def test_every_drawn_arrow_exists_and_every_real_one_is_drawn():
    real, drawn = real_edges(), drawn_edges()
    missing = {(a, b) for a, bs in real.items() for b in bs} - {(a, b) for a, bs in drawn.items() for b in bs}
    stale = {(a, b) for a, bs in drawn.items() for b in bs} - {(a, b) for a, bs in real.items() for b in bs}
    assert not missing, f"imports not drawn in docs/architecture.md: {sorted(missing)}"
    assert not stale, f"arrows drawn in docs/architecture.md that the code does not have: {sorted(stale)}"


def test_dependency_graph_has_no_cycle():
    graph, state = real_edges(), {}

    def visit(node, path):
        if state.get(node) == "done":
            return
        assert state.get(node) != "open", f"import cycle: {' -> '.join(path + [node])}"
        state[node] = "open"
        for nxt in graph.get(node, ()):
            visit(nxt, path + [node])
        state[node] = "done"

    for node in graph:
        visit(node, [])


def test_layering_rules():
    real = real_edges()
    assert not real.get("core"), f"core imports {real.get('core')}"
    for name, targets in real.items():
        if any(t.startswith("integrations") for t in targets):
            assert name == "commands", f"{name} imports an integration; only commands may"
        if "commands" in targets:
            assert name == "cli", f"{name} imports commands; only cli may"
    assert real["step"] <= {"core", "settings"} and real["context"] <= {"settings"}


def test_commands_import_no_other_command_except_compare_train():
    for path in (SRC / "commands").glob("*.py"):
        text = path.read_text()
        others = set(re.findall(r"from antisd\.commands(?:\.(\w+))? import (\w+)", text))
        names = {mod or imp for mod, imp in others}
        allowed = {"train"} if path.stem == "compare" else set()
        assert names <= allowed, f"commands/{path.name} imports commands {names - allowed}"


def test_core_imports_only_torch_and_stdlib():
    allowed_roots = {"torch", "math", "statistics", "difflib", "typing", "__future__", "dataclasses"}
    for path in (SRC / "core").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                assert name.split(".")[0] in allowed_roots or name.startswith("antisd.core"), f"{path.name} imports {name}"


def test_settings_context_and_tasks_are_framework_free():
    for path in [SRC / "context.py", SRC / "settings.py", *(SRC / "tasks").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            for name in names:
                assert name.split(".")[0] not in {"torch", "trl", "transformers", "verl", "accelerate"}, f"{path.name} imports {name}"
