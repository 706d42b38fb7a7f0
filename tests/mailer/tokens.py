"""Token builders for the mailer tests: link tokens, v1 wrapping tokens, legacy payloads.

Written against the token shapes, not against the package's issuing helpers, so a test
can drop or bend any claim.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt

from flask_confirm_mail.tokens import encode_token

MAILER_SECRET = "mailer-secret-for-tests-0123456789-abcdefghij"
LINK_SECRET = "link-secret-for-tests-0123456789-abcdefghijkl"
WRONG_SECRET = "some-other-secret-for-tests-0123456789-abcdef"
LINK_PREFIX = "https://app.example/confirm/"
ALLOWED_PREFIXES = f"{LINK_PREFIX} http://127.0.0.1:5000/confirm/"
MAILER_TYP = "cm-mailer+jwt"
MAILER_AUD = "flask-confirm-mail:mailer"


def unique_address(tag: str = "user") -> str:
    """A recipient no other test uses (rate limits are per recipient)."""
    return f"{tag}-{uuid.uuid4().hex[:12]}@example.com"


def link_token(email: str, *, lifetime: int = 86400, secret: str = LINK_SECRET) -> str:
    """A link token as the extension mints it (``typ`` ``cm-link+jwt``)."""
    now = int(time.time())
    claims = {
        "sub": "42",
        "email": email,
        "aud": "flask-confirm-mail:link",
        "iat": now,
        "exp": now + lifetime,
        "jti": uuid.uuid4().hex,
    }
    return encode_token(claims, secret.encode(), typ="cm-link+jwt")


def original_link_token(email: str) -> str:
    """A link token as the original apps made it: ``aut_*`` claims, no ``exp``."""
    claims = {"aut_id": 7, "aut_email": email, "aut_random_key": "q8XwZ1rT0b"}
    return jwt.encode(claims, LINK_SECRET, algorithm="HS256")


def v1_claims(to: str | None = None, /, **overrides: Any) -> dict[str, Any]:
    """Valid v1 wrapping claims for ``to``; ``overrides`` replace claims, ``None`` drops one."""
    recipient = to or unique_address()
    token = link_token(recipient)
    now = int(time.time())
    claims: dict[str, Any] = {
        "aud": MAILER_AUD,
        "iat": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
        "recipient": recipient,
        "template": "signup",
        "link_url": LINK_PREFIX + token,
        "link_token": token,
    }
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


def sign(
    claims: dict[str, Any], *, secret: str = MAILER_SECRET, typ: str | None = MAILER_TYP
) -> str:
    """HS256-sign ``claims`` with ``typ`` in the header."""
    headers = {"typ": typ} if typ is not None else None
    return jwt.encode(claims, secret, algorithm="HS256", headers=headers)


def v1_token(to: str | None = None, /, **overrides: Any) -> str:
    """A signed, valid v1 wrapping token for ``to``."""
    return sign(v1_claims(to, **overrides))


def original_payload(recipient: str, /, **overrides: Any) -> dict[str, Any]:
    """The original client's payload: no ``iat``, ``exp`` or ``jti``."""
    payload: dict[str, Any] = {
        "user_email": recipient,
        "user_aut_key_or_otp": "Kx7-Q2pL9m",
        "email_link_url": LINK_PREFIX,
        "email_link_token": original_link_token(recipient),
    }
    payload.update(overrides)
    return {name: value for name, value in payload.items() if value is not None}


def original_token(recipient: str, /, **overrides: Any) -> str:
    """The original client's wrapping token: ``jwt.encode(payload, secret)``."""
    return jwt.encode(original_payload(recipient, **overrides), MAILER_SECRET, algorithm="HS256")
