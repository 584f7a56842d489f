"""The packages' layering (docs/architecture.md): core below everything; ecc (the science) and
cluster (how jobs run) on core only; results on core and ecc; sweeps composes them all. Read from
the source with `ast`, so an import anywhere in a module (even inside a function) counts."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "ecc", "cluster", "results", "sweeps")
ALLOWED = {
    "core": set(),
    "ecc": {"core"},
    "cluster": {"core"},
    "results": {"core", "ecc"},
    "sweeps": {"core", "ecc", "cluster", "results"},
}
MAX_LINES = 400  # modules about one subject each (issue 9); a longer one is split, not grown


def imported_packages(path: Path) -> dict[str, int]:
    """The first-party packages a module imports, each with the first line that does."""
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            top = name.split(".")[0]
            if top in PACKAGES:
                found.setdefault(top, node.lineno)
    return found


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", PACKAGES)
def test_a_package_imports_only_the_layers_below_it(package: str) -> None:
    bad = [f"{path.relative_to(ROOT)}:{line} imports {other}"
           for path in modules(package)
           for other, line in imported_packages(path).items()
           if other != package and other not in ALLOWED[package]]
    assert not bad, f"{package} may import only {sorted(ALLOWED[package]) or 'nothing first-party'}: " + "; ".join(bad)


def test_no_module_is_over_400_lines() -> None:
    long = {str(p.relative_to(ROOT)): n for pkg in PACKAGES for p in modules(pkg)
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by subject): {long}"


def test_the_checker_sees_imports(tmp_path: Path) -> None:
    """The reader finds top-level, from- and function-level imports, and ignores relative ones."""
    module = tmp_path / "m.py"
    module.write_text("import ecc.model\nfrom cluster import x\nfrom . import y\n"
                      "def f():\n    from results.table import z\n")
    assert imported_packages(module) == {"ecc": 1, "cluster": 2, "results": 5}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_imports(tree: ast.AST) -> list[ast.stmt]:
    """Import statements outside `if TYPE_CHECKING:` blocks (those never run)."""
    out: list[ast.stmt] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


def internal_imports(path: Path, package: str, known: set[str]) -> set[str]:
    """The modules of the same package that a module imports when it runs (relative or absolute,
    at any depth, even inside a function)."""
    here = module_name(path).split(".")
    base = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in _runtime_imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            if node.level:
                prefix = ".".join(base[:len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # `from pkg import mod` imports the module pkg.mod; `from mod import name`, the module mod
            targets = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in known else prefix for a in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target.split(".")[0] == package and target != module_name(path):
                found.add(target)
    return found


def import_cycles(package: str) -> list[list[str]]:
    paths = {module_name(p): p for p in modules(package)}
    graph = {name: internal_imports(p, package, set(paths)) - {package} for name, p in paths.items()}
    cycles, state = [], dict.fromkeys(graph, 0)  # 0 unseen, 1 on the path, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state[nxt] == 1:
                cycles.append([*path[path.index(nxt):], nxt])
            elif state[nxt] == 0:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if state[node] == 0:
            visit(node, [node])
    return cycles


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle_inside_a_package(package: str) -> None:
    cycles = import_cycles(package)
    assert not cycles, f"import cycles in {package}: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_cycle_finder_sees_a_cycle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "sweeps"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from . import b\n")
    (pkg / "b.py").write_text("from .a import f\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .c import x\n")
    (pkg / "c.py").write_text("from sweeps.b import f\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert import_cycles("sweeps") == [["sweeps.a", "sweeps.b", "sweeps.a"]]
