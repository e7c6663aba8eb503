"""The package's layout rules, read from the source with ``ast`` (docs/architecture.md):
wings import only wings below them, no module imports itself in a circle, no file is too long."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "medcl"
#: the wings, lowest first; a module may import its own wing and the wings listed before it.
WING_ORDER = (("errors", "files", "extras", "ownership"), ("runtime",), ("data",), ("models",),
              ("method",), ("evaluation",), ("inference",), ("training",),
              ("demo", "cli", "annotate"))
MAX_LINES = 400


def wing_rank() -> dict[str, int]:
    return {wing: rank for rank, wings in enumerate(WING_ORDER) for wing in wings}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every ``medcl`` module that ``path`` imports (at any depth of the file), resolved."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # "from pkg import module" imports the module when it exists
            targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in modules else stem
                       for a in node.names]
        else:
            continue
        found.update(t for t in targets if t == "medcl" or t.startswith("medcl."))
    return found - {name}


def wing_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def import_graph() -> dict[str, set[str]]:
    modules = source_modules()
    return {name: imported_modules(path, modules) for name, path in modules.items()}


def test_every_module_belongs_to_a_known_wing():
    ranks = wing_rank()
    unknown = sorted({wing_of(m) for m in source_modules()} - set(ranks) - {None, "__main__"})
    assert not unknown, f"wings missing from WING_ORDER and docs/architecture.md: {unknown}"


def test_no_import_runs_upward():
    ranks, modules = wing_rank(), source_modules()
    upward = []
    for name, targets in import_graph().items():
        wing = wing_of(name)
        if wing not in ranks:
            continue
        for target in targets:
            other = wing_of(target)
            if other in ranks and ranks[other] > ranks[wing]:
                upward.append(f"{modules[name].relative_to(SRC)} imports {target} "
                              f"({other} is above {wing})")
    assert not upward, "\n".join(upward)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as ``[a, b, ..., a]``, or ``None``."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_circle():
    graph = import_graph()
    # the package root re-exports the public entry points lazily; its static imports are checked
    cycle = find_cycle({k: v - {"medcl"} for k, v in graph.items()})
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_find_cycle_sees_a_circle_and_a_clean_graph():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_relative_imports_resolve(tmp_path):
    modules = source_modules()
    registry = PACKAGE / "models" / "registry.py"
    found = imported_modules(registry, modules)
    assert "medcl.errors" in found and "medcl.models.unet" in found


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")),
                         ids=lambda p: str(p.relative_to(SRC)))
def test_no_file_is_too_long(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(SRC)} has {lines} lines (at most {MAX_LINES})"
