"""The mailer service: sends the confirmation emails that apps ask for over HTTP.

A re-creation of the Variance mailer with its holes closed; see :mod:`.app` for how to
run it and :mod:`.settings` for its environment variables.
"""

from __future__ import annotations

from .app import create_app
from .settings import MailerSettings

__all__ = ["MailerSettings", "create_app"]
