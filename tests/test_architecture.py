"""The house rules of the package layout, checked on the source (docs/design.md#layout, CONTRIBUTING.md "Layout").

- the library never imports ``notellm2_pl.commands``; the commands are thin and sit on top;
- no import cycle between the package's modules (function-level imports included);
- every module under 400 lines, every function under 60;
- importing ``notellm2_pl`` is free of heavy imports; the public API is re-exported lazily;
- code, recipes and docs cite the project's own docs, never files outside the repository.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "notellm2_pl"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path, name: str) -> set[str]:
    """Every ``notellm2_pl`` module this module imports, at any level (``if TYPE_CHECKING`` excluded)."""
    tree = ast.parse(path.read_text())
    type_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(
        node.test) for child in node.body for n in ast.walk(child)}
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return {m for m in found if m.startswith("notellm2_pl")}


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: {m for m in _imports(path, name) if m in mods and m != name} for name, path in mods.items()}


def test_library_never_imports_commands() -> None:
    library = {m: deps for m, deps in _graph().items()
               if not m.startswith("notellm2_pl.commands") and m != "notellm2_pl.__main__"}
    offenders = {m: sorted(d for d in deps if d.startswith("notellm2_pl.commands")) for m, deps in library.items()}
    assert not {m: d for m, d in offenders.items() if d}, "library modules import notellm2_pl.commands"


def test_no_import_cycle() -> None:
    graph = _graph()
    # A package's __init__ re-exporting its own modules is not a cycle of concepts: leave those edges out.
    graph = {m: {d for d in deps if not (d == m.rpartition(".")[0] or m.startswith(d + ".") and _is_init(d))}
             for m, deps in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            pytest.fail("import cycle: " + " -> ".join(cycle))


def _is_init(name: str) -> bool:
    return (ROOT / name.replace(".", "/") / "__init__.py").exists()


def test_modules_and_functions_stay_small() -> None:
    too_long: list[str] = []
    for name, path in _modules().items():
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{name}: {len(text.splitlines())} lines (max {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}:{node.lineno} {node.name}: {n} lines (max {MAX_FUNCTION_LINES})")
    assert not too_long, "split these by concept:\n" + "\n".join(too_long)


def test_import_is_light_and_api_is_lazy() -> None:
    code = ("import sys, notellm2_pl as p; "
            "heavy = [m for m in ('torch', 'lightning', 'transformers', 'numba') if m in sys.modules]; "
            "assert not heavy, heavy; "
            " from notellm2_pl import Embedder, NoteLLM2Module, NoteDataModule, registry; "
            "print(Embedder.__name__, NoteLLM2Module.__name__, NoteDataModule.__name__, registry.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["Embedder", "NoteLLM2Module", "NoteDataModule", "notellm2_pl.plugins.registry"]


def test_citations_stay_inside_the_repository() -> None:
    pattern = "METHOD" + r"\.md|DESIGN" + r"\.md|fixes B[0-9]|issue [0-9]"
    out = subprocess.run(["git", "grep", "-nE", pattern, "--", ".", ":!tests/test_architecture.py"], cwd=ROOT,
                         capture_output=True, text=True, check=False)
    if out.returncode == 128:
        pytest.skip("not a git checkout")
    assert out.stdout == "", "cite docs/method.md or docs/design.md by section, state rules not history:\n" + out.stdout


def test_every_subpackage_is_installed() -> None:
    """A non-editable install ships exactly the packages pyproject.toml lists: a new room must be listed there."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    present = {_module_name(p) for p in PACKAGE.rglob("__init__.py")}
    assert present <= listed, f"add to [tool.setuptools] packages: {sorted(present - listed)}"
