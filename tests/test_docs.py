"""The docs stay true: the quickstart runs, every setting is documented, the build is clean.

- The quickstart's app (``docs/quickstart_app.py``, included verbatim in the page) signs a
  user up against a real SMTP server; the link from the email confirms the user.
- Every ``CONFIRM_MAIL_*`` key and every mailer environment variable that the code
  reads is in :data:`~flask_confirm_mail.settings.OPTIONS` or the mailer's
  ``ENV_DEFAULTS``, and listed on the configuration page.
- ``sphinx-build -W`` (warnings are errors) succeeds, and the built configuration page
  shows every key.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit

import pytest

from flask_confirm_mail import stop_delivery
from flask_confirm_mail.bounces.webhooks import WebhookSettings
from flask_confirm_mail.mailer.remote import RemoteSettings
from flask_confirm_mail.mailer.settings import ENV_DEFAULTS
from flask_confirm_mail.settings import OPTIONS
from tests.support.fixtures import require_ci_or_skip
from tests.support.smtp_server import SMTPSink

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PACKAGE = ROOT / "flask_confirm_mail"
QUICKSTART_LINK = re.compile(r"http://127\.0\.0\.1:5000/confirm/[A-Za-z0-9_.-]+")
#: Names of the mailer's environment: the original's, and this package's MAILER_*.
MAILER_ENV_NAME = re.compile(
    r"JWT_MAILER_SECRET\w*|MAILERTOGO_[A-Z0-9_]+|MAILER_[A-Z0-9_]+|SENDER_NAME"
)
#: A Flask config key read by name: ``config["KEY"]`` or ``config.get("KEY"``.
CONFIG_READ = re.compile(r"config(?:\.get\(|\[)\s*[\"']([A-Z][A-Z0-9_]+)[\"']")


def docs_extension() -> ModuleType:
    """``docs/_ext/confirm_mail_docs.py``, which needs Sphinx."""
    if importlib.util.find_spec("sphinx") is None:
        require_ci_or_skip("Sphinx is not installed (pip install -e '.[docs]')")
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        import confirm_mail_docs
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    return confirm_mail_docs


def directive_content(page: Path, directive: str) -> list[str]:
    """The indented content lines of every ``.. <directive>::`` in ``page``, without the
    directive's options."""
    lines = page.read_text(encoding="utf-8").splitlines()
    content: list[str] = []
    for start, heading in enumerate(lines):
        if heading != f".. {directive}::":
            continue
        block: list[str] = []
        for line in lines[start + 1 :]:
            if line and not line.startswith(" "):
                break
            if not line.lstrip().startswith(":"):
                block.append(line)
        content += textwrap.dedent("\n".join(block)).splitlines()
    return content


def documented(directive: str) -> list[str]:
    groups = docs_extension().parse_entries(
        directive_content(DOCS / "configuration.rst", directive)
    )
    names: list[str] = docs_extension().documented_names(groups)
    return names


def package_sources(directory: Path = PACKAGE) -> Iterator[Path]:
    yield from sorted(directory.rglob("*.py"))


# --- the quickstart --------------------------------------------------------------------


@pytest.fixture
def quickstart(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, smtp_server: SMTPSink
) -> Iterator[ModuleType]:
    """A fresh import of docs/quickstart_app.py, configured through FLASK_* variables."""
    monkeypatch.setenv("FLASK_DEBUG", "1")  # as `flask --debug run`: the example key needs it
    monkeypatch.setenv("FLASK_SQLALCHEMY_DATABASE_URI", f"sqlite:///{tmp_path / 'qs.db'}")
    monkeypatch.setenv("FLASK_MAIL_SERVER", smtp_server.host)
    monkeypatch.setenv("FLASK_MAIL_PORT", str(smtp_server.port))
    name = f"quickstart_app_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, DOCS / "quickstart_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(name, None)
        app = getattr(module, "app", None)
        if app is not None and "confirm_mail" in app.extensions:
            stop_delivery(app)
            with app.app_context():
                module.db.session.remove()
                module.db.engine.dispose()


