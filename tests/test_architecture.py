"""docs/architecture.md is true to the code: every drawn import arrow exists, every real one is drawn, no cycles,
the layout and naming rules hold."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "antisd"


def component(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    if parts[0] == "integrations" and len(parts) > 2:
        return f"integrations/{parts[1]}"
    return parts[0]


def method_component(path: Path) -> str:
    """Inside method/: the module; elsewhere the package (only 'core' is drawn)."""
    parts = path.relative_to(SRC).with_suffix("").parts
    return parts[1] if parts[0] == "method" and len(parts) > 1 else parts[0]


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


def real_edges(component=component, paths=None) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for path in paths or SRC.rglob("*.py"):
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


def drawn_edges(block_name: str = "deps") -> dict[str, set[str]]:
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = re.search(rf"```{block_name}\n(.*?)```", text, flags=re.DOTALL)
    assert block, f"docs/architecture.md has no ```{block_name} block"
    edges = {}
    for line in block.group(1).strip().splitlines():
        src, _, targets = line.partition(" -> ")
        edges[src.strip()] = {t.strip() for t in targets.split(",")}
    return edges


def method_edges() -> dict[str, set[str]]:
    edges = real_edges(method_component, sorted((SRC / "method").glob("*.py")))
    return {k: v - {"__init__"} for k, v in edges.items() if k != "__init__" and v - {"__init__"}}


@pytest.mark.parametrize("which", ["deps", "method-deps"])
def test_every_drawn_arrow_exists_and_every_real_one_is_drawn(which):
    real, drawn = (real_edges(), drawn_edges()) if which == "deps" else (method_edges(), drawn_edges("method-deps"))
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
    assert real["method"] <= {"core"}, f"method imports {real['method'] - {'core'}}"
    for name, targets in real.items():
        if any(t.startswith("integrations") for t in targets):
            assert name == "commands", f"{name} imports an integration; only commands may"
        if "commands" in targets:
            assert name == "cli", f"{name} imports commands; only cli may"
    inner = method_edges()
    assert inner["context"] <= {"settings"} and "settings" not in inner


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
    for path in [SRC / "method" / "context.py", SRC / "method" / "settings.py", *(SRC / "tasks").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            for name in names:
                assert name.split(".")[0] not in {"torch", "trl", "transformers", "verl", "accelerate"}, f"{path.name} imports {name}"


def test_package_root_holds_at_most_five_modules():
    modules = sorted(p.name for p in SRC.glob("*.py") if p.name not in ("cli.py", "__init__.py"))
    assert len(modules) <= 5, f"the package root holds {modules}: move them into method/, evaluation/ or infra/"


def test_no_function_is_longer_than_60_lines():
    long = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60:
                long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, f"functions over 60 lines: {long}"


# The glossary's "not" names (docs/architecture.md): one name per idea. settings.RENAMED names them to refuse them.
RETIRED = r"(?<!make )\bdemos?\b|\bdemo_|_demo\b|demonstration_cutter|cut_after_answer|solution_source|max_solution_tokens|solution_budget"


def test_retired_names_appear_nowhere_in_the_code():
    found = []
    for path in SRC.rglob("*.py"):
        for no, line in enumerate(path.read_text().splitlines(), start=1):
            if re.search(RETIRED, line) and "RENAMED" not in line and "renamed" not in line and not re.match(r'\s*"\w+": "\w+",$', line):
                found.append(f"{path.relative_to(SRC)}:{no}: {line.strip()}")
    assert not found, f"retired names (see the glossary): {found}"


def test_the_glossary_names_every_idea_once():
    text = (ROOT / "docs" / "architecture.md").read_text()
    table = text.split("## Glossary", 1)[1].split("## Rules", 1)[0]
    names = [row.split("|")[1].strip() for row in table.splitlines() if row.startswith("| ") and not row.startswith("| name")]
    assert len(names) >= 15 and len(names) == len(set(names)), names
    for name in ("demonstration", "teacher source", "u", "reference solution", "gate"):
        assert name in names
