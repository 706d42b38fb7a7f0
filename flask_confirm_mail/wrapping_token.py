"""The wrapping token: what an app hands to the mailer service to have one email sent.

Two shapes travel between an app and a mailer:

* **v1** (``POST /v1/messages``, token in ``Authorization: Bearer``): header ``typ``
  ``cm-mailer+jwt``, audience ``flask-confirm-mail:mailer``, and the claims
  ``recipient``, ``template`` (``signup`` or ``change``), ``link_url`` (the whole link),
  ``link_token`` (the link token, which ends the link), optional ``extra`` (values the
  email shows), plus ``iat``, ``exp`` (at most :data:`MAX_WRAPPING_LIFETIME` after
  ``iat``) and ``jti``. No other token of the system verifies as one of these.
* **legacy** (``GET /emailservice.../<token>``): the original Variance mailer's payload,
  ``user_email``, ``user_aut_key_or_otp`` (or ``user_aut_key``), ``email_link_url`` (the
  link up to the token) and ``email_link_token``; ``iat``, ``exp`` and ``jti`` are
  optional there, for apps written against the original.

The mailer does not know the link secret. It may still read the link token's payload
*unverified* (:func:`peek_link_token`) to check that the link was made for the
recipient it is asked to write to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jwt

from .clock import timestamp
from .errors import InvalidToken
from .link_token import LINK_AUDIENCE, LINK_TOKEN_TYPE
from .mime import CONTROL_CHARACTERS
from .token_codec import (
    ALGORITHM,
    MAX_LEEWAY,
    MAX_TOKEN_LENGTH,
    decode_token,
    encode_token,
    is_int,
    new_jti,
    verify_with_keys,
)

__all__ = [
    "EXTRA_FIELDS",
    "LEGACY_TOKEN_TYPES",
    "MAX_EXTRA_VALUE_LENGTH",
    "MAX_WRAPPING_LIFETIME",
    "TEMPLATES",
    "WRAPPING_AUDIENCE",
    "WRAPPING_LIFETIME",
    "WRAPPING_TOKEN_TYPE",
    "LegacyPayload",
    "UnverifiedLink",
    "WrappingClaims",
    "clean_extra",
    "issue_legacy_token",
    "issue_wrapping_token",
    "peek_link_token",
    "verify_legacy_token",
    "verify_wrapping_token",
]

WRAPPING_TOKEN_TYPE = "cm-mailer+jwt"
WRAPPING_AUDIENCE = "flask-confirm-mail:mailer"
#: The largest ``exp - iat`` the mailer accepts, in seconds.
MAX_WRAPPING_LIFETIME = 600
#: The lifetime of the wrapping tokens this package issues, in seconds.
WRAPPING_LIFETIME = 300
#: The email templates a wrapping token may ask for.
TEMPLATES = ("signup", "change")
#: The ``extra`` values the mailer's templates show; other keys are ignored.
EXTRA_FIELDS = ("app_name", "user_name", "access_key")
MAX_EXTRA_VALUE_LENGTH = 200
#: ``typ`` headers a legacy token may carry (PyJWT writes ``JWT``; older clients none).
LEGACY_TOKEN_TYPES = (None, "JWT")

_REQUIRED_CLAIMS = ("recipient", "template", "link_url", "link_token")
_MAX_STRING = 2048


@dataclass(frozen=True)
class WrappingClaims:
    """A verified v1 wrapping token. Address and link checks are the mailer's job."""

    recipient: str
    template: str
    #: The whole link; it holds the link token, so it stays out of ``repr``.
    link_url: str = field(repr=False)
    link_token: str = field(repr=False)
    extra: Mapping[str, str] = field(repr=False)
    jti: str
    issued_at: int
    expires_at: int


@dataclass(frozen=True)
class LegacyPayload:
    """A verified legacy (original Variance) payload.

    ``jti`` and ``expires_at`` are ``None`` when the caller's token had none.
    """

    recipient: str
    access_key: str = field(repr=False)
    link_prefix: str
    link_token: str = field(repr=False)
    jti: str | None
    expires_at: int | None

    @property
    def link_url(self) -> str:
        """The whole link, as the original mailer built it: prefix followed by token."""
        return self.link_prefix + self.link_token


def clean_extra(values: Mapping[str, Any] | None) -> dict[str, str]:
    """Keep the :data:`EXTRA_FIELDS` of ``values`` that are non-empty strings.

    :raises InvalidToken: a kept value is too long, holds control characters or an
        RFC 2047 encoded word (which could hide a line break in a header).
    """
    cleaned: dict[str, str] = {}
    for name in EXTRA_FIELDS:
        value = (values or {}).get(name)
        if not isinstance(value, str) or not value:
            continue
        if len(value) > MAX_EXTRA_VALUE_LENGTH or CONTROL_CHARACTERS.search(value) or "=?" in value:
            raise InvalidToken("An extra value is not valid.", reason="bad_claims")
        cleaned[name] = value
    return cleaned


