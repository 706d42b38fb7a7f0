"""Building link tokens by hand for tests: valid ones, and every kind of forgery."""

from __future__ import annotations

import base64
import json
import time
import warnings
from typing import Any

import jwt

try:
    from jwt.warnings import InsecureKeyLengthWarning
except ImportError:  # PyJWT < 2.11
    InsecureKeyLengthWarning = UserWarning  # type: ignore[misc,assignment]

from flask_confirm_mail.tokens import LINK_AUDIENCE, LINK_TOKEN_TYPE


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def link_claims(
    user_id: Any, address: str, *, lifetime: int = 48 * 3600, **changes: Any
) -> dict[str, Any]:
    """The claims of a genuine link token, with ``changes`` applied (``None`` removes)."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": str(user_id),
        "email": address,
        "aud": LINK_AUDIENCE,
        "iat": now,
        "exp": now + lifetime,
        "jti": "test-jti-0123456789",
    }
    for name, value in changes.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


def sign(claims: dict[str, Any], secret: str | bytes, *, alg: str = "HS256", **headers: Any) -> str:
    """Sign ``claims`` with PyJWT, link-token ``typ`` header unless overridden."""
    header = {"typ": LINK_TOKEN_TYPE, **headers}
    with warnings.catch_warnings():  # forgeries use short keys on purpose
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        return jwt.encode(claims, secret, algorithm=alg, headers=header)


def raw_token(header: dict[str, Any], claims: Any, signature: bytes = b"") -> str:
    """A token assembled from parts, signature taken as given (for forgeries)."""
    return ".".join(
        (
            b64(json.dumps(header).encode()),
            b64(json.dumps(claims).encode()),
            b64(signature),
        )
    )
