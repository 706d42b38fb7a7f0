"""The wheel built from the checkout holds flask_confirm_mail, its data files and metadata.

The build runs on a copy of the working tree in tmp_path, so it leaves nothing (build/,
*.egg-info) in the checkout and is not fooled by stale build directories there.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from email.message import Message
from email.parser import Parser
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "flask_confirm_mail"
NOT_COPIED = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    "*.pyc",
    "instance",
    "test-artifacts",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    "_build",
)
REPOSITORY = "https://github.com/flask-confirm-mail/flask-confirm-mail"
PROJECT_URLS = {
    f"Source, {REPOSITORY}",
    "Documentation, https://flask-confirm-mail.readthedocs.io/",
    "Changes, https://flask-confirm-mail.readthedocs.io/en/latest/changelog.html",
    f"Issue tracker, {REPOSITORY}/issues",
}


def package_files(*parts: str) -> set[str]:
    """The checkout's files under flask_confirm_mail/<parts>, as wheel entry names."""
    folder = REPO.joinpath(PACKAGE, *parts)
    return {
        path.relative_to(REPO).as_posix()
        for path in folder.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    """The wheel pip builds from a clean copy of the working tree."""
    tmp = tmp_path_factory.mktemp("packaging")
    source = tmp / "checkout"
    shutil.copytree(REPO, source, ignore=NOT_COPIED, symlinks=True)
    out = tmp / "wheelhouse"
    command = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "--disable-pip-version-check",
        "-w",
        str(out),
        str(source),
    ]
    built = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert built.returncode == 0, f"pip wheel failed:\n{built.stdout}\n{built.stderr}"
    [path] = out.glob("*.whl")
    assert path.name.startswith(f"{PACKAGE}-") and path.name.endswith("-py3-none-any.whl")
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        yield archive


def dist_info(wheel: zipfile.ZipFile) -> str:
    [folder] = {name.split("/")[0] for name in wheel.namelist() if ".dist-info/" in name}
    assert folder.startswith(f"{PACKAGE}-") and folder.endswith(".dist-info")
    return folder


def metadata(wheel: zipfile.ZipFile) -> Message:
    return Parser().parsestr(wheel.read(f"{dist_info(wheel)}/METADATA").decode("utf-8"))


def test_wheel_holds_only_the_package_and_its_dist_info(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    allowed = (f"{PACKAGE}/", f"{dist_info(wheel)}/")
    assert [name for name in names if not name.startswith(allowed)] == []
    for unwanted in ("example_catloader/", "tests/", "benchmarks/", "docs/", "scripts/"):
        assert not [name for name in names if name.startswith(unwanted)], unwanted
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]
    top_level = wheel.read(f"{dist_info(wheel)}/top_level.txt").decode().split()
    assert top_level == [PACKAGE]


def test_wheel_holds_the_modules_and_data_files(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    assert f"{PACKAGE}/__init__.py" in names
    assert f"{PACKAGE}/mailer/__init__.py" in names
    assert f"{PACKAGE}/py.typed" in names

    modules = {name for name in package_files() if name.endswith(".py")}
    assert sorted(modules - names) == []

    page_templates = package_files("templates", "confirm_mail")
    assert f"{PACKAGE}/templates/confirm_mail/base.html" in page_templates
    assert any(name.startswith(f"{PACKAGE}/templates/confirm_mail/email/") for name in names)
    assert sorted(page_templates - names) == []

    catalogs = package_files("translations")
    for lang in ("en", "de", "fr", "es", "it", "pt"):
        assert f"{PACKAGE}/translations/{lang}/LC_MESSAGES/flask_confirm_mail.mo" in catalogs
    assert sorted(catalogs - names) == []

    mailer_templates = package_files("mailer", "templates")
    assert mailer_templates, "flask_confirm_mail/mailer/templates/ is empty"
    assert sorted(mailer_templates - names) == []


def test_metadata_has_the_license_and_project_urls(wheel: zipfile.ZipFile) -> None:
    meta = metadata(wheel)
    assert meta["Name"] == "flask-confirm-mail"
    assert "LICENSE" in (meta.get_all("License-File") or [])
    # setuptools >= 77 puts it under licenses/ (PEP 639), older ones beside METADATA.
    names = set(wheel.namelist())
    folder = dist_info(wheel)
    [license_entry] = {f"{folder}/LICENSE", f"{folder}/licenses/LICENSE"} & names
    license_text = wheel.read(license_entry).decode("utf-8")
    assert license_text == (REPO / "LICENSE").read_text(encoding="utf-8")
    assert "BSD 3-Clause License" in license_text
    assert "Copyright (c) 2026 The flask-confirm-mail developers" in license_text
    assert set(meta.get_all("Project-URL") or []) == PROJECT_URLS
