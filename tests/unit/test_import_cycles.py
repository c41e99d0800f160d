"""No import cycle in the operator's package: every ``import`` counts, also one inside a function
(a cycle hidden in a function still ties two modules together and breaks when it is moved up)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "operator"
PACKAGE = "vestige_operator"


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (``__init__`` = the package)."""
    out = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports, at any depth of its code."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for target in targets:
            # `from pkg import mod` imports pkg.mod; `from mod import name` imports mod.
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle (its modules, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_checker_sees_function_level_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    edges = graph()
    # The graph is really read: known edges of the package are in it, the function-level ones too.
    assert "vestige_operator.vocabulary" in edges["vestige_operator.children"]
    assert "vestige_operator.runner" in edges["vestige_operator.__main__"]  # imported in main()


def test_no_import_cycle_in_the_operator() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or ())


def test_the_vocabulary_is_the_bottom_layer() -> None:
    """vocabulary, times and events import nothing of the operator above them."""
    edges = graph()
    allowed = {PACKAGE, f"{PACKAGE}.vocabulary", f"{PACKAGE}.times"}
    for module in ("vocabulary", "times", "events"):
        assert edges[f"{PACKAGE}.{module}"] <= allowed, module


def _top_level_names(path: Path) -> tuple[set[str], set[str]]:
    """(names a module defines, names it only imports) at its top level."""
    defined: set[str] = set()
    imported: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            defined.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            defined |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, ast.Import | ast.ImportFrom):
            imported |= {alias.asname or alias.name for alias in node.names}
    return defined, imported - defined


def test_no_name_is_reached_through_a_module_that_only_imports_it() -> None:
    """A moved name is imported from its new home, never through its old module (no re-exports)."""
    mods = modules()
    names = {name: _top_level_names(path) for name, path in mods.items()}
    found = []
    for path in [*ROOT.parent.joinpath("tests").rglob("*.py"), *mods.values()]:
        tree = ast.parse(path.read_text())
        aliases: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in names:
                for alias in node.names:
                    if f"{node.module}.{alias.name}" in mods:
                        aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
                    elif alias.name in names[node.module][1]:
                        found.append(f"{path.name}:{node.lineno} from {node.module} import {alias.name}")
            elif isinstance(node, ast.Import):
                aliases |= {a.asname: a.name for a in node.names if a.asname and a.name in mods}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                module = aliases.get(node.value.id)
                if module is not None and node.attr in names[module][1]:
                    found.append(f"{path.name}:{node.lineno} {node.value.id}.{node.attr}")
    assert not found, "names reached through a module that only imports them: " + ", ".join(found)
