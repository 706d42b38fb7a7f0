"""Each optional part's extra installs what that part imports, and the README's docs
command names extras that hold everything the docs build imports.

Imports are read from the source (ast), mapped to distributions with the installed
metadata, and compared with setup.cfg's requirements and everything they bring with them.
"""

from __future__ import annotations

import ast
import configparser
import re
import sys
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "flask_confirm_mail"
CONFIG = configparser.ConfigParser()
CONFIG.read(ROOT / "setup.cfg", encoding="utf-8")
#: Imported when the app has it, never installed by the package: the app's own login.
APP_OWNED = {"flask_login"}


def requirements(name: str) -> list[Requirement]:
    text = CONFIG["options"]["install_requires"] if name == "core" else ""
    if name != "core":
        text = CONFIG["options.extras_require"][name]
    return [Requirement(line) for line in text.splitlines() if line.strip()]


@cache
def closure(dist: str, extras: frozenset[str] = frozenset()) -> frozenset[str]:
    """dist and every distribution it requires (with those extras), as installed here."""
    found = {canonicalize_name(dist)}
    try:
        requires = metadata.requires(dist) or []
    except metadata.PackageNotFoundError:  # the floors lane installs the fast lane's extras
        pytest.skip(f"{dist} is not installed here: scripts/test installs every extra")
    for line in requires:
        req = Requirement(line)
        wanted = any(req.marker is None or req.marker.evaluate({"extra": e}) for e in extras)
        if req.marker is None or req.marker.evaluate({"extra": ""}) or wanted:
            found |= closure(req.name, frozenset(req.extras))
    return frozenset(found)


def provided(*names: str) -> set[str]:
    dists: set[str] = set()
    for name in ("core", *names):
        for req in requirements(name):
            dists |= closure(req.name, frozenset(req.extras))
    return dists


def imports(path: Path, *, module_level_only: bool = False) -> set[str]:
    """Top-level names of the third-party modules a file imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if module_level_only else ast.walk(tree)
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "flask_confirm_mail"}


def missing(modules: set[str], dists: set[str]) -> set[str]:
    by_module = metadata.packages_distributions()
    return {
        module
        for module in modules - APP_OWNED
        if not {canonicalize_name(d) for d in by_module[module]} & dists
    }


def part_imports(folder: str) -> set[str]:
    return set().union(*(imports(path) for path in (PACKAGE / folder).rglob("*.py")))


def test_each_optional_part_has_an_extra_that_installs_its_imports() -> None:
    assert missing(part_imports("mailer"), provided("mailer")) == set()
    assert missing(part_imports("bounces"), provided("webhooks")) == set()
    assert missing(part_imports("queues"), provided("celery")) == set()
    assert missing(part_imports("sqlite"), provided()) == set()
    core = set().union(*(imports(path) for path in PACKAGE.glob("*.py")))
    assert missing(core, provided("babel", "limiter")) == set()


def test_the_core_imports_only_what_install_requires_brings() -> None:
    core = set().union(*(imports(p, module_level_only=True) for p in PACKAGE.glob("*.py")))
    assert missing(core, provided()) == set()


def test_readme_docs_command_names_the_extras_the_docs_build_imports() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    [extras] = re.findall(r"pip install -e '\.\[([\w,]+)\]' && sphinx-build", readme)
    named = extras.split(",")
    assert named == ["docs"], "one extra for the docs, so the command stays short"
    # autodoc imports every module the API pages document, optional parts included.
    modules = set().union(
        *(imports(path, module_level_only=True) for path in PACKAGE.rglob("*.py")),
        imports(ROOT / "docs" / "conf.py"),
        imports(ROOT / "docs" / "_ext" / "confirm_mail_docs.py"),
    )
    assert missing(modules, provided(*named)) == set()


def test_install_lines_name_real_extras_and_say_which_source_they_use() -> None:
    extras = set(CONFIG["options.extras_require"])
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.rst"))]
    for page in pages:
        text = page.read_text(encoding="utf-8")
        for extra in re.findall(r"flask-confirm-mail\[(\w+)\]", text):
            assert extra in extras, (page.name, extra)
        # A PyPI install is shown beside the checkout one until the release is published.
        if re.search(r"pip install '?flask-confirm-mail", text):
            assert re.search(r"pip install (-e )?'?(\./|/path/to/)flask-confirm-mail", text)
            assert re.search(r"once (it is )?published", text, re.IGNORECASE), page.name
