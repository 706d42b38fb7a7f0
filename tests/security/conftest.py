"""Fixtures of the adversarial suite (helpers live in the sibling modules)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask

from tests.security.access_audit import AUDIT, AccessAudit
from tests.security.victims import Victim, sign_up
from tests.support.smtp_server import SMTPSink


@pytest.fixture
def victim(make_app: Callable[..., Flask], smtp_server: SMTPSink) -> Victim:
    """The mixin-shaped app (sync delivery) with one signed-up, unconfirmed user."""
    return sign_up(make_app(), smtp_server)


@pytest.fixture
def access_audit() -> AccessAudit:
    """The process's file and network :class:`AccessAudit`."""
    return AUDIT
