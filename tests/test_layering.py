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


# ------------------------------------------------------------------ the folder layout: one home
# The on-disk format, spelled out here on purpose: renaming one orphans every existing experiment folder.
ON_DISK = {"CONFIG": "config.json", "SUBMISSION": "submission.json", "RESULT": "result.json", "ERROR": "error.json",
           "LOCK": "run.lock", "ATTEMPTS": "attempts.json", "METRICS": "metrics.jsonl", "PROGRESS": "progress.json",
           "CHECKPOINT": "checkpoint.pt", "HITS": "correct.npy", "SPEC": "spec.json", "PLAN": "plan.json",
           "SELECTION": "selection.json", "LAUNCH_LOCK": "launch.lock", "LAUNCH_JSON": "launch.json",
           "DRIVER_JSON": "driver.json", "CANCEL_JSON": "cancel.json", "SUBMIT_LOCK": "submit.lock",
           "RESULTS_PARQUET": "results.parquet", "RESULTS_CSV": "results.csv", "SELECTION_CSV": "selection.csv",
           "SUMMARY_PARQUET": "summary.parquet", "SUMMARY_CSV": "summary.csv", "FINDINGS_MD": "findings.md",
           "FINDINGS_CSV": "findings.csv", "FIGURES": "figures", "LOGS": "logs", "DATASETS": "datasets",
           "DATASET_JOBS": "jobs", "DRIVER_LOGS": "driver"}


def test_the_layout_keeps_the_on_disk_names(tmp_path: Path) -> None:
    from core import layout

    assert {k: getattr(layout, k) for k in ON_DISK} == ON_DISK
    assert layout.run_dir(tmp_path, "train", "abc") == tmp_path / "train" / "abc"
    assert layout.dataset_job_dir(tmp_path, "k1") == tmp_path / "datasets" / "jobs" / "k1"
    assert layout.logs_dir(tmp_path, "eval") == tmp_path / "logs" / "eval"
    for folder in ("train/a", "eval/b", "datasets/jobs/c", "datasets/c", "logs/train"):
        (tmp_path / folder).mkdir(parents=True)
    assert layout.run_folders(tmp_path) == [tmp_path / f for f in ("datasets/jobs/c", "eval/b", "train/a")]
    assert layout.run_folders(tmp_path, "eval") == [tmp_path / "eval" / "b"]
    with pytest.raises(ValueError, match="run kind 'dataset' is not one of train, eval"):
        layout.run_dir_name("dataset", "k1")


def layout_literals(path: Path) -> list[tuple[int, str]]:
    """(line, text) of each string constant in a module that spells a file name of the layout, alone or
    ending a path (an f-string's parts included); prose that mentions one inside a sentence is not."""
    names = {v for v in ON_DISK.values() if "." in v}
    return sorted((node.lineno, node.value) for node in ast.walk(ast.parse(path.read_text(), str(path)))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and (node.value in names or any(node.value.endswith("/" + n) for n in names)))


def test_only_core_layout_spells_the_file_names_of_a_run_or_experiment_folder(tmp_path: Path) -> None:
    found = [f"{p.relative_to(ROOT)}:{line}: {text!r}" for pkg in PACKAGES for p in modules(pkg)
             if p != ROOT / "core" / "layout.py" for line, text in layout_literals(p)]
    assert not found, "import the name from core.layout instead: " + "; ".join(found)
    spelled = tmp_path / "m.py"
    spelled.write_text('A = "result.json"\nB = exp.glob("train/*/config.json")\nC = f"{d}/error.json"\n'
                       '"""A docstring that names result.json is prose."""\n')
    assert layout_literals(spelled) == [(1, "result.json"), (2, "train/*/config.json"), (3, "/error.json")]