def test_quickstart_app_signs_up_mails_the_link_and_confirms(
    quickstart: ModuleType, smtp_server: SMTPSink
) -> None:
    app, db, user_model = quickstart.app, quickstart.db, quickstart.User
    assert app.config["CONFIRM_MAIL_DELIVERY"] == "thread", "the quickstart shows the default"
    client = app.test_client()

    response = client.post("/signup", data={"email": "reader@example.org"})
    assert response.status_code == 201

    [mail] = smtp_server.wait_for(1)
    assert mail.rcpt_tos == ["reader@example.org"]
    assert mail.message["From"] == "Quickstart <noreply@example.com>"
    text = mail.message.get_body(("plain",)).get_content()
    [link] = QUICKSTART_LINK.findall(text)
    assert link in mail.message.get_body(("html",)).get_content()
    assert "48 hours" in text

    path = urlsplit(link).path
    page = client.get(path)
    assert page.status_code == 200
    assert b"Confirm my email address" in page.data
    with app.app_context():
        user = db.session.execute(db.select(user_model)).scalar_one()
        assert user.email_confirmed_at is None, "opening the link must not confirm"

    done = client.post(path)
    assert done.status_code == 200
    assert b"Email confirmed" in done.data
    with app.app_context():
        user = db.session.execute(db.select(user_model)).scalar_one()
        assert user.email_confirmed_at is not None

    status = app.test_cli_runner().invoke(args=["confirm-mail", "status", "reader@example.org"])
    assert status.exit_code == 0, status.output
    assert status.output.startswith("User 1: confirmed.")


@pytest.mark.parametrize("address", ["not an address", "", "a@b.example, c@d.example"])
def test_quickstart_app_answers_400_to_a_bad_address(quickstart: ModuleType, address: str) -> None:
    client = quickstart.app.test_client()
    response = client.post("/signup", data={"email": address})
    assert response.status_code == 400
    with quickstart.app.app_context():
        outbox = quickstart.confirm_mail.outbox_model
        assert quickstart.db.session.query(outbox).count() == 0


@pytest.mark.parametrize("again", ["twice@example.org", "TWICE@Example.org", " Twice@EXAMPLE.org"])
def test_quickstart_app_answers_400_to_a_taken_address(quickstart: ModuleType, again: str) -> None:
    client = quickstart.app.test_client()
    assert client.post("/signup", data={"email": "Twice@Example.org"}).status_code == 201
    taken = client.post("/signup", data={"email": again})
    assert taken.status_code == 400
    assert taken.data == b"That address has an account already.", "the app's check, found"
    with quickstart.app.app_context():
        outbox = quickstart.confirm_mail.outbox_model
        assert quickstart.db.session.query(outbox).count() == 1
        assert quickstart.find_user(again).email == "twice@example.org"


def test_quickstart_page_includes_the_tested_app() -> None:
    page = (DOCS / "quickstart.rst").read_text(encoding="utf-8")
    assert ".. literalinclude:: quickstart_app.py" in page


def test_the_rq_recipe_shows_the_module_and_command_its_tests_run() -> None:
    page = (DOCS / "recipes" / "rq.rst").read_text(encoding="utf-8")
    assert ".. literalinclude:: rq_app.py" in page  # tests/delivery/test_rq.py imports it
    assert "flask --app rq_app confirm-mail worker --once" in page  # its periodic step


# --- every setting the code reads is documented -----------------------------------------


#: Every ``CONFIRM_MAIL_*`` option: the core's, and those of its optional parts.
ALL_OPTIONS = (*OPTIONS, *WebhookSettings.options(), *RemoteSettings.options())
#: The most settings a newcomer meets, in the configuration page's first table.
NEWCOMER_OPTIONS = 15


def test_a_newcomer_meets_at_most_fifteen_settings() -> None:
    first = [o.name for o in OPTIONS if not o.advanced]
    assert len(first) <= NEWCOMER_OPTIONS, first