def issue_wrapping_token(
    secret: bytes,
    *,
    recipient: str,
    template: str,
    link_url: str,
    link_token: str,
    extra: Mapping[str, Any] | None = None,
    lifetime: int = WRAPPING_LIFETIME,
    now: int | None = None,
) -> str:
    """Sign a v1 wrapping token asking the mailer to send one email.

    :param secret: the mailer secret (``JWT_MAILER_SECRET`` on the mailer's side).
    :param recipient: the single address to write to.
    :param template: ``"signup"`` or ``"change"``.
    :param link_url: the whole confirmation link, ending with ``link_token``.
    :param link_token: the link token inside the link.
    :param extra: values the email shows; only :data:`EXTRA_FIELDS` are kept.
    :param lifetime: seconds until ``exp``, at most :data:`MAX_WRAPPING_LIFETIME`.
    :param now: ``iat``; defaults to the current time.
    """
    if template not in TEMPLATES:
        raise ValueError(f"template must be one of {', '.join(TEMPLATES)}")
    if not 0 < lifetime <= MAX_WRAPPING_LIFETIME:
        raise ValueError(f"lifetime must be between 1 and {MAX_WRAPPING_LIFETIME} seconds")
    iat = timestamp() if now is None else now
    claims: dict[str, Any] = {
        "aud": WRAPPING_AUDIENCE,
        "iat": iat,
        "exp": iat + lifetime,
        "jti": new_jti(),
        "recipient": recipient,
        "template": template,
        "link_url": link_url,
        "link_token": link_token,
    }
    cleaned = clean_extra(extra)
    if cleaned:
        claims["extra"] = cleaned
    return encode_token(claims, secret, typ=WRAPPING_TOKEN_TYPE)


def verify_wrapping_token(
    token: object, keys: Sequence[bytes], *, leeway: int = 0
) -> WrappingClaims:
    """Verify a v1 wrapping token against ``keys`` (current first) and return its claims.

    :raises ExpiredToken: genuine, but past its ``exp``.
    :raises InvalidToken: forged, of another kind, missing or mistyped claims,
        or a lifetime over :data:`MAX_WRAPPING_LIFETIME`.
    """
    claims = decode_token(
        token,
        keys,
        typ=WRAPPING_TOKEN_TYPE,
        audience=WRAPPING_AUDIENCE,
        required=_REQUIRED_CLAIMS,
        max_lifetime=MAX_WRAPPING_LIFETIME,
        leeway=leeway,
    )
    for name in _REQUIRED_CLAIMS:
        if not isinstance(claims[name], str) or not claims[name]:
            raise InvalidToken("The token's claims are not valid.", reason="bad_claims")
    if claims["template"] not in TEMPLATES:
        raise InvalidToken("The token names an unknown template.", reason="bad_claims")
    extra = claims.get("extra")
    if extra is not None and not isinstance(extra, dict):
        raise InvalidToken("The token's claims are not valid.", reason="bad_claims")
    return WrappingClaims(
        recipient=claims["recipient"],
        template=claims["template"],
        link_url=claims["link_url"],
        link_token=claims["link_token"],
        extra=clean_extra(extra),
        jti=claims["jti"],
        issued_at=claims["iat"],
        expires_at=claims["exp"],
    )


def issue_legacy_token(
    secret: bytes,
    *,
    user_email: str,
    access_key: str,
    link_prefix: str,
    link_token: str,
    lifetime: int = WRAPPING_LIFETIME,
    now: int | None = None,
) -> str:
    """Sign the original Variance payload, plus ``iat``, ``exp`` and ``jti``.

    The original mailer reads ``user_aut_key_or_otp`` (later versions) or ``user_aut_key``
    (the article's version); both are written. It ignores the added claims, except that
    PyJWT there checks ``exp``, which only ever refuses a stale call.
    """
    iat = timestamp() if now is None else now
    claims = {
        "user_email": user_email,
        "user_aut_key_or_otp": access_key,
        "user_aut_key": access_key,
        "email_link_url": link_prefix,
        "email_link_token": link_token,
        "iat": iat,
        "exp": iat + min(max(lifetime, 1), MAX_WRAPPING_LIFETIME),
        "jti": new_jti(),
    }
    return encode_token(claims, secret, typ="JWT")


