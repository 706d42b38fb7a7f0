"""The package's shape: few modules, each saying its job, and no import loops at all.

The import graph (every import, inside functions and ``TYPE_CHECKING`` blocks too) is read
by the docs extension's ``module_imports``, which also draws the architecture page.
"""

from __future__ import annotations

import ast
from typing import Any

import pytest

from tests.test_docs import docs_extension

#: What the mailer service may import from the rest of the package: the wire between
#: app and mailer, and the leaf modules that know nothing of either side.
MAILER_MAY_IMPORT = {"wire", "smtp", "errors", "redaction"}


@pytest.fixture(scope="module")
def docs() -> Any:
    return docs_extension()


def test_at_most_twenty_two_core_modules_each_saying_its_job(docs: Any) -> None:
    modules = docs.package_modules()
    core = [name for name in modules if not name.startswith("mailer")]
    # 20 for the flow itself, plus i18n (translations) and tasks (Celery), two optional
    # integrations that each have one job and their own extra.
    assert len(core) <= 22, sorted(core)
    for name, path in modules.items():
        docstring = ast.get_docstring(ast.parse(path.read_text()))
        assert docstring and docstring.splitlines()[0].strip(), f"{name} has no first line"


def test_no_import_loops(docs: Any) -> None:
    graph = docs.module_imports(docs.package_modules())
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


def test_the_mailer_shares_only_the_wire_and_leaf_modules(docs: Any) -> None:
    graph = docs.module_imports(docs.package_modules())
    for name, targets in graph.items():
        if name.startswith("mailer."):
            core = {t for t in targets if not t.startswith("mailer.")}
            assert core <= MAILER_MAY_IMPORT, f"{name} imports {sorted(core - MAILER_MAY_IMPORT)}"
    for leaf in ("errors", "smtp", "redaction"):
        assert graph[leaf] <= {"errors"}, f"{leaf} is not a leaf: {graph[leaf]}"