def test_every_confirm_mail_key_in_the_code_is_an_option() -> None:
    keys = {o.key for o in ALL_OPTIONS}
    found: dict[str, set[str]] = {}
    for path in package_sources():
        for key in re.findall(r"CONFIRM_MAIL_[A-Z0-9_]*[A-Z0-9]", path.read_text("utf-8")):
            found.setdefault(key, set()).add(path.relative_to(ROOT).as_posix())
    assert found, "the scan found no key at all: is the pattern still right?"
    unknown = {key: sorted(files) for key, files in found.items() if key not in keys}
    assert not unknown, f"keys named in the code but missing from OPTIONS: {unknown}"


def test_the_configuration_page_lists_exactly_the_options() -> None:
    listed = documented("confirm-mail-options")
    assert sorted(listed) == sorted(o.name for o in ALL_OPTIONS)
    assert len(listed) == len(set(listed)), "an option is listed twice"


def test_every_mailer_variable_in_the_code_is_documented() -> None:
    read: set[str] = set()
    for path in package_sources(PACKAGE / "mailer"):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if MAILER_ENV_NAME.fullmatch(node.value):
                    read.add(node.value)
    assert {"JWT_MAILER_SECRET", "MAILERTOGO_SMTP_HOST", "SENDER_NAME"} <= read
    listed = documented("mailer-env")
    assert read <= set(ENV_DEFAULTS), f"read but not in ENV_DEFAULTS: {read - set(ENV_DEFAULTS)}"
    assert sorted(listed) == sorted(ENV_DEFAULTS)
    assert len(listed) == len(set(listed)), "a variable is listed twice"


def test_every_flask_key_the_extension_reads_is_documented() -> None:
    page = (DOCS / "configuration.rst").read_text(encoding="utf-8")
    read: set[str] = set()
    for path in sorted(PACKAGE.glob("*.py")):
        read.update(CONFIG_READ.findall(path.read_text("utf-8")))
    read = {key for key in read if not key.startswith("CONFIRM_MAIL_")}
    assert {"SECRET_KEY", "SERVER_NAME", "MAIL_DEFAULT_SENDER"} <= read
    missing = sorted(key for key in read if f"``{key}``" not in page)
    assert not missing, f"config keys read by the extension, not on the page: {missing}"


# --- the pages themselves -----------------------------------------------------------------


def python_blocks(page: Path) -> Iterator[tuple[int, str]]:
    """``(line, code)`` of each ``.. code-block:: python`` in ``page``."""
    lines = page.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        if line.strip() != ".. code-block:: python":
            continue
        indent = len(line) - len(line.lstrip())
        body: list[str] = []
        for following in lines[number + 1 :]:
            if following.strip() and len(following) - len(following.lstrip()) <= indent:
                break
            body.append(following)
        yield number + 1, textwrap.dedent("\n".join(body))


@pytest.mark.parametrize(
    "page", sorted(DOCS.rglob("*.rst")), ids=lambda p: p.relative_to(DOCS).as_posix()
)
def test_python_examples_are_valid_python(page: Path) -> None:
    for line, code in python_blocks(page):
        try:
            compile(code, f"{page.name}:{line}", "exec")
        except SyntaxError as exc:
            pytest.fail(f"{page.relative_to(ROOT)} line {line}: {exc}")


# --- the build ------------------------------------------------------------------------------


@pytest.mark.slow
def test_sphinx_build_has_no_warnings_and_shows_every_setting(tmp_path: Path) -> None:
    if importlib.util.find_spec("sphinx") is None:
        require_ci_or_skip("Sphinx is not installed (pip install -e '.[docs]')")
    out = tmp_path / "html"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "-q",
            "-b",
            "html",
            "-d",
            str(tmp_path / "doctrees"),
            str(DOCS),
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    configuration = (out / "configuration.html").read_text(encoding="utf-8")
    for option in ALL_OPTIONS:
        assert f'id="confval-{option.key}"' in configuration, option.key
    for name in ENV_DEFAULTS:
        assert f'id="envvar-{name}"' in configuration, name
    api = (out / "api.html").read_text(encoding="utf-8")
    for command in ("send", "confirm", "status", "worker", "outbox", "retry"):
        assert f"flask confirm-mail {command}" in api
