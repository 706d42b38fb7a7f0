"""Strict HS256 JSON Web Tokens, shared by the link token and the mailer's wrapping token.

RFC 8725 in practice: the algorithm is pinned in code, each kind of token has its own
``typ`` header and audience, every required claim is enforced with its type, the
lifetime is bounded, and oversized input is refused before any decoding.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

import jwt

from .errors import ExpiredToken, InvalidToken

ALGORITHM = "HS256"
#: Secrets shorter than this are refused at start-up (RFC 7518 3.2: at least the hash size).
MIN_SECRET_BYTES = 32
#: Tokens longer than this are refused before any decoding.
MAX_TOKEN_LENGTH = 4096
#: The largest clock leeway a deployment may configure, in seconds.
MAX_LEEWAY = 300

_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_MAX_STRING_CLAIM = 2048


def new_jti() -> str:
    """A random token id: 128 bits, URL-safe."""
    return secrets.token_urlsafe(16)


def secret_bytes(secret: str | bytes) -> bytes:
    """A configured secret as bytes (strings are UTF-8 encoded)."""
    return secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)


def encode_token(claims: Mapping[str, Any], secret: bytes, *, typ: str) -> str:
    """Sign ``claims`` with HS256 and the ``typ`` header of one kind of token."""
    return jwt.encode(dict(claims), secret, algorithm=ALGORITHM, headers={"typ": typ})


def decode_token(
    token: object,
    keys: Sequence[bytes],
    *,
    typ: str,
    audience: str,
    required: Sequence[str],
    max_lifetime: int,
    leeway: int = 0,
) -> dict[str, Any]:
    """Verify ``token`` against ``keys`` (the current one first) and return its claims.

    :param typ: the ``typ`` header this kind of token carries.
    :param audience: the ``aud`` claim this kind of token carries.
    :param required: claims besides ``aud``, ``iat``, ``exp`` and ``jti`` that must be present.
    :param max_lifetime: the largest allowed ``exp - iat``, in seconds.
    :param leeway: seconds of clock skew allowed on ``exp`` and ``iat``, at most ``MAX_LEEWAY``.
    :raises ExpiredToken: a genuine token past its ``exp``.
    :raises InvalidToken: anything else wrong with it.
    """
    if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_LENGTH:
        raise InvalidToken("The token is malformed.", reason="malformed")
    if _TOKEN_SHAPE.fullmatch(token) is None:
        raise InvalidToken("The token is malformed.", reason="malformed")
    leeway = min(max(leeway, 0), MAX_LEEWAY)
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise InvalidToken("The token is malformed.", reason="malformed") from None
    if header.get("alg") != ALGORITHM or header.get("typ") != typ:
        raise InvalidToken("The token is not of this kind.", reason="wrong_kind")
    claims = verify_with_keys(
        token,
        keys,
        audience=audience,
        require=("aud", "iat", "exp", "jti", *required),
        leeway=leeway,
    )
    _check_claim_types(claims, required, max_lifetime)
    return claims


def verify_with_keys(
    token: str,
    keys: Sequence[bytes],
    *,
    audience: str | None,
    require: Sequence[str],
    leeway: int,
) -> dict[str, Any]:
    """PyJWT's HS256 check with each of ``keys`` in turn; its errors as ours.

    With ``audience=None`` a token that carries any ``aud`` is refused.
    """
    options: Any = {"require": list(require)}
    for key in keys:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=audience,
                leeway=leeway,
                options=options,
            )
        except jwt.InvalidSignatureError:
            continue
        except jwt.ExpiredSignatureError:
            raise ExpiredToken() from None
        except jwt.InvalidAudienceError:
            raise InvalidToken("The token is not of this kind.", reason="wrong_kind") from None
        except jwt.PyJWTError:
            raise InvalidToken("The token's claims are not valid.", reason="bad_claims") from None
        return claims
    raise InvalidToken("The token's signature is not valid.", reason="bad_signature")


def is_int(value: object) -> bool:
    """An integer claim: ``bool`` and ``float`` are not."""
    return isinstance(value, int) and not isinstance(value, bool)


def _check_claim_types(
    claims: Mapping[str, Any], required: Sequence[str], max_lifetime: int
) -> None:
    iat, exp, jti = claims["iat"], claims["exp"], claims["jti"]
    if not (is_int(iat) and is_int(exp)) or not 0 < exp - iat <= max_lifetime:
        raise InvalidToken("The token's lifetime is not valid.", reason="bad_claims")
    if not isinstance(jti, str) or not 8 <= len(jti) <= 128:
        raise InvalidToken("The token's id is not valid.", reason="bad_claims")
    for name in required:
        value = claims[name]
        if isinstance(value, str) and len(value) > _MAX_STRING_CLAIM:
            raise InvalidToken("The token's claims are not valid.", reason="bad_claims")
