"""Sphinx directives that build parts of the docs from the code, so they cannot drift.

- ``confirm-mail-options``: every ``CONFIRM_MAIL_*`` setting from
  :data:`flask_confirm_mail.settings.OPTIONS` (default and meaning from the code, the
  type and grouping from the directive's content).
- ``mailer-env``: every environment variable of the mailer service from
  :data:`flask_confirm_mail.mailer.settings.ENV_DEFAULTS` (default from the code; type
  and meaning from the directive's content).
- ``confirm-mail-cli``: the ``flask confirm-mail`` commands, from the click group.
- ``confirm-mail-modules``: every module of the package, one line each, with the package
  modules it imports (read from the code), checked against the import rule of
  ``docs/architecture.rst``.

The content of the first two lists every name, one per line as ``NAME: type``, with
optional indented reST below it, and ``[Group title]`` lines between groups. A name
the code has but the content lacks (or the reverse) is a warning, which
``sphinx-build -W`` turns into a failed build.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import click
from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]

_ENTRY = re.compile(r"^(?P<name>[A-Z][A-Z0-9_]*)\s*:\s*(?P<type>.+?)\s*$")
_GROUP = re.compile(r"^\[(?P<title>[^\]]+)\]\s*$")
_SINGLE_BACKTICKS = re.compile(r"(?<![`:\w])`([^`]+)`(?!`)")


@dataclass
class Entry:
    """One documented name: its type and any extra reST written under it."""

    name: str
    type: str
    notes: list[str] = field(default_factory=list)


@dataclass
class Group:
    title: str
    entries: list[Entry] = field(default_factory=list)


def parse_entries(lines: Iterable[str]) -> list[Group]:
    """Parse a directive's content: ``[Group]`` lines, ``NAME: type`` lines, indented notes."""
    groups: list[Group] = []
    for line in lines:
        if not line.strip():
            if groups and groups[-1].entries:
                groups[-1].entries[-1].notes.append("")
            continue
        if line[0].isspace():
            if not groups or not groups[-1].entries:
                raise ValueError(f"Indented text before any entry: {line.strip()!r}")
            groups[-1].entries[-1].notes.append(line.strip())
            continue
        group = _GROUP.match(line)
        if group:
            groups.append(Group(group["title"]))
            continue
        entry = _ENTRY.match(line)
        if entry is None:
            raise ValueError(f"Not a 'NAME: type' line: {line!r}")
        if not groups:
            groups.append(Group(""))
        groups[-1].entries.append(Entry(entry["name"], entry["type"]))
    return groups


def documented_names(groups: Iterable[Group]) -> list[str]:
    return [entry.name for group in groups for entry in group.entries]


def format_default(value: Any) -> str:
    """A setting's default as Python source a reader would write."""
    if isinstance(value, timedelta):
        seconds = int(value.total_seconds())
        for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
            if (
                seconds % size == 0
                and seconds >= size
                and not (unit == "days" and seconds < 3 * size)
            ):
                return f"timedelta({unit}={seconds // size})"
        return f"timedelta(seconds={seconds})"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def literal_backticks(text: str) -> str:
    """The settings' doc strings mark code with single backticks: make them literals."""
    return _SINGLE_BACKTICKS.sub(r"``\1``", text)


class _ListedNamesDirective(SphinxDirective):
    """Common part: parse the content, compare it with the code's names, emit reST."""

    has_content = True
    #: Which list of the code the content is checked against, for messages.
    source_name = ""

    def code_names(self) -> list[str]:
        raise NotImplementedError

    def render_entry(self, entry: Entry) -> list[str]:
        raise NotImplementedError

    def run(self) -> list[nodes.Node]:
        try:
            groups = parse_entries(self.content)
        except ValueError as exc:
            return [self.state.document.reporter.warning(str(exc), line=self.lineno)]
        listed = documented_names(groups)
        code = self.code_names()
        for name in sorted(set(code) - set(listed)):
            logger.warning(
                "%s is in %s but not documented here",
                name,
                self.source_name,
                location=(self.env.docname, self.lineno),
            )
        for name in sorted(set(listed) - set(code)):
            logger.warning(
                "%s is documented here but not in %s",
                name,
                self.source_name,
                location=(self.env.docname, self.lineno),
            )
        for name in sorted({n for n in listed if listed.count(n) > 1}):
            logger.warning("%s is documented twice", name, location=(self.env.docname, self.lineno))
        rst: list[str] = []
        for group in groups:
            if group.title:
                rst += [f".. rubric:: {group.title}", ""]
            for entry in group.entries:
                if entry.name in code:
                    rst += self.render_entry(entry)
        container = nodes.container()
        self.state.nested_parse(StringList(rst, source=self.env.docname), 0, container)
        return container.children