def verify_legacy_token(token: object, keys: Sequence[bytes], *, leeway: int = 0) -> LegacyPayload:
    """Verify a legacy payload: HS256 with one of ``keys``; ``exp``/``iat``/``jti`` optional.

    Tokens of this package's own kinds (any ``aud`` claim or ``typ`` other than
    :data:`LEGACY_TOKEN_TYPES`) are refused. When present, ``exp`` must lie at most
    :data:`MAX_WRAPPING_LIFETIME` seconds ahead, and ``jti`` must be a string.

    :raises ExpiredToken: genuine, with an ``exp`` in the past.
    :raises InvalidToken: anything else wrong with it.
    """
    if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_LENGTH:
        raise InvalidToken("The token is malformed.", reason="malformed")
    leeway = min(max(leeway, 0), MAX_LEEWAY)
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise InvalidToken("The token is malformed.", reason="malformed") from None
    if header.get("alg") != ALGORITHM or header.get("typ") not in LEGACY_TOKEN_TYPES:
        raise InvalidToken("The token is not of this kind.", reason="wrong_kind")
    claims = _decode_legacy(token, keys, leeway)
    return _legacy_payload(claims, leeway)


def _decode_legacy(token: str, keys: Sequence[bytes], leeway: int) -> dict[str, Any]:
    # No audience is expected: PyJWT then refuses any token that carries one.
    return verify_with_keys(token, keys, audience=None, require=(), leeway=leeway)


def _legacy_payload(claims: Mapping[str, Any], leeway: int) -> LegacyPayload:
    bad = InvalidToken("The token's claims are not valid.", reason="bad_claims")
    if "aud" in claims:
        raise InvalidToken("The token is not of this kind.", reason="wrong_kind")
    recipient = claims.get("user_email")
    link_prefix = claims.get("email_link_url")
    link_token = claims.get("email_link_token")
    access_key = claims.get("user_aut_key_or_otp", claims.get("user_aut_key", ""))
    for value in (recipient, link_prefix, link_token):
        if not isinstance(value, str) or not value or len(value) > _MAX_STRING:
            raise bad
    if access_key is None:
        access_key = ""
    if not isinstance(access_key, str):
        access_key = str(access_key) if is_int(access_key) else None
    if access_key is None or len(access_key) > MAX_EXTRA_VALUE_LENGTH:
        raise bad
    if CONTROL_CHARACTERS.search(access_key):
        raise bad
    exp, iat, jti = claims.get("exp"), claims.get("iat"), claims.get("jti")
    if exp is not None:
        if not is_int(exp) or exp - timestamp() > MAX_WRAPPING_LIFETIME + leeway:
            raise bad
        if iat is not None and (not is_int(iat) or not 0 < exp - iat <= MAX_WRAPPING_LIFETIME):
            raise bad
    if jti is not None and (not isinstance(jti, str) or not 8 <= len(jti) <= 128):
        raise bad
    assert isinstance(recipient, str) and isinstance(link_prefix, str)
    assert isinstance(link_token, str)
    return LegacyPayload(
        recipient=recipient,
        access_key=access_key,
        link_prefix=link_prefix,
        link_token=link_token,
        jti=jti,
        expires_at=exp,
    )


@dataclass(frozen=True)
class UnverifiedLink:
    """What a link token's payload says, read *without* checking its signature."""

    #: The address the link was made for (``email``, or the original apps' ``aut_email``).
    email: str | None
    #: ``exp - iat`` when the token has both, in seconds: how long the link works.
    lifetime: int | None


def peek_link_token(link_token: str) -> UnverifiedLink | None:
    """Read a link token's payload *without* verifying it, for the mailer's cross-checks.

    The mailer does not hold the link secret: it only compares the ``email`` inside
    with the recipient it was asked to write to, and shows the link's lifetime. This
    package's link tokens (``typ`` ``cm-link+jwt``) must carry the link audience; the
    original apps' tokens carry ``aut_email``. ``None`` when it is not a readable JWT.
    """
    if len(link_token) > MAX_TOKEN_LENGTH:
        return None
    try:
        header = jwt.get_unverified_header(link_token)
        claims = jwt.decode(link_token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    if header.get("typ") == LINK_TOKEN_TYPE:
        if claims.get("aud") != LINK_AUDIENCE:
            return None
        email = claims.get("email")
    elif header.get("typ") in LEGACY_TOKEN_TYPES:
        email = claims.get("aut_email", claims.get("email"))
    else:
        return None
    iat, exp = claims.get("iat"), claims.get("exp")
    lifetime = None
    if isinstance(iat, int) and isinstance(exp, int) and is_int(iat) and is_int(exp):
        lifetime = exp - iat if exp > iat else None
    return UnverifiedLink(email if isinstance(email, str) else None, lifetime)
