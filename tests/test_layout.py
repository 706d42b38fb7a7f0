"""The package's shape: a core that reads in one sitting, optional parts it never imports,
and no import loops at all.

The core is the package's top-level modules; each optional part is a subpackage that the
app turns on (bounces and webhooks, the remote mailer, task-queue integrations). The
import graph (every import, inside functions and ``TYPE_CHECKING`` blocks too) is read by
the docs extension's ``module_imports``, which also draws the architecture page.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from typing import Any

import pytest

from tests.test_docs import docs_extension

#: The most lines the core's modules may hold together.
CORE_LINES = 4500
#: What the mailer service may import from the rest of the package: the leaf modules that
#: know nothing of the app side.
MAILER_MAY_IMPORT = {"smtp", "errors", "redaction", "settings", "outbox", "i18n"}


@pytest.fixture(scope="module")
def docs() -> Any:
    return docs_extension()


def _core(docs: Any) -> dict[str, Any]:
    return {name: path for name, path in docs.package_modules().items() if "." not in name}


def _optional_parts(docs: Any) -> set[str]:
    return {name.split(".")[0] for name in docs.package_modules() if "." in name}


def test_the_core_is_small_and_each_module_says_its_job(docs: Any) -> None:
    core = _core(docs)
    lines = {name: len(path.read_text().splitlines()) for name, path in core.items()}
    assert sum(lines.values()) <= CORE_LINES, sorted(lines.items(), key=lambda kv: -kv[1])
    for name, path in docs.package_modules().items():
        docstring = ast.get_docstring(ast.parse(path.read_text()))
        assert docstring and docstring.splitlines()[0].strip(), f"{name} has no first line"


def test_the_core_never_imports_an_optional_part(docs: Any) -> None:
    optional = _optional_parts(docs)
    assert {"bounces", "mailer"} <= optional
    for name, path in _core(docs).items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                targets = [node.module] if node.module else [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                targets = [(node.module or "").removeprefix("flask_confirm_mail.")]
            elif isinstance(node, ast.Import):
                targets = [a.name.removeprefix("flask_confirm_mail.") for a in node.names]
            else:
                continue
            for target in targets:
                assert target.split(".")[0] not in optional, f"{name} imports {target}"


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


def test_the_mailer_service_shares_only_leaf_modules(docs: Any) -> None:
    graph = docs.module_imports(docs.package_modules())
    service = {"mailer.app", "mailer.views", "mailer.service", "mailer.settings"}
    for name, targets in graph.items():
        if name in service:
            core = {t for t in targets if not t.startswith("mailer.")}
            assert core <= MAILER_MAY_IMPORT, f"{name} imports {sorted(core - MAILER_MAY_IMPORT)}"
    for leaf in ("errors", "smtp", "redaction"):
        assert graph[leaf] <= {"errors"}, f"{leaf} is not a leaf: {graph[leaf]}"


#: How a run's figures read in text: a duration, a percentile, a rate, a benchmark run.
MEASUREMENT = re.compile(
    r"\b\d+(?:\.\d+)?\s?(?:ms|us|µs|msg/s)\b|\bp9\d\b|\bbenchmarks?\b|\bmeasured\b|\bA/B\b",
    re.IGNORECASE,
)


def _comments_and_docstrings(source: str) -> list[tuple[int, str]]:
    """Each comment and docstring of ``source`` with its line number."""
    found = [
        (token.start[0], token.string)
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT
    ]
    for node in ast.walk(ast.parse(source)):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                found.append((body[0].lineno, value.value))
    return found


def test_no_comment_or_docstring_quotes_a_measurement(docs: Any) -> None:
    quoting = [
        f"{name}:{line}: {MEASUREMENT.search(text).group()}"  # type: ignore[union-attr]
        for name, path in docs.package_modules().items()
        for line, text in _comments_and_docstrings(path.read_text())
        if MEASUREMENT.search(text)
    ]
    assert not quoting, quoting