def option_set(dotted: str) -> Any:
    """The :class:`~flask_confirm_mail.settings.OptionSet` class at ``module:Class``."""
    import importlib

    module, _, name = dotted.partition(":")
    return getattr(importlib.import_module(module), name)


def listed_options(dotted: str, table: str) -> list[Any]:
    """The options of one docs table: ``first`` (a newcomer's), ``advanced`` or ``all``."""
    options = option_set(dotted).options()
    if table == "all":
        return list(options)
    return [o for o in options if o.advanced == (table == "advanced")]


class ConfirmMailOptions(_ListedNamesDirective):
    """The ``CONFIRM_MAIL_*`` settings of one table, as ``confval`` entries.

    Options: ``:settings: module:Class`` (default the core's ``Settings``) and
    ``:table: first|advanced|all`` (default ``all``).
    """

    option_spec = {"settings": str, "table": str}  # noqa: RUF012

    @property
    def source_name(self) -> str:  # type: ignore[override]
        return f"{self._dotted()} ({self.options.get('table', 'all')} table)"

    def _dotted(self) -> str:
        return str(self.options.get("settings", "flask_confirm_mail.settings:Settings"))

    def _options(self) -> list[Any]:
        return listed_options(self._dotted(), str(self.options.get("table", "all")))

    def code_names(self) -> list[str]:
        return [option.name for option in self._options()]

    def render_entry(self, entry: Entry) -> list[str]:
        option = next(o for o in self._options() if o.name == entry.name)
        default = "unset (``None``)" if option.default is None else format_default(option.default)
        if option.default is not None:
            default = f"``{default}``"
        lines = [
            f".. confval:: {option.key}",
            f"   :type: {entry.type}",
            f"   :default: {default}",
            "",
            f"   {literal_backticks(option.doc)}",
            "",
        ]
        lines += [f"   {note}" if note else "" for note in entry.notes]
        return [*lines, ""]


class MailerEnvironment(_ListedNamesDirective):
    """Every environment variable of the mailer service, as ``envvar`` entries."""

    source_name = "flask_confirm_mail.mailer.settings.ENV_DEFAULTS"

    def code_names(self) -> list[str]:
        return list(self._defaults())

    @staticmethod
    def _defaults() -> Mapping[str, str | None]:
        from flask_confirm_mail.mailer.settings import ENV_DEFAULTS

        return ENV_DEFAULTS

    def render_entry(self, entry: Entry) -> list[str]:
        default = self._defaults()[entry.name]
        shown = "unset" if default is None else f"``{default}``"
        if not any(entry.notes):
            logger.warning(
                "%s has no description", entry.name, location=(self.env.docname, self.lineno)
            )
        lines = [
            f".. envvar:: {entry.name}",
            "",
            f"   :Type: {entry.type}",
            f"   :Default: {shown}",
            "",
        ]
        lines += [f"   {note}" if note else "" for note in entry.notes]
        return [*lines, ""]


class ConfirmMailCli(SphinxDirective):
    """The ``flask confirm-mail`` command group, read from its click objects."""

    def run(self) -> list[nodes.Node]:
        from flask_confirm_mail.cli import cli_group

        rst = [f"``flask {cli_group.name}``: {cli_group.help}", ""]
        for name in sorted(cli_group.commands):
            command = cli_group.commands[name]
            ctx = click.Context(command, info_name=f"flask {cli_group.name} {name}")
            usage = command.collect_usage_pieces(ctx)
            rst += [
                f".. rubric:: flask {cli_group.name} {name}",
                "",
                ".. code-block:: text",
                "",
                f"   flask {cli_group.name} {name} {' '.join(usage)}",
                "",
                (command.help or "").strip().replace("\n", " "),
                "",
            ]
            help_option = command.get_help_option(ctx)
            options = [
                p
                for p in command.get_params(ctx)
                if isinstance(p, click.Option) and p is not help_option
            ]
            for option in options:
                record = option.get_help_record(ctx)
                if record is None:
                    continue
                flags, text = record
                rst += [f"``{flags}``", f"   {text}", ""]
        container = nodes.container()
        self.state.nested_parse(StringList(rst, source=self.env.docname), 0, container)
        return container.children


PACKAGE = ROOT / "flask_confirm_mail"
_MODULE_ENTRY = re.compile(r"^(?P<name>[a-z_][a-z0-9_.]*)\s*:\s*(?P<text>.+?)\s*$")


def package_modules(package: Path = PACKAGE) -> dict[str, Path]:
    """Every module of the package by its name inside it: ``errors``, ``mailer.app``, and
    ``__init__`` / ``mailer.__init__`` for the packages themselves."""
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package).with_suffix("").parts
        modules[".".join(parts)] = path
    return modules


