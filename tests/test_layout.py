"""The package's shape: few modules, each saying its job, and no import loops at all."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "flask_confirm_mail"
#: What the mailer service may import from the rest of the package: the wire between
#: app and mailer, and the leaf modules that know nothing of either side.
MAILER_MAY_IMPORT = {"wire", "smtp", "errors", "redaction"}


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every package module ``name`` imports, anywhere in the file (functions, TYPE_CHECKING)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            module = node.module or ""
            if node.level:
                module = f"{base}.{module}" if module else base
            targets = [module] + [f"{module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def test_at_most_twenty_core_modules_each_saying_its_job() -> None:
    core = [n for n in _modules() if not n.startswith("flask_confirm_mail.mailer")]
    assert len(core) <= 20, sorted(core)
    for name, path in _modules().items():
        docstring = ast.get_docstring(ast.parse(path.read_text()))
        assert docstring and docstring.splitlines()[0].strip(), f"{name} has no first line"


def test_no_import_loops() -> None:
    modules = _modules()
    graph = {name: _imports(name, path, set(modules)) for name, path in modules.items()}
    # A package's __init__ re-exporting its modules is not a loop: drop edges into it.
    graph = {
        n: {t for t in targets if modules[t].name != "__init__.py"} for n, targets in graph.items()
    }
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                raise AssertionError("import loop: " + " -> ".join([*trail, node, target]))
            if target not in state:
                visit(target, [*trail, node])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_the_mailer_shares_only_the_wire_and_leaf_modules() -> None:
    modules = _modules()
    allowed = {f"flask_confirm_mail.{name}" for name in MAILER_MAY_IMPORT}
    for name, path in modules.items():
        if not name.startswith("flask_confirm_mail.mailer"):
            continue
        core = {
            target
            for target in _imports(name, path, set(modules))
            if not target.startswith("flask_confirm_mail.mailer") and target != "flask_confirm_mail"
        }
        assert core <= allowed, f"{name} imports {sorted(core - allowed)}"
    for leaf in ("errors", "smtp", "redaction"):
        name = f"flask_confirm_mail.{leaf}"
        inner = _imports(name, modules[name], set(modules))
        assert inner <= {"flask_confirm_mail.errors"}, f"{name} is not a leaf: {inner}"
