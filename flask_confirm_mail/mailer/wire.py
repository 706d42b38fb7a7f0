"""The wire between an app and the mailer service: wrapping tokens and the mailer's answers.

This is the one module the mailer service (:mod:`flask_confirm_mail.mailer`) shares with
the app side. Two call shapes travel from an app to a mailer:

* **v1** (``POST /v1/messages``, token in ``Authorization: Bearer``): header ``typ``
  ``cm-mailer+jwt``, audience ``flask-confirm-mail:mailer``, and the claims
  ``recipient``, ``template`` (``signup`` or ``change``), ``link_url`` (the whole link),
  ``link_token`` (the link token, which ends the link), optional ``extra`` (values the
  email shows), ``code`` (the confirmation code the email shows) and ``locale`` (the
  reader's, :data:`LOCALE`; without it the email is in English), plus ``iat``, ``exp``
  (at most :data:`MAX_WRAPPING_LIFETIME` after ``iat``) and ``jti``. No other token of
  the system verifies as one of these.
* **legacy** (``GET /emailservice.../<token>``): the original Variance mailer's payload,
  ``user_email``, ``user_aut_key_or_otp`` (or ``user_aut_key``), ``email_link_url`` (the
  link up to the token) and ``email_link_token``; ``iat``, ``exp`` and ``jti`` are
  optional there, for apps written against the original, and so is ``locale``, which
  this package adds (the original mailer ignores it). This package carries the
  confirmation code in ``user_aut_key_or_otp`` (the "one-time password" the original
  mailer shows) and the access key, if any, in ``user_aut_key`` (the article's field):
  a ``user_aut_key_or_otp`` that differs from ``user_aut_key`` is the code.

Both verify into one :class:`MailRequest`. The mailer answers ``{"error", "msg", "id"}``
with an :class:`ErrorCode`. The mailer does not know the link secret: it reads the link
token's payload *unverified* (:func:`peek_link_token`) only to check that the link was
made for the recipient it is asked to write to.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import jwt

from ..addresses import normalize_address
from ..errors import AddressError, InvalidToken
from ..smtp import CONTROL_CHARACTERS
from ..tokens import (
    CODE_CHARACTERS,
    LINK_AUDIENCE,
    LINK_TOKEN_TYPE,
    MAX_CODE_LENGTH,
    MAX_TOKEN_LENGTH,
    decode_token,
    encode_token,
    is_int,
    new_jti,
    read_header,
    verify_signature,
)
from ..tokens import MAX_LEEWAY as MAX_LEEWAY
from ..tokens import MIN_SECRET_BYTES as MIN_SECRET_BYTES

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
#: A ``locale`` claim: a language code, then subtags (``de``, ``pt_BR``, ``zh-Hant-TW``).
LOCALE = re.compile(r"[A-Za-z]{2,3}(?:[_-][A-Za-z0-9]{2,8})*")
MAX_LOCALE_LENGTH = 35
#: ``typ`` headers a legacy token may carry (PyJWT writes ``JWT``; older clients none).
LEGACY_TOKEN_TYPES = (None, "JWT")

_REQUIRED_CLAIMS = ("recipient", "template", "link_url", "link_token")
_MAX_STRING = 2048


class ErrorCode(IntEnum):
    """The ``error`` member of every mailer answer (0-2 keep the original's meanings)."""

    #: The email was sent (or had already been sent for this token).
    OK = 0
    #: The token is missing, forged, expired, of another kind or lacks a claim.
    BAD_TOKEN = 1
    #: The SMTP server did not take the email; retry later.
    DELIVERY_FAILED = 2
    #: The link is outside the allowlist or does not carry the link token.
    LINK_REFUSED = 3
    #: The recipient is not one valid address, or not the one the link was made for.
    RECIPIENT_REFUSED = 4
    #: Too many emails to this recipient lately; see ``Retry-After``.
    RATE_LIMITED = 5
    #: Another request is sending this very token right now; retry shortly.
    IN_PROGRESS = 6
    #: The HTTP request itself is wrong (unknown path, wrong method, ...).
    BAD_REQUEST = 7
    #: An unexpected failure inside the mailer; retry later.
    INTERNAL = 8
    #: A store the mailer processes share (Redis) cannot be reached; nothing was sent,
    #: retry later (see ``Retry-After``).
    UNAVAILABLE = 9
    #: A caller-supplied ``extra`` value is too long or not plain text (a URL, markup).
    TEXT_REFUSED = 10


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback IP literal (plain text allowed there).

    Decided on the literal only: a name such as ``127.0.0.1.example.net`` is not loopback.
    """
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class MailRequest:
    """A verified request to send one email, from either call shape.

    Address and link checks are the mailer's job.
    """

    recipient: str
    template: str
    #: The whole link; it holds the link token, so it stays out of ``repr``.
    link_url: str = field(repr=False)
    link_token: str = field(repr=False)
    extra: Mapping[str, str] = field(default_factory=dict, repr=False)
    #: The key under which the mailer remembers that this request was sent.
    replay_key: str = ""
    #: The token's ``exp`` (epoch seconds); ``None`` only for legacy tokens without one.
    expires_at: int | None = None
    #: The confirmation code the email shows ("" for none); it confirms like the link.
    code: str = field(default="", repr=False)
    #: The reader's locale (``"de"``, ``"pt_BR"``); ``None``: English.
    locale: str | None = None


def check_code(value: object) -> str:
    """A confirmation code from a token: "" for none, else letters and digits.

    :raises InvalidToken: anything else.
    """
    return "" if value is None or value == "" else _matching(value, "code")


def check_locale(value: object) -> str | None:
    """A locale from a token: ``None`` for none, else a :data:`LOCALE` of at most
    :data:`MAX_LOCALE_LENGTH` characters.

    :raises InvalidToken: anything else.
    """
    return None if value is None else _matching(value, "locale")


def _matching(value: object, claim: str) -> str:
    """``value`` if it is a string of the form and length the ``claim`` allows."""
    pattern, limit = {
        "code": (CODE_CHARACTERS, MAX_CODE_LENGTH), "locale": (LOCALE, MAX_LOCALE_LENGTH)
    }[claim]  # fmt: skip
    if not isinstance(value, str) or len(value) > limit or pattern.fullmatch(value) is None:
        raise InvalidToken(f"The token's {claim} is not valid.", reason="bad_claims")
    return value


def _wire_locale(locale: str | None) -> str | None:
    """``locale`` if a token can carry it, else ``None``: an email in English rather than
    none at all."""
    try:
        return check_locale(locale)
    except InvalidToken:
        return None


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
    code: str = "",
    locale: str | None = None,
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
    :param code: the confirmation code the email shows, letters and digits ("" for none).
    :param locale: the reader's locale (``"de"``, ``"pt_BR"``); left out when it is not a
        :data:`LOCALE`, and then the email is in English.
    :param lifetime: seconds until ``exp``, at most :data:`MAX_WRAPPING_LIFETIME`.
    :param now: ``iat``; defaults to the current time.
    """
    if template not in TEMPLATES:
        raise ValueError(f"template must be one of {', '.join(TEMPLATES)}")
    if not 0 < lifetime <= MAX_WRAPPING_LIFETIME:
        raise ValueError(f"lifetime must be between 1 and {MAX_WRAPPING_LIFETIME} seconds")
    iat = int(time.time()) if now is None else now
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
    if check_code(code):
        claims["code"] = code
    if _wire_locale(locale):
        claims["locale"] = locale
    return encode_token(claims, secret, typ=WRAPPING_TOKEN_TYPE)


def verify_wrapping_token(token: object, keys: Sequence[bytes], *, leeway: int = 0) -> MailRequest:
    """Verify a v1 wrapping token against ``keys`` (current first).

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
    return MailRequest(
        recipient=claims["recipient"],
        template=claims["template"],
        link_url=claims["link_url"],
        link_token=claims["link_token"],
        extra=clean_extra(extra),
        replay_key=claims["jti"],
        expires_at=claims["exp"],
        code=check_code(claims.get("code")),
        locale=check_locale(claims.get("locale")),
    )


def issue_legacy_token(
    secret: bytes,
    *,
    user_email: str,
    access_key: str,
    link_prefix: str,
    link_token: str,
    code: str = "",
    locale: str | None = None,
    lifetime: int = WRAPPING_LIFETIME,
    now: int | None = None,
) -> str:
    """Sign the original Variance payload, plus ``iat``, ``exp``, ``jti`` and ``locale``.

    The original mailer reads ``user_aut_key_or_otp`` (later versions) or ``user_aut_key``
    (the article's version); both are written: the access key in both, or with a
    confirmation ``code``, the code in ``user_aut_key_or_otp``. It ignores the added
    claims, except that PyJWT there checks ``exp``, which only ever refuses a stale call.
    ``locale`` is left out as by :func:`issue_wrapping_token`.
    """
    iat = int(time.time()) if now is None else now
    claims: dict[str, Any] = {
        "user_email": user_email,
        "user_aut_key_or_otp": check_code(code) or access_key,
        "user_aut_key": access_key,
        "email_link_url": link_prefix,
        "email_link_token": link_token,
        "iat": iat,
        "exp": iat + min(max(lifetime, 1), MAX_WRAPPING_LIFETIME),
        "jti": new_jti(),
    }
    if _wire_locale(locale):
        claims["locale"] = locale
    return encode_token(claims, secret, typ="JWT")


def verify_legacy_token(
    token: object, keys: Sequence[bytes], *, template: str = "signup", leeway: int = 0
) -> MailRequest:
    """Verify a legacy payload: HS256 with one of ``keys``; ``exp``/``iat``/``jti`` optional.

    Tokens of this package's own kinds (any ``aud`` claim or ``typ`` other than
    :data:`LEGACY_TOKEN_TYPES`) are refused. When present, ``exp`` must lie at most
    :data:`MAX_WRAPPING_LIFETIME` seconds ahead, ``jti`` must be a string and ``locale`` a
    :data:`LOCALE`. Without a ``jti`` the replay key is a hash of the token itself.

    :raises ExpiredToken: genuine, with an ``exp`` in the past.
    :raises InvalidToken: anything else wrong with it.
    """
    read_header(token, LEGACY_TOKEN_TYPES)
    assert isinstance(token, str)
    # No audience is expected: PyJWT then refuses any token that carries one.
    claims = verify_signature(token, keys, audience=None, require=(), leeway=leeway)
    bad = InvalidToken("The token's claims are not valid.", reason="bad_claims")
    recipient = claims.get("user_email")
    link_prefix = claims.get("email_link_url")
    link_token = claims.get("email_link_token")
    for value in (recipient, link_prefix, link_token):
        if not isinstance(value, str) or not value or len(value) > _MAX_STRING:
            raise bad
    access_key = _legacy_text(claims.get("user_aut_key_or_otp", claims.get("user_aut_key", "")))
    article_key = _legacy_text(claims.get("user_aut_key", access_key))
    code = ""
    if access_key != article_key and _is_code(access_key):
        code, access_key = access_key, article_key  # this package's shape
    exp, iat, jti = claims.get("exp"), claims.get("iat"), claims.get("jti")
    if exp is not None:
        if not is_int(exp) or exp - int(time.time()) > MAX_WRAPPING_LIFETIME + leeway:
            raise bad
        if iat is not None and (not is_int(iat) or not 0 < exp - iat <= MAX_WRAPPING_LIFETIME):
            raise bad
    if jti is not None and (not isinstance(jti, str) or not 8 <= len(jti) <= 128):
        raise bad
    assert isinstance(recipient, str) and isinstance(link_prefix, str)
    assert isinstance(link_token, str)
    return MailRequest(
        recipient=recipient,
        template=template,
        link_url=link_prefix + link_token,
        link_token=link_token,
        extra={"access_key": access_key} if access_key else {},
        # The original client sends no jti: the token itself is then the replay key.
        replay_key=jti or "legacy:" + hashlib.sha256(token.encode()).hexdigest(),
        expires_at=exp,
        code=code,
        locale=check_locale(claims.get("locale")),
    )


def _is_code(value: str) -> bool:
    try:
        return bool(check_code(value))
    except InvalidToken:
        return False


def _legacy_text(value: object) -> str:
    """An access key or code of a legacy payload, as text (the original sent numbers too).

    :raises InvalidToken: not short plain text.
    """
    if value is None:
        return ""
    if is_int(value):
        value = str(value)
    if not isinstance(value, str) or len(value) > MAX_EXTRA_VALUE_LENGTH:
        raise InvalidToken("The token's claims are not valid.", reason="bad_claims")
    if CONTROL_CHARACTERS.search(value):
        raise InvalidToken("The token's claims are not valid.", reason="bad_claims")
    return value


@dataclass(frozen=True)
class UnverifiedLink:
    """What a link token's payload says, read *without* checking its signature."""

    #: The address the link was made for (``email``, or the original apps' ``aut_email``).
    email: str | None
    #: ``exp - iat`` when the token has both, in seconds: how long the link works.
    lifetime: int | None


def peek_link_token(link_token: str) -> UnverifiedLink | None:
    """Read a link token's payload *without* verifying it, for the mailer's cross-checks.

    This package's link tokens (``typ`` ``cm-link+jwt``) must carry the link audience; the
    original apps' tokens carry ``aut_email``. ``None`` when it is not a readable JWT.
    """
    if len(link_token) > MAX_TOKEN_LENGTH:
        return None
    try:
        header = jwt.get_unverified_header(link_token)
        claims = jwt.decode(link_token, options={"verify_signature": False})
    except (jwt.PyJWTError, RecursionError):  # PyJWT < 2.14 lets RecursionError out
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


class RecipientRefused(AddressError):
    """:func:`check_recipient` refused the recipient; ``reason`` says which check failed.

    ``"invalid"``: the recipient is not one valid address; ``"unnamed"``: the link token
    names no address; ``"mismatch"``: the link was made for another address. The message
    is the mailer's answer text and never repeats an address.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def check_recipient(request: MailRequest) -> str:
    """The request's recipient, normalized, if it is the address its link was made for.

    The link token is read unverified (:func:`peek_link_token`); the addresses are
    compared in canonical form (:func:`~flask_confirm_mail.addresses.normalize_address`).

    :raises RecipientRefused: the recipient is not one valid address, the link token
        names none, or it names another one.
    """
    try:
        recipient = normalize_address(request.recipient)
    except AddressError:
        raise RecipientRefused("The recipient is not one valid address", reason="invalid") from None
    link = peek_link_token(request.link_token)
    if link is None or link.email is None:
        raise RecipientRefused("The link token does not name its recipient", reason="unnamed")
    try:
        link_email = normalize_address(link.email)
    except AddressError:
        link_email = ""
    if link_email != recipient:
        raise RecipientRefused(
            "The recipient is not the one the link was made for", reason="mismatch"
        )
    return recipient
