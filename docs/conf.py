"""Sphinx configuration: ``sphinx-build -W -b html docs docs/_build``."""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path[:0] = [str(DOCS.parent), str(DOCS / "_ext")]

import warnings  # noqa: E402

from sqlalchemy.exc import SAWarning  # noqa: E402

import flask_confirm_mail  # noqa: E402

# autodoc reads every attribute of ConfirmableMixin; SQLAlchemy warns about its
# declared_attr columns read from the unmapped mixin. Harmless here, and only here.
warnings.filterwarnings("ignore", "Unmanaged access of declarative attribute", category=SAWarning)

project = "flask-confirm-mail"
author = "the flask-confirm-mail authors"
copyright = "flask-confirm-mail authors"
release = flask_confirm_mail.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "pallets_sphinx_themes",
    "confirm_mail_docs",
]

# No network at build time: no intersphinx. Types outside this package are shown as text.
root_doc = "index"
exclude_patterns = ["_build"]
templates_path: list[str] = []
default_role = "literal"
nitpicky = False
# Keep "--flag" and quotes as typed: command lines and code matter more than typography.
smartquotes = False

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_preserve_defaults = True

# The maintained theme of Flask's own projects (pallets-sphinx-themes), so the pages read
# like Flask's, Flask-SQLAlchemy's and Flask-Login's docs.
html_theme = "flask"
html_title = f"flask-confirm-mail {release}"
html_static_path: list[str] = []
html_theme_options = {"index_sidebar_logo": False}
html_sidebars = {
    "index": ["project.html", "localtoc.html", "searchbox.html"],
    "**": ["localtoc.html", "relations.html", "searchbox.html"],
}
html_context = {"project_links": []}
