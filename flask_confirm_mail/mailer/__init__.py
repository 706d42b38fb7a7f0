"""The remote mailer, an optional part: a service that sends the confirmation emails apps
ask for over HTTP, and the app side's :class:`RemoteTransport` that asks it.

A re-creation of the Variance mailer with its holes closed; see :mod:`.app` for how to
run it, :mod:`.settings` for its environment variables and :mod:`.wire` for what travels
between the two. Install it with the ``mailer`` extra.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from .remote import RemoteSettings, RemoteTransport

__all__ = ["RemoteSettings", "RemoteTransport", "create_app"]


def create_app(*args: Any, **kwargs: Any) -> Flask:
    """Build the mailer service (:func:`.app.create_app`); imported here only when called,
    so an app that only sends through :class:`RemoteTransport` needs none of the
    service's packages (Redis, gunicorn)."""
    from .app import create_app as build

    return build(*args, **kwargs)
