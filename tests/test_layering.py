"""The packages' layering (docs/architecture.md): core below everything; ecc (the science) and
cluster (how jobs run) on core only; results on core and ecc; sweeps composes them all. Read from
the source with `ast`, so an import anywhere in a module (even inside a function) counts."""

from __future__ import annotations

import ast
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
