"""The sdist and wheel built from the checkout are release-ready: `twine check --strict`
passes, the wheel holds flask_confirm_mail with its data files and metadata, and the
version is the one CHANGES.rst announces.

The build runs on a copy of the working tree in tmp_path, so it leaves nothing (build/,
*.egg-info) in the checkout and is not fooled by stale build directories there.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from email.parser import Parser
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "flask_confirm_mail"
VERSION = "0.1.0"
#: Python versions the classifiers name: from python_requires' floor to the newest tested.
PYTHONS = ("3.10", "3.11", "3.12", "3.13")
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


@dataclass(frozen=True)
class Dists:
    sdist: Path
    wheel: Path
    log: str


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Dists:
    """The sdist and wheel `python -m build` makes from a clean copy of the working tree.

    Without --sdist/--wheel, build makes the sdist and then the wheel from the unpacked
    sdist, as pip does from PyPI: a file the sdist leaves out is missing from the wheel too.
    --no-isolation uses the setuptools installed here, so the build needs no network.
    """
    tmp = tmp_path_factory.mktemp("packaging")
    source = tmp / "checkout"
    shutil.copytree(REPO, source, ignore=NOT_COPIED, symlinks=True)
    out = tmp / "dist"
    command = [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(source)]
    built = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    log = built.stdout + built.stderr
    assert built.returncode == 0, f"python -m build failed:\n{log}"
    [sdist] = out.glob("*.tar.gz")
    [wheel] = out.glob("*.whl")
    return Dists(sdist=sdist, wheel=wheel, log=log)


@pytest.fixture(scope="module")
def wheel(dists: Dists) -> Iterator[zipfile.ZipFile]:
    with zipfile.ZipFile(dists.wheel) as archive:
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


def test_twine_check_strict_passes_on_both(dists: Dists) -> None:
    command = [
        sys.executable,
        "-m",
        "twine",
        "check",
        "--strict",
        str(dists.sdist),
        str(dists.wheel),
    ]
    checked = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("PASSED") == 2, checked.stdout


def test_build_warns_of_no_data_folder_taken_for_a_package(dists: Dists) -> None:
    assert "is absent from the `packages` configuration" not in dists.log


def test_version_is_the_release_changes_announces(dists: Dists, wheel: zipfile.ZipFile) -> None:
    import flask_confirm_mail

    assert flask_confirm_mail.__version__ == VERSION
    assert metadata(wheel)["Version"] == VERSION
    assert dists.sdist.name == f"{PACKAGE}-{VERSION}.tar.gz"
    assert dists.wheel.name == f"{PACKAGE}-{VERSION}-py3-none-any.whl"
    # One source of truth: setup.cfg reads the version from the package.
    setup_cfg = (REPO / "setup.cfg").read_text(encoding="utf-8")
    assert "version = attr: flask_confirm_mail.__version__" in setup_cfg
    changes = (REPO / "CHANGES.rst").read_text(encoding="utf-8")
    assert f"Version {VERSION}\n-------------\n" in changes


def test_metadata_describes_the_release(wheel: zipfile.ZipFile) -> None:
    meta = metadata(wheel)
    assert meta["Description-Content-Type"] == "text/markdown"
    assert meta.get_payload() == (REPO / "README.md").read_text(encoding="utf-8")
    assert meta["Summary"].startswith("The whole email-confirmation flow for Flask")
    assert meta["License"] == "BSD-3-Clause"
    assert meta["Requires-Python"] == f">={PYTHONS[0]}"
    classifiers = set(meta.get_all("Classifier") or [])
    assert {"Framework :: Flask", "Typing :: Typed"} <= classifiers
    named = {c.rsplit(" :: ", 1)[1] for c in classifiers if c.count(".") == 1}
    assert named == set(PYTHONS)
    extras = set(meta.get_all("Provides-Extra") or [])
    assert {"mailer", "babel", "limiter", "celery", "webhooks", "docs"} <= extras


def test_sdist_holds_what_the_wheel_is_built_from(dists: Dists) -> None:
    with tarfile.open(dists.sdist) as archive:
        names = {name.partition("/")[2] for name in archive.getnames()}
    for name in ("PKG-INFO", "README.md", "LICENSE", "CHANGES.rst", "setup.cfg", "pyproject.toml"):
        assert name in names, name
    assert f"{PACKAGE}/py.typed" in names
    assert f"{PACKAGE}/translations/de/LC_MESSAGES/{PACKAGE}.mo" in names
    assert f"{PACKAGE}/mailer/templates/mailer/signup.html" in names
    assert f"{PACKAGE}/templates/confirm_mail/base.html" in names
    for unwanted in ("example_catloader/", "tests/", "benchmarks/", "docs/", "scripts/"):
        assert not [name for name in names if name.startswith(unwanted)], unwanted