def _dotted(name: str, package: str = "flask_confirm_mail") -> str:
    """``mailer.app`` -> ``flask_confirm_mail.mailer.app``; ``__init__`` -> the package."""
    parts = [package, *name.split(".")]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def module_imports(modules: Mapping[str, Path]) -> dict[str, set[str]]:
    """For each module, the other package modules it imports, anywhere in the file.

    ``from . import signals`` counts as importing ``signals``, not the package: an edge
    into a package's ``__init__`` is dropped, as the layout test does.
    """
    by_dotted = {_dotted(name): name for name in modules}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        dotted = _dotted(name)
        package = dotted if path.name == "__init__.py" else dotted.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
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
            for target in targets:
                other = by_dotted.get(target)
                if other is not None and other != name and not other.endswith("__init__"):
                    found.add(other)
        graph[name] = found
    return graph


#: The mailer's modules that run on the app's side, not in the service.
APP_SIDE_OF_THE_MAILER = frozenset({"mailer.remote", "mailer.__init__"})


def layout_problems(
    listed: list[str], graph: Mapping[str, set[str]], mailer_may_import: set[str]
) -> list[str]:
    """What breaks the import rule, for modules in ``listed`` order.

    A module imports only modules listed above it (so there is no loop); the core (the
    top-level modules) never imports an optional part (a subpackage); the mailer service
    imports from the core only ``mailer_may_import``.
    """
    problems = []
    position = {name: index for index, name in enumerate(listed)}
    for name in listed:
        in_core = "." not in name
        in_service = name.startswith("mailer.") and name not in APP_SIDE_OF_THE_MAILER
        for target in sorted(graph.get(name, ())):
            if target in position and position[target] > position[name]:
                problems.append(f"{name} imports {target}, which is listed below it")
            if in_core and "." in target:
                problems.append(f"{name} (core) imports the optional part's {target}")
            if in_service and "." not in target and target not in mailer_may_import:
                problems.append(f"{name} (mailer service) imports {target} from the core")
    return problems


class ConfirmMailModules(SphinxDirective):
    """Every module of the package with its job, and what it imports, from the code.

    Content: ``[Group title]`` lines and ``name: job`` lines (indented lines continue the
    job), in import order. Option ``:mailer-may-import:`` names the core modules the
    mailer service may import. A module missing from the content (or listed but not in the
    package), and an import that breaks the rule, are warnings.
    """

    has_content = True
    option_spec = {"mailer-may-import": lambda text: (text or "").split()}

    def _warn(self, message: str, *args: Any) -> None:
        logger.warning(message, *args, location=(self.env.docname, self.lineno))

    def run(self) -> list[nodes.Node]:
        groups: list[tuple[str, list[tuple[str, str]]]] = []
        for line in self.content:
            if not line.strip():
                continue
            if line[0].isspace() and groups and groups[-1][1]:
                name, text = groups[-1][1][-1]
                groups[-1][1][-1] = (name, f"{text} {line.strip()}")
                continue
            group = _GROUP.match(line)
            if group:
                groups.append((group["title"], []))
                continue
            entry = _MODULE_ENTRY.match(line)
            if entry is None:
                self._warn("Not a 'module: job' line: %r", line)
                continue
            if not groups:
                groups.append(("", []))
            groups[-1][1].append((entry["name"], entry["text"]))
        modules = package_modules()
        for path in modules.values():
            self.env.note_dependency(str(path))
        listed = [name for _, entries in groups for name, _ in entries]
        for name in sorted(set(modules) - set(listed)):
            self._warn("module %s is in the package but not listed here", name)
        for name in sorted(set(listed) - set(modules)):
            self._warn("module %s is listed here but not in the package", name)
        for name in sorted({n for n in listed if listed.count(n) > 1}):
            self._warn("module %s is listed twice", name)
        graph = module_imports(modules)
        allowed = set(self.options.get("mailer-may-import", ()))
        for problem in layout_problems(listed, graph, allowed):
            self._warn("import rule broken: %s", problem)
        order = {name: index for index, name in enumerate(listed)}
        rst: list[str] = []
        for title, entries in groups:
            rst += [
                f".. list-table:: {title}".rstrip(),
                "   :header-rows: 1",
                "   :widths: 22 50 28",
                "",
                "   * - Module",
                "     - Its job",
                "     - Imports from the package",
            ]
            for name, text in entries:
                imports = sorted(graph.get(name, ()), key=lambda t: (order.get(t, len(order)), t))
                shown = ", ".join(f"``{target}``" for target in imports) or "nothing"
                rst += [f"   * - ``{name}``", f"     - {text}", f"     - {shown}"]
            rst.append("")
        container = nodes.container()
        self.state.nested_parse(StringList(rst, source=self.env.docname), 0, container)
        return container.children


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("confirm-mail-options", ConfirmMailOptions)
    app.add_directive("mailer-env", MailerEnvironment)
    app.add_directive("confirm-mail-cli", ConfirmMailCli)
    app.add_directive("confirm-mail-modules", ConfirmMailModules)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
