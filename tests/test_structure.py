"""The library's shape: no import cycles, small modules, no private names used across modules,
a one-line docstring on every class."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mark2_lib"
MODULES = sorted(PACKAGE.rglob("*.py"))
MAX_LINES = 300


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> list[tuple[str, list[str], int]]:
    """(absolute module, imported names, line) of every `import` / `from ... import` inside mark2_lib."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] == "mark2_lib":
                out.append((mod, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] == "mark2_lib"]
    return out


def graph() -> dict[str, set[str]]:
    """Module -> the mark2_lib modules it imports (a `from package import module` counts as the module)."""
    known = {module_name(p) for p in MODULES}
    edges = {}
    for path in MODULES:
        deps = set()
        for mod, names, _ in imports_of(path):
            deps |= {f"{mod}.{n}" for n in names if f"{mod}.{n}" in known}
            if mod in known and (not names or any(f"{mod}.{n}" not in known for n in names)):
                deps.add(mod)
        edges[module_name(path)] = deps - {module_name(path)}
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A cycle of imports as a list of modules, or None."""
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for d in sorted(edges.get(m, ())):
            if state.get(d) == "open":
                return stack[stack.index(d):] + [d]
            if d not in state and (cycle := visit(d)):
                return cycle
        state[m] = "done"
        stack.pop()
        return None

    for m in sorted(edges):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_inside_the_package():
    """Every import counts, also those inside functions: a cycle hidden in a function is still a tangle."""
    assert find_cycle(graph()) is None


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_is_small(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(ROOT)} has {n} lines (at most {MAX_LINES}): split it"


def test_no_private_name_is_imported_across_modules():
    found = [f"{p.relative_to(ROOT)}:{line} imports {n} from {mod}"
             for p in MODULES for mod, names, line in imports_of(p) for n in names
             if n.startswith("_") and not n.startswith("__")]
    assert not found, found


def test_every_class_has_a_docstring():
    missing = [f"{p.relative_to(ROOT)}:{node.lineno} {node.name}" for p in MODULES
               for node in ast.walk(ast.parse(p.read_text()))
               if isinstance(node, ast.ClassDef) and not ast.get_docstring(node)]
    assert not missing, missing


def test_every_import_inside_the_package_resolves():
    """Each `from mark2_lib... import name`, the lazy ones inside functions included, names a module or
    an attribute that exists: a name moved to another module must not leave a caller behind that only
    fails when its function first runs (as `make data-real` once did)."""
    import importlib

    missing = []
    for p in MODULES:
        for mod, names, line in imports_of(p):
            module = importlib.import_module(mod)
            missing += [f"{p.relative_to(ROOT)}:{line} imports {n} from {mod}" for n in names
                        if not hasattr(module, n) and importlib.util.find_spec(f"{mod}.{n}") is None]
    assert not missing, missing
