"""Forging tokens by hand: raw base64url segments and an HMAC computed here.

So a test can sign with any key (an empty one, an RSA public key in PEM form) and write
any header, which PyJWT's own ``encode`` refuses to do.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from flask_confirm_mail.tokens import LINK_AUDIENCE, LINK_TOKEN_TYPE
from tests.apps import LINK_SECRET

LINK_KEY = LINK_SECRET.encode()
LINK_HEADER: dict[str, Any] = {"alg": "HS256", "typ": LINK_TOKEN_TYPE}


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


#: Pass as a claim or header value to leave that field out.
MISSING: Any = _Missing()


def b64url(data: bytes) -> str:
    """Base64url without padding, as JWS segments are written."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def segment(part: Mapping[str, Any] | bytes | str) -> str:
    """One token segment: a mapping as compact JSON, bytes and text as given."""
    if isinstance(part, Mapping):
        raw = json.dumps(dict(part), separators=(",", ":")).encode()
    elif isinstance(part, str):
        raw = part.encode()
    else:
        raw = part
    return b64url(raw)


def hs256(signing_input: str, key: bytes) -> bytes:
    """The HS256 signature of ``signing_input`` under ``key`` (any key, even empty)."""
    return hmac.new(key, signing_input.encode("ascii"), hashlib.sha256).digest()


def forge(
    header: Mapping[str, Any] | bytes | str,
    payload: Mapping[str, Any] | bytes | str,
    key: bytes | None = None,
    *,
    signature: bytes | None = None,
) -> str:
    """A compact JWS built by hand: HMAC-SHA256 under ``key``, or ``signature`` as given."""
    signing_input = f"{segment(header)}.{segment(payload)}"
    if signature is None:
        signature = b"" if key is None else hs256(signing_input, key)
    return f"{signing_input}.{b64url(signature)}"


def _apply(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    result = dict(base)
    for name, value in changes.items():
        if value is MISSING:
            result.pop(name, None)
        else:
            result[name] = value
    return result


def link_payload(
    user_id: Any, address: str, /, *, now: int | None = None, lifetime: int = 3600, **changes: Any
) -> dict[str, Any]:
    """The claims of a genuine link token, then ``changes`` (``MISSING`` drops a claim)."""
    issued = int(time.time()) if now is None else now
    claims = {
        "sub": str(user_id),
        "email": address,
        "aud": LINK_AUDIENCE,
        "iat": issued,
        "exp": issued + lifetime,
        "jti": "forged-jti-0123456789",
    }
    return _apply(claims, changes)


def link_header(**changes: Any) -> dict[str, Any]:
    """The link token's header, then ``changes`` (``MISSING`` drops a field)."""
    return _apply(LINK_HEADER, changes)


def forge_link(
    user_id: Any,
    address: str,
    /,
    *,
    key: bytes = LINK_KEY,
    header: Mapping[str, Any] | None = None,
    **claims: Any,
) -> str:
    """A link token signed with ``key`` (by default the app's real link secret)."""
    return forge(header or LINK_HEADER, link_payload(user_id, address, **claims), key)


def flip_signature_byte(token: str, index: int = 0) -> str:
    """``token`` with one byte of its decoded signature inverted."""
    head, payload, signature = token.split(".")
    raw = bytearray(b64url_decode(signature))
    raw[index] ^= 0xFF
    return f"{head}.{payload}.{b64url(bytes(raw))}"
